"""A calibrated rig's stills decoded at half size (issue 14's speed): when, and that the
answers stay those of the full-size decode."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukoscope.analysis.analysers import CellAnalyser
from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.quality import sharpness
from leukoscope.core.imageio import load_image
from leukoscope.core.synthetic import make_smear
from leukoscope.pipeline import Rig, analyse, decode_reduction
from tests.test_cell_analysis import SETTINGS, fake_bundle
from tests.test_daemon_cells import capture, cells_daemon


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=92)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("px_per_um", "reduction"),
    [
        (None, 1),  # uncalibrated: the scale is only known after decoding
        (9.268, 1),  # too coarse: half of it would upsample the 128 px crops of 24 um
        (11.0, 1),  # 5.5 px/um at half: within the 5% margin of 128/24 = 5.33
        (11.794, 1),  # the gate's sharpness would bin by 3 at full size, 1 at half
        (12.0, 2),
        (14.9, 2),
        (16.0, 1),  # bins of 5 and 2: the focus measure's scale would move
        (18.0, 2),
    ],
)
def test_the_decode_size_follows_the_calibration(px_per_um: float | None, reduction: int) -> None:
    # crops of 12 um onto the stand-in's 64 px: 5.33 px/um, as the shipped 24 um onto 128
    bundle, _ = fake_bundle(dataclasses.replace(SETTINGS, crop_um=12.0))
    assert isinstance(bundle.analyser, CellAnalyser)
    assert bundle.analyser.min_px_per_um == pytest.approx(128 / 24)
    assert decode_reduction(bundle, Rig(px_per_um)) == reduction
    assert decode_reduction(bundle, None) == 1


def test_the_reduced_rig_halves_its_scale_and_its_reference() -> None:
    ref = np.full((1944, 2592, 3), 200, np.uint8)
    rig = Rig(12.0, 0.1, ref)
    half = rig.reduced(2)
    assert half.px_per_um == 6.0 and half.tolerance == 0.1
    assert half.reference is not None and half.reference.shape == (972, 1296, 3)
    assert rig.reduced(2) is half and rig.reduced(1) is rig


def test_a_half_size_decode_is_a_jpegs_own_reduced_decode_and_any_image_the_same_size() -> None:
    rgb = make_smear(1000, 750, n_wbc=3, px_per_um=12.0, seed=1).image
    jpeg = _jpeg(rgb)
    half = load_image(jpeg, reduce=2)
    pil = Image.open(io.BytesIO(jpeg))
    pil.draft("RGB", (500, 375))  # Pillow's own reduced decode (libjpeg's scaling)
    assert np.array_equal(half, np.asarray(pil.convert("RGB")))
    assert load_image(_jpeg(rgb[: 751 - 1, : 1001 - 2]), reduce=2).shape == (375, 500, 3)
    assert load_image(_jpeg(make_smear(1001, 751).image), reduce=2).shape == (376, 501, 3)
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, "PNG")
    from_png = load_image(png.getvalue(), reduce=2)
    assert from_png.shape == half.shape
    assert np.abs(from_png.astype(int) - half).mean() < 2.0
    with pytest.raises(ValueError):
        load_image(jpeg, reduce=3)


@pytest.mark.slow
def test_a_calibrated_5mp_still_gets_the_same_answer_from_half_the_pixels() -> None:
    smear = make_smear(2592, 1944, n_wbc=8, n_blasts=4, px_per_um=12.0, seed=7)
    jpeg = _jpeg(smear.image)
    bundle, _ = fake_bundle()
    rig = Rig(12.0)
    k = decode_reduction(bundle, rig)
    assert k == 2
    full_rgb, half_rgb = load_image(jpeg), load_image(jpeg, reduce=k)
    assert half_rgb.shape == (972, 1296, 3)
    full = analyse(full_rgb, bundle, None, rig=rig)
    half = analyse(half_rgb, bundle, None, rig=rig.reduced(k))
    assert full.verdict is not Verdict.RETAKE and half.verdict is full.verdict
    assert full.cells is not None and half.cells is not None
    assert half.cells.px_per_um == 6.0 and half.cells.image_size == (1296, 972)
    assert half.cells.n_classified == full.cells.n_classified >= 8
    assert half.p_leukemia == pytest.approx(full.p_leukemia, abs=0.05)
    # the same cells, where the full decode found them (in its pixels)
    at_full = sorted((round(c.x * 2 / 20), round(c.y * 2 / 20)) for c in half.cells.cells)
    assert at_full == sorted((round(c.x / 20), round(c.y / 20)) for c in full.cells.cells)
    # The gate's focus measure sees the same binned pixels: a field blurred by 3 px is
    # still out of focus at half size, and a sharp one still sharp.
    assert full.quality is not None and half.quality is not None
    assert half.quality.metrics.sharpness == pytest.approx(full.quality.metrics.sharpness, abs=0.01)
    assert sharpness(half_rgb, 6.0) == pytest.approx(sharpness(full_rgb, 12.0), abs=0.01)


@pytest.mark.slow
def test_the_daemon_decodes_a_calibrated_rigs_stills_at_half_size(tmp_path: Path) -> None:
    with cells_daemon(tmp_path, px_per_um=12.0) as daemon:
        judged = capture(daemon)
    cells = judged["cells"]
    assert cells["image_size"] == [200, 150] and cells["px_per_um"] == 6.0
    assert cells["scale_source"] == "given"
