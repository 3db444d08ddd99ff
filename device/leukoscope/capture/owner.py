"""The one owner of the camera: stills for captures, preview frames for the page, reopening.

Captures and previews take the same lock; a preview asked for during a still gets the last
frame, marked paused. Nothing else (not the web app) ever opens the camera.
"""

from __future__ import annotations

import logging
import threading
import time

from leukoscope.analysis.quality import preview_focus
from leukoscope.capture.base import Camera, PreviewFrame, Still
from leukoscope.config import CameraConfig
from leukoscope.core.errors import CameraError
from leukoscope.core.imageio import as_rgb8

logger = logging.getLogger(__name__)


class CameraOwner:
    """The single owner of a camera backend; thread-safe.

    Captures and previews take the same lock, so a preview never interleaves with a
    still; a preview asked for during a still gets the last frame, marked paused.
    """

    def __init__(self, backend: Camera, cfg: CameraConfig) -> None:
        self.backend = backend
        self.cfg = cfg
        self._lock = threading.Lock()
        self._open = False
        self._last_error: str | None = None
        self._last_preview: PreviewFrame | None = None

    @property
    def name(self) -> str:
        """The backend's name."""
        return self.backend.name

    @property
    def is_open(self) -> bool:
        """True while the camera is claimed and was last seen working."""
        return self._open

    @property
    def last_error(self) -> str | None:
        """Why the camera is not working, or None."""
        return self._last_error

    def _failed(self, exc: CameraError) -> CameraError:
        self._open = False
        self._last_error = str(exc)
        try:
            self.backend.close()
        except Exception:  # closing a broken camera may fail; it is already lost
            logger.debug("closing the failed camera raised", exc_info=True)
        return exc

    def open(self) -> None:
        """Claim the camera; raises CameraError (and remembers why)."""
        with self._lock:
            if self._open:
                return
            try:
                self.backend.open()
            except CameraError as exc:
                raise self._failed(exc) from None
            self._open = True
            self._last_error = None

    def check(self) -> None:
        """Raise CameraError if the camera has gone (closing it so it can be reopened)."""
        with self._lock:
            if not self._open:
                raise CameraError(self._last_error or "camera is not open")
            try:
                self.backend.check()
            except CameraError as exc:
                raise self._failed(exc) from None

    def capture(self) -> Still:
        """Take one still with the configured timeout."""
        with self._lock:
            if not self._open:
                raise CameraError(self._last_error or "camera is not open")
            try:
                return self.backend.capture_still(self.cfg.capture_timeout_s)
            except CameraError as exc:
                raise self._failed(exc) from None

    def preview_frame(self) -> PreviewFrame:
        """A low-resolution frame with its focus score (the last one while a still runs)."""
        if not self._lock.acquire(blocking=False):
            last = self._last_preview
            if last is None:
                raise CameraError("camera busy taking a still; no preview yet")
            return PreviewFrame(last.rgb, last.focus, last.taken_at, paused=True)
        try:
            if not self._open:
                raise CameraError(self._last_error or "camera is not open")
            try:
                rgb = as_rgb8(self.backend.preview(self.cfg.preview_size))
            except CameraError as exc:
                raise self._failed(exc) from None
            # The noise-corrected score: a noisy frame's grain is not focus.
            frame = PreviewFrame(rgb, preview_focus(rgb), time.time())
            self._last_preview = frame
            return frame
        finally:
            self._lock.release()

    def close(self) -> None:
        """Release the camera (idempotent)."""
        with self._lock:
            if self._open:
                self._open = False
                self.backend.close()
