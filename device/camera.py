"""The camera: a small Protocol, the still a capture yields, and the one owner of the device.

Backends live in `leukoscope.cameras` (replay, opencv, picamera2); the config names one
and `open_backend()` builds it: a backend that cannot be imported is a start-up error,
never a quiet fall-back to another. `CameraOwner` is the only thing that touches the
backend: stills for captures, low-resolution preview frames for the status page (paused
while a still is taken), and reopening after the camera went away.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from leukoscope.config import CameraConfig
from leukoscope.errors import CameraError
from leukoscope.imageio import as_rgb8, load_image
from leukoscope.quality import measure

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Still:
    """One photo from the camera: decoded pixels, or the encoded file as the camera gave it.

    Replay stills carry the file's bytes (decoded later, at the scale the pipeline needs);
    live cameras carry RGB pixels (encoded to JPEG only for storage).
    """

    source: str
    rgb: np.ndarray | None = None
    data: bytes | None = None
    suffix: str = ".jpg"
    exposure_s: float = 0.0


@dataclass(frozen=True)
class PreviewFrame:
    """A low-resolution frame for the live view, with its focus score."""

    rgb: np.ndarray
    focus: float
    taken_at: float
    paused: bool = False


class Camera(Protocol):
    """What every camera backend provides. Methods raise CameraError when the camera fails."""

    name: str

    def open(self) -> None:
        """Find and claim the camera (raises CameraError if absent or busy)."""

    def check(self) -> None:
        """Cheap liveness check: raise CameraError if the camera has gone."""

    def capture_still(self, timeout_s: float) -> Still:
        """Take one full-resolution still within `timeout_s`."""

    def preview(self, size: tuple[int, int]) -> np.ndarray:
        """A low-resolution RGB frame no larger than `size` (width, height)."""

    def close(self) -> None:
        """Release the camera (idempotent)."""


def open_backend(cfg: CameraConfig) -> Camera:
    """Build the backend the config names (not yet opened).

    Raises:
        CameraError: the backend's library is not installed (never falls back to another).
    """
    if cfg.backend == "replay":
        from leukoscope.cameras.replay import ReplayCamera

        if cfg.replay.folder is None:  # parse_config requires it; keeps mypy honest
            raise CameraError("camera.replay.folder is not set")
        return ReplayCamera(cfg.replay.folder, exposure_s=cfg.replay.exposure_ms / 1000.0)
    if cfg.backend == "opencv":
        from leukoscope.cameras.opencv_uvc import OpenCVCamera

        return OpenCVCamera(cfg.opencv.device, cfg.opencv.width, cfg.opencv.height)
    if cfg.backend == "picamera2":
        from leukoscope.cameras.picamera import PiCamera

        return PiCamera(cfg.picamera2.camera_num, cfg.picamera2.still_size)
    raise CameraError(f"unknown camera backend {cfg.backend!r}")


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
            frame = PreviewFrame(rgb, measure(rgb).focus, time.time())
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


def decode_still(still: Still, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """The still's RGB pixels (decoding its file at reduced scale when allowed).

    Raises:
        ImageError: the camera delivered something that is not a usable image.
    """
    if still.rgb is not None:
        return _reduce(as_rgb8(still.rgb), min_size)
    if still.data is None:
        raise CameraError(f"{still.source}: the camera returned no image")
    return load_image(still.data, min_size=min_size)


def _reduce(rgb: np.ndarray, min_size: tuple[int, int] | None) -> np.ndarray:
    """Shrink live-camera pixels by 2, 4 or 8 while still at least `min_size`, as a JPEG
    still is decoded (draft mode), so both reach the gate and the model at the same scale."""
    if min_size is None:
        return rgb
    h, w = rgb.shape[:2]
    for k in (8, 4, 2):
        if w // k >= min_size[0] and h // k >= min_size[1]:
            return cv2.resize(rgb, (w // k, h // k), interpolation=cv2.INTER_AREA)
    return rgb
