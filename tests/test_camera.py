"""Camera backends and their owner: the replay camera behaves like hardware; no silent fall-back."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from leukoscope.capture.backends import open_backend
from leukoscope.capture.base import Still, decode_still
from leukoscope.capture.owner import CameraOwner
from leukoscope.config import CameraConfig, OpenCVConfig, ReplayConfig
from leukoscope.core.errors import CameraError
from tests.daemon_helpers import good_field, write_rgb


@pytest.fixture
def replay_dir(tmp_path: Path) -> Path:
    for i in range(3):
        write_rgb(tmp_path / "replay" / f"{i:02d}.png", good_field(i, (320, 240)))
    return tmp_path / "replay"


def owner(folder: Path, **kw) -> CameraOwner:
    cfg = CameraConfig(backend="replay", replay=ReplayConfig(folder=folder, **kw))
    return CameraOwner(open_backend(cfg), cfg)


def test_replay_cycles_through_the_folder_in_name_order(replay_dir: Path) -> None:
    cam = owner(replay_dir)
    cam.open()
    names = [cam.capture().source for _ in range(4)]
    assert names == ["00.png", "01.png", "02.png", "00.png"]
    cam.close()
    cam.close()


def test_replay_folder_gone_is_a_camera_fault_then_it_returns(replay_dir: Path) -> None:
    cam = owner(replay_dir)
    cam.open()
    replay_dir.rename(replay_dir.with_name("away"))
    with pytest.raises(CameraError, match="is gone"):
        cam.check()
    assert not cam.is_open and "is gone" in (cam.last_error or "")
    with pytest.raises(CameraError):
        cam.capture()
    replay_dir.with_name("away").rename(replay_dir)
    cam.open()
    assert cam.capture().data


def test_exposure_longer_than_the_timeout_is_a_timeout(replay_dir: Path) -> None:
    cfg = CameraConfig(
        backend="replay",
        capture_timeout_s=0.2,
        replay=ReplayConfig(folder=replay_dir, exposure_ms=5000),
    )
    cam = CameraOwner(open_backend(cfg), cfg)
    cam.open()
    with pytest.raises(CameraError, match="no frame within 0.2 s"):
        cam.capture()


def test_preview_is_small_scored_and_paused_during_a_still(replay_dir: Path) -> None:
    cam = owner(replay_dir, exposure_ms=2000)
    cam.open()
    frame = cam.preview_frame()
    assert max(frame.rgb.shape[:2]) <= 320 and frame.focus > 7.5 and not frame.paused
    worker = threading.Thread(target=cam.capture)
    worker.start()
    try:
        # While the still is exposing, the preview gives the last frame, marked paused.
        for _ in range(200):
            paused = cam.preview_frame()
            if paused.paused:
                break
            threading.Event().wait(0.01)
        assert paused.paused and paused.taken_at == frame.taken_at
    finally:
        worker.join(10)


def test_live_camera_pixels_are_reduced_like_a_jpeg_draft() -> None:
    rgb = np.zeros((1944, 2592, 3), np.uint8)
    assert decode_still(Still("cam", rgb=rgb), (256, 256)).shape == (486, 648, 3)
    assert decode_still(Still("cam", rgb=rgb), None).shape == rgb.shape


def test_picamera2_missing_is_a_camera_error_not_a_fallback() -> None:
    cam = open_backend(CameraConfig(backend="picamera2"))
    assert cam.name == "picamera2"
    with pytest.raises(CameraError, match="picamera2|no camera detected"):
        cam.open()


def test_opencv_without_a_device_is_a_camera_error() -> None:
    cam = open_backend(
        CameraConfig(backend="opencv", opencv=OpenCVConfig(device="/dev/nonexistent"))
    )
    with pytest.raises(CameraError, match="not found or busy"):
        cam.open()
    cam.close()
