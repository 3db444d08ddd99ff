"""The replay camera: cycles through a folder of image files, for the demo and tests.

It behaves like hardware where it matters: the folder vanishing is the camera
disconnecting (and coming back is it returning), a file that is not a valid image is a
corrupt frame, and `exposure_s` simulates the sensor's exposure time (bounded by the
capture timeout, so a long exposure is a capture that hangs and times out).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from leukoscope.analysis.quality import working_copy
from leukoscope.capture.base import Still
from leukoscope.core.errors import CameraError, ImageError
from leukoscope.core.imageio import IMAGE_SUFFIXES, load_image

logger = logging.getLogger(__name__)


class ReplayCamera:
    """Serves the files of a folder in name order, round and round."""

    name = "replay"

    def __init__(self, folder: Path, *, exposure_s: float = 0.0) -> None:
        self.folder = Path(folder)
        self.exposure_s = exposure_s
        self._index = 0
        self._opened = False
        self._preview_cache: tuple[Path, np.ndarray] | None = None
        # Set by close(): a simulated exposure in progress ends at once.
        self._closing = threading.Event()

    def _files(self) -> list[Path]:
        try:
            files = sorted(
                p
                for p in self.folder.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        except OSError as exc:
            raise CameraError(
                f"replay camera: folder {self.folder} is gone ({exc.strerror})"
            ) from None
        if not files:
            raise CameraError(f"replay camera: no image files in {self.folder}")
        return files

    def _current(self) -> Path:
        files = self._files()
        return files[self._index % len(files)]

    def open(self) -> None:
        """Check the folder has images."""
        n = len(self._files())
        self._closing.clear()
        self._opened = True
        logger.info("replay camera on %s (%d images)", self.folder, n)

    def check(self) -> None:
        """The folder must still be there with images in it."""
        self._files()

    def capture_still(self, timeout_s: float) -> Still:
        """The current file's bytes; the next capture gets the next file."""
        if not self._opened:
            raise CameraError("replay camera is not open")
        path = self._current()
        if self.exposure_s > 0:
            if self._closing.wait(min(self.exposure_s, timeout_s)):
                raise CameraError("replay camera closed during exposure")
            if self.exposure_s > timeout_s:
                raise CameraError(f"replay camera: no frame within {timeout_s:.1f} s")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CameraError(f"replay camera: cannot read {path.name} ({exc.strerror})") from None
        self._index += 1
        return Still(
            source=path.name, data=data, suffix=path.suffix.lower(), exposure_s=self.exposure_s
        )

    def preview(self, size: tuple[int, int]) -> np.ndarray:
        """The image the next capture will take, shrunk to fit `size`."""
        path = self._current()
        if self._preview_cache is not None and self._preview_cache[0] == path:
            return self._preview_cache[1]
        try:
            rgb = load_image(path, min_size=size)
        except ImageError as exc:
            raise CameraError(f"replay camera: preview of {path.name}: {exc}") from None
        small = working_copy(rgb, max(size))
        self._preview_cache = (path, small)
        return small

    def close(self) -> None:
        """Forget the position's claim (the folder is left alone)."""
        self._closing.set()
        self._opened = False
