"""Sensor noise is not focus: the live view does not call a noisy frame's grain "in focus".

Noise adds fine-scale energy, so a defocused frame from a camera at high gain looked
sharp (models/reports/focus-noise.md). The live view takes the frame's own noise off its
score; the stills' `sharpness` does not yet, and the two tests marked xfail say so.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from leukoscope.analysis.detection import estimate_scale
from leukoscope.analysis.quality import QualityThresholds, RetakeReason, assess
from leukoscope.capture.backends import open_backend
from leukoscope.capture.owner import CameraOwner
from leukoscope.config import CameraConfig, ReplayConfig
from leukoscope.core.imageio import load_image
from leukoscope.core.synthetic import make_smear
from tests.daemon_helpers import write_rgb

#: A 5 MP ALL-IDB1 still's scale; 3 px of blur there is 0.25 um.
PX_PER_UM = 12.0


def noisy(rgb: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    """`rgb` with Gaussian sensor noise of `level` 8-bit levels in every channel."""
    if level == 0:
        return rgb
    rng = np.random.default_rng(seed)
    out = rgb + rng.normal(0.0, level, rgb.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def field() -> np.ndarray:
    return make_smear(1296, 972, seed=11, px_per_um=PX_PER_UM, n_wbc=8, n_blasts=4).image


@pytest.mark.parametrize("level", [0, 4, 7])
def test_a_sharp_still_passes_with_sensor_noise(field: np.ndarray, level: float) -> None:
    result = assess(noisy(field, level), px_per_um=PX_PER_UM)
    assert result.ok, result.metrics


_NOISE_PASSES = "sharpness counts noise as detail (issue 14, models/reports/focus-noise.md)"


@pytest.mark.parametrize(
    "level", [0, 4, pytest.param(7, marks=pytest.mark.xfail(strict=True, reason=_NOISE_PASSES))]
)
def test_a_defocused_still_is_refused_whatever_its_noise(field: np.ndarray, level: float) -> None:
    # Fine-scale energy over coarse, noise and all, scores this field with noise 7 at
    # 0.23 and passes it (limit 0.2); the noise-robust version tried scored it 0.13.
    blurred = noisy(cv2.GaussianBlur(field, (0, 0), 0.25 * PX_PER_UM), level)
    result = assess(blurred, px_per_um=PX_PER_UM)
    assert result.reasons == (RetakeReason.OUT_OF_FOCUS,), result.metrics


def _live_view(tmp_path: Path, name: str, frame: np.ndarray) -> tuple[float, bool]:
    """The live view's focus score for `frame`, and whether its focus passes the gate."""
    folder = tmp_path / name
    write_rgb(folder / "00.png", frame)
    cfg = CameraConfig(backend="replay", replay=ReplayConfig(folder=folder))
    cam = CameraOwner(open_backend(cfg), cfg)
    cam.open()
    try:
        focus = cam.preview_frame().focus
    finally:
        cam.close()
    return focus, focus >= QualityThresholds().min_focus


def test_the_live_view_does_not_call_grain_focus(tmp_path: Path) -> None:
    # 320x240 frames, as the live view shows them, with noise of 7 levels (a Pi camera
    # at high gain): the old score was 290-610 for all three.
    view = make_smear(320, 240, seed=5, px_per_um=1.5, n_wbc=2, n_blasts=1).image
    sharp = _live_view(tmp_path, "sharp", noisy(view, 7, seed=1))
    defocused = _live_view(tmp_path, "defocused", noisy(cv2.GaussianBlur(view, (0, 0), 3.2), 7))
    dim_glass = _live_view(tmp_path, "glass", noisy(np.full((240, 320, 3), 75, np.uint8), 7))
    assert sharp[1], sharp
    assert not defocused[1], defocused
    assert not dim_glass[1], dim_glass


@pytest.mark.realdata
@pytest.mark.xfail(strict=True, reason=_NOISE_PASSES)
def test_a_real_field_blurred_3_px_with_noise_is_a_focus_retake(shared_data: Path) -> None:
    # Im104_0, a 5 MP ALL-IDB1 field: sharp it scores 0.35, blurred by 3 px 0.14 (a
    # retake), blurred with noise of 4 levels added 0.34 (passed).
    rgb = load_image(shared_data / "all-idb1" / "normal" / "Im104_0.jpg")
    scale = estimate_scale(rgb).px_per_um
    assert assess(noisy(rgb, 4), px_per_um=scale).ok
    soft = assess(noisy(cv2.GaussianBlur(rgb, (0, 0), 3.0), 4), px_per_um=scale)
    assert soft.reasons == (RetakeReason.OUT_OF_FOCUS,), soft.metrics
