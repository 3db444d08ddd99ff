"""A USB/UVC microscope camera through OpenCV, by index or device path."""

from __future__ import annotations

import concurrent.futures
import logging

import cv2
import numpy as np

from leukoscope.analysis.quality import working_copy
from leukoscope.capture.base import Still
from leukoscope.core.errors import CameraError

logger = logging.getLogger(__name__)


class OpenCVCamera:
    """One V4L2 capture device. Reads run in a worker thread so every one has a timeout."""

    name = "opencv"

    def __init__(self, device: int | str, width: int | None, height: int | None) -> None:
        self.device = device
        self.width = width
        self.height = height
        self._cap: cv2.VideoCapture | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def open(self) -> None:
        """Open the device and apply the configured resolution."""
        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"opencv camera {self.device!r}: not found or busy")
        if self.width and self.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._cap = cap
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="opencv-cam")
        logger.info(
            "opencv camera %r at %dx%d",
            self.device,
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )

    def check(self) -> None:
        """The device must still be open."""
        if self._cap is None or not self._cap.isOpened():
            raise CameraError(f"opencv camera {self.device!r}: disconnected")

    def _read(self, timeout_s: float) -> np.ndarray:
        if self._cap is None or self._pool is None:
            raise CameraError("opencv camera is not open")
        cap = self._cap

        def grab() -> tuple[bool, np.ndarray | None]:
            cap.grab()  # drop the frame the driver buffered before the trigger
            return cap.read()

        try:
            ok, frame = self._pool.submit(grab).result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise CameraError(f"opencv camera: no frame within {timeout_s:.1f} s") from None
        if not ok or frame is None:
            raise CameraError(f"opencv camera {self.device!r}: read failed (unplugged?)")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def capture_still(self, timeout_s: float) -> Still:
        """One frame at the configured resolution."""
        return Still(source=f"opencv:{self.device}", rgb=self._read(timeout_s))

    def preview(self, size: tuple[int, int]) -> np.ndarray:
        """One frame, shrunk."""
        return working_copy(self._read(5.0), max(size))

    def close(self) -> None:
        """Release the device (idempotent)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
