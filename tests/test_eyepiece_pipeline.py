"""Photos through an eyepiece are analysed like dataset photos; a technician calibrates once."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from leukoscope.analysis.calibration import micrometer_scale, smear_scale
from leukoscope.analysis.cells import CellRetake
from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.detection import estimate_scale
from leukoscope.analysis.field_of_view import FieldOfView, prepare_field
from leukoscope.analysis.quality import RetakeReason, assess
from leukoscope.cli.calibrate import set_table_keys
from leukoscope.cli.main import main
from leukoscope.config import load_config
from leukoscope.core.errors import ImageError
from leukoscope.core.imageio import load_image
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import Bundle, load_bundle
from leukoscope.pipeline import Rig, analyse
from leukoscope_tools.data.eyepiece import Eyepiece, draw, simulate

PX_PER_UM = 3.0


@pytest.fixture(scope="module")
def smear() -> np.ndarray:
    return make_smear(1296, 972, seed=11, px_per_um=PX_PER_UM, n_wbc=8, n_blasts=4).image


@pytest.fixture(scope="module")
def bundle(session_cells_bundle: Path) -> Bundle:
    return load_bundle(session_cells_bundle)


def test_a_full_frame_smear_is_left_as_it_is(smear: np.ndarray) -> None:
    prepared = prepare_field(smear)
    assert not prepared.fov.stop and not prepared.corrected
    assert prepared.rgb is smear  # dataset photos are analysed exactly as before


@pytest.mark.parametrize(
    ("severity", "within"), [("mild", 0.05), ("realistic", 0.05), ("harsh", 0.1)]
)
def test_the_ruler_measures_eyepiece_photos_within_5_percent(
    smear: np.ndarray, severity: str, within: float
) -> None:
    # Harsh: red cells 15 px across under 1.8 px of blur and heavy JPEG, within 10%.
    rng = np.random.default_rng(5)
    for _ in range(3):
        sim = simulate(smear, draw(severity, rng), rng)
        prepared = prepare_field(sim.rgb)
        measured = estimate_scale(prepared.rgb).px_per_um
        assert measured == pytest.approx(PX_PER_UM * sim.scale, rel=within)


def test_an_eyepiece_photo_is_judged_and_its_rim_cells_are_not_classified(
    smear: np.ndarray, bundle: Bundle
) -> None:
    eye = Eyepiece(
        stop_radius=0.7, stop_dx=0.03, stop_dy=0.0, vignetting=0.75, cast=(1.15, 1.0, 0.85),
        gamma=1.1, scale=1.0, blur_px=0.2, noise=2.0, jpeg_quality=88,
    )  # fmt: skip
    rng = np.random.default_rng(2)
    sim = simulate(smear, eye, rng)
    result = analyse(sim.rgb, bundle, None)
    assert result.verdict is not Verdict.RETAKE, result.retake_reasons
    assert result.cells is not None and result.cells.n_found > 0
    fov = FieldOfView(smear.shape[1], smear.shape[0], sim.cx, sim.cy, sim.radius, True)
    half_crop = 24.0 * result.cells.px_per_um / 2
    for cell in result.cells.cells:  # every classified crop lies inside the stop
        assert fov.contains(cell.x, cell.y, margin=0.9 * half_crop)
    assert {"field", "scale", "quality"} <= set(result.timings_ms)


def test_dark_and_bright_fields_are_told_about_exposure_not_an_empty_field(
    smear: np.ndarray,
) -> None:
    dark = (smear.astype(np.float32) * 0.18).astype(np.uint8)
    bright = np.clip(smear.astype(np.float32) * 1.9, 0, 255).astype(np.uint8)
    assert assess(dark).reasons == (RetakeReason.TOO_DARK,)
    assert assess(bright).reasons == (RetakeReason.TOO_BRIGHT,)


def test_focus_is_judged_at_the_photos_own_scale(smear: np.ndarray) -> None:
    big = cv2.resize(smear, (2592, 1944), interpolation=cv2.INTER_CUBIC)  # 6 px/um
    soft = cv2.GaussianBlur(big, (0, 0), 4.0)
    assert assess(big, px_per_um=2 * PX_PER_UM).ok
    sharp = assess(big, px_per_um=2 * PX_PER_UM).metrics.sharpness
    blurred = assess(soft, px_per_um=2 * PX_PER_UM)
    assert blurred.reasons == (RetakeReason.OUT_OF_FOCUS,), (sharp, blurred.metrics)
    assert "sharpness" in blurred.metrics.to_json()
    assert "sharpness" not in assess(big).metrics.to_json()  # no scale, no sharpness


def test_a_scale_far_from_the_calibration_is_a_retake(smear: np.ndarray, bundle: Bundle) -> None:
    agrees = analyse(smear, bundle, None, rig=Rig(px_per_um=PX_PER_UM * 1.05))
    assert "scale-changed" not in agrees.retake_reasons
    assert agrees.cells is not None and agrees.cells.px_per_um == PX_PER_UM * 1.05
    zoomed = analyse(smear, bundle, None, rig=Rig(px_per_um=PX_PER_UM * 1.4))
    assert zoomed.verdict is Verdict.RETAKE
    assert zoomed.retake_reasons == ["scale-changed"]


def test_no_red_cells_and_no_calibration_is_a_scale_retake(bundle: Bundle) -> None:
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(215, 25, (480, 640, 3)), 0, 255).astype(np.uint8)
    glass[..., 1] = (glass[..., 1] * 0.8).astype(np.uint8)  # "stained" noise, no cells
    result = analyse(glass, bundle, None, gate=False)
    assert result.verdict is Verdict.RETAKE and result.cell_retake is CellRetake.NO_SCALE


def micrometer(w: int, h: int, px_per_um: float, angle_deg: float) -> np.ndarray:
    """A stage micrometer (lines every 10 um) seen through an eyepiece, turned by `angle_deg`."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.radians(angle_deg)
    u = (xx - w / 2) * np.cos(t) + (yy - h / 2) * np.sin(t)
    period = 10.0 * px_per_um
    dist = np.abs((u / period + 0.5) % 1.0 - 0.5) * period
    img = 225 - 150 * np.clip(1.5 - dist / (0.15 * px_per_um + 0.5), 0, 1)
    img = np.where(np.hypot(xx - w * 0.52, yy - h * 0.48) < 0.42 * w, img, 8)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.0)
    img = img + np.random.default_rng(0).normal(0, 2, img.shape)
    return np.clip(np.stack([img * 1.05, img, img * 0.9], -1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("scale", "angle"), [(2.3, 0), (5.9, -20), (4.1, 33), (5.9, 95)])
def test_a_stage_micrometer_gives_the_scale(scale: float, angle: float) -> None:
    cal = micrometer_scale(micrometer(1296, 972, scale, angle))
    assert cal.px_per_um == pytest.approx(scale, rel=0.005)
    assert cal.n >= 10 and cal.method == "micrometer"


def test_a_blank_photo_is_no_micrometer() -> None:
    with pytest.raises(ImageError):
        micrometer_scale(np.full((480, 640, 3), 220, np.uint8))


def test_smear_fields_give_the_median_scale_and_its_spread() -> None:
    fields = [make_smear(800, 600, seed=s, px_per_um=PX_PER_UM).image for s in range(4)]
    cal = smear_scale(fields)
    assert cal.px_per_um == pytest.approx(PX_PER_UM, rel=0.05)
    assert cal.n == 4 and 0 <= cal.spread < 0.05
    with pytest.raises(ImageError, match="need 3"):
        smear_scale(fields[:2])


def test_toml_keys_are_set_in_place_keeping_comments() -> None:
    text = '# rig 1\n[camera]\nbackend = "replay"  # the camera\npx_per_um = 2.0\n[gpio]\nx = 1\n'
    out = set_table_keys(text, "camera", {"px_per_um": 5.5, "blank_field": "/b.png"})
    assert out.startswith("# rig 1\n[camera]\n")
    assert 'blank_field = "/b.png"' in out and "px_per_um = 5.5\n" in out
    assert out.count("px_per_um") == 1 and "# the camera" in out
    assert out.index("blank_field") < out.index("[gpio]")


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "rig.toml"
    cfg.write_text(
        f'# my rig\n[paths]\nstate_dir = "{tmp_path / "state"}"\nbundle = "{tmp_path}"\n'
        '[camera]\nbackend = "replay"\n[camera.replay]\nfolder = "/nowhere"\n'
        '[gpio]\npin_factory = "mock"\n'
    )
    return cfg


def test_calibrate_writes_the_config_a_technician_can_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)
    photo = tmp_path / "micrometer.png"
    cv2.imwrite(str(photo), micrometer(1296, 972, 4.4, 12)[..., ::-1])
    code = main(["calibrate", "micrometer", str(photo), "--config", str(cfg)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("4.4") or out.startswith("4.3"), out
    camera = load_config(cfg).camera
    assert camera.px_per_um == pytest.approx(4.4, rel=0.005)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 230, np.uint8))
    assert main(["calibrate", "blank", str(blank), "--config", str(cfg)]) == 0
    camera = load_config(cfg).camera
    assert camera.blank_field is not None and load_image(camera.blank_field).shape == (240, 320, 3)
    assert cfg.read_text().startswith("# my rig\n")


def test_a_config_that_would_not_load_is_not_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)
    before = cfg.read_text()
    cfg.write_text(before + "[bogus]\n")
    photo = tmp_path / "micrometer.png"
    cv2.imwrite(str(photo), micrometer(640, 480, 3.0, 0)[..., ::-1])
    assert main(["calibrate", "micrometer", str(photo), "--config", str(cfg)]) == 1
    assert "bogus" in capsys.readouterr().err
    assert cfg.read_text() == before + "[bogus]\n"


@pytest.mark.realdata
def test_a_real_field_blurred_3_px_is_a_focus_retake(shared_data: Path) -> None:
    # Im104_0 is a held-out (test) 5 MP ALL-IDB1 field, not one the limit was chosen on.
    rgb = load_image(shared_data / "all-idb1" / "normal" / "Im104_0.jpg")
    scale = estimate_scale(rgb).px_per_um
    assert assess(rgb, px_per_um=scale).ok
    for sigma in (3.0, 5.0):
        blurred = cv2.GaussianBlur(rgb, (0, 0), sigma)
        scale_b = estimate_scale(blurred).px_per_um
        assert assess(blurred, px_per_um=scale_b).reasons == (RetakeReason.OUT_OF_FOCUS,)
