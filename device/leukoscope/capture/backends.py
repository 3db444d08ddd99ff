"""Build the camera backend the config names: a missing library is a start-up error.

Never a quiet fall-back to another backend (a fake that looks healthy hides a broken rig).
picamera2 itself is imported only when a `PiCamera` opens, so every backend imports here.
"""

from __future__ import annotations

from leukoscope.capture.base import Camera
from leukoscope.capture.opencv_uvc import OpenCVCamera
from leukoscope.capture.picamera import PiCamera
from leukoscope.capture.replay import ReplayCamera
from leukoscope.config import CameraConfig
from leukoscope.core.errors import CameraError


def open_backend(cfg: CameraConfig) -> Camera:
    """Build the backend the config names (not yet opened).

    Raises:
        CameraError: the backend's library is not installed (never falls back to another).
    """
    if cfg.backend == "replay":
        if cfg.replay.folder is None:  # parse_config requires it; keeps mypy honest
            raise CameraError("camera.replay.folder is not set")
        return ReplayCamera(cfg.replay.folder, exposure_s=cfg.replay.exposure_ms / 1000.0)
    if cfg.backend == "opencv":
        return OpenCVCamera(cfg.opencv.device, cfg.opencv.width, cfg.opencv.height)
    if cfg.backend == "picamera2":
        return PiCamera(cfg.picamera2.camera_num, cfg.picamera2.still_size)
    raise CameraError(f"unknown camera backend {cfg.backend!r}")
