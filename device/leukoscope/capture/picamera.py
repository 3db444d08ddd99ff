"""A Raspberry Pi camera through picamera2 (imported here only, lazily, on the Pi)."""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from leukoscope.analysis.quality import working_copy
from leukoscope.capture.base import Still
from leukoscope.core.errors import CameraError

logger = logging.getLogger(__name__)


class PiCamera:
    """One libcamera camera in still configuration; every capture waits with a timeout."""

    name = "picamera2"

    def __init__(self, camera_num: int, still_size: tuple[int, int] | None) -> None:
        self.camera_num = camera_num
        self.still_size = still_size
        self._cam: Any = None

    def open(self) -> None:
        """Find the camera, claim it and start it in still mode."""
        try:
            # Hardware backend: picamera2 comes only from Raspberry Pi OS's apt.
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError(
                f"camera backend picamera2 is not installed ({exc}); on the Pi install "
                "python3-picamera2 and use a venv with --system-site-packages"
            ) from None
        info = Picamera2.global_camera_info()
        if len(info) <= self.camera_num:
            raise CameraError(
                f"no camera detected (libcamera sees {len(info)}; wanted number {self.camera_num})"
            )
        try:
            cam = Picamera2(self.camera_num)
        except Exception as exc:  # libcamera reports "busy" as RuntimeError or OSError
            raise CameraError(f"camera {self.camera_num} busy or failed to open ({exc})") from None
        try:
            size = self.still_size or tuple(cam.sensor_resolution)
            cfg = cam.create_still_configuration(
                main={"size": size, "format": "RGB888"}, buffer_count=2
            )
            cam.configure(cfg)
            cam.start()
        except Exception as exc:  # libcamera raises plain RuntimeError/OSError
            cam.close()
            raise CameraError(f"camera {self.camera_num} failed to start ({exc})") from None
        self._cam = cam
        logger.info("picamera2 camera %d (%s) at %s", self.camera_num, info[self.camera_num], size)

    def check(self) -> None:
        """The camera must still be listed by libcamera."""
        # Hardware backend: open() has already imported it, so this is a lookup.
        from picamera2 import Picamera2

        if self._cam is None or len(Picamera2.global_camera_info()) <= self.camera_num:
            raise CameraError("camera disconnected")

    def _array(self, timeout_s: float) -> np.ndarray:
        if self._cam is None:
            raise CameraError("camera is not open")
        try:
            # With a signal function the capture returns its Job at once; waiting on the
            # Job with a timeout is what keeps a stuck camera from hanging the work loop.
            job = self._cam.capture_array("main", signal_function=lambda _job: None)
            arr = job.get_result(timeout=timeout_s)
        except TimeoutError:
            raise CameraError(f"camera: no frame within {timeout_s:.1f} s") from None
        except Exception as exc:
            raise CameraError(f"camera capture failed ({exc})") from None
        # picamera2's "RGB888" is B, G, R in memory.
        return cv2.cvtColor(np.asarray(arr)[:, :, :3], cv2.COLOR_BGR2RGB)

    def capture_still(self, timeout_s: float) -> Still:
        """One full-resolution frame."""
        return Still(source=f"picamera2:{self.camera_num}", rgb=self._array(timeout_s))

    def preview(self, size: tuple[int, int]) -> np.ndarray:
        """One frame, shrunk (the still stream is reused: one configuration, one owner)."""
        return working_copy(self._array(5.0), max(size))

    def close(self) -> None:
        """Stop and release the camera (idempotent)."""
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.stop()
            finally:
                cam.close()
