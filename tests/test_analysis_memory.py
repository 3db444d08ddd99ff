"""Decode and quality gate of large stills: the same numbers as before, in less memory.

Issue 17: a 12 MP still (4056x3040, the HQ camera) must fit the daemon in 250 MB. The
gate's working copy used to convert the whole photo to float32 first (150 MB); the
decode went through Pillow's own copies of the pixels. Both now give the same pixels and
metrics (the working copy: the same area average, halved first) without those copies.
"""

from __future__ import annotations

import io
import tracemalloc

import cv2
import numpy as np
import pytest
from PIL import Image

from leukoscope.analysis.quality import measure, working_copy
from leukoscope.core.imageio import load_image
from leukoscope.core.synthetic import make_smear


def _jpeg(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def smear() -> np.ndarray:
    return make_smear(640, 480, n_wbc=4, n_blasts=2, px_per_um=6.0, seed=11).image


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("subsampling", [0, 2])
def test_jpeg_decodes_to_the_same_pixels_as_pillow(
    smear: np.ndarray, mode: str, subsampling: int
) -> None:
    img = Image.fromarray(smear).convert(mode)
    data = _jpeg(img, quality=90, subsampling=subsampling)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    got = load_image(data)
    assert got.dtype == np.uint8 and got.flags.writeable and got.flags.c_contiguous
    assert np.array_equal(got, expected)


def test_a_rotated_jpeg_is_still_turned_upright(smear: np.ndarray) -> None:
    img = Image.fromarray(smear)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    got = load_image(_jpeg(img, quality=95, exif=exif))
    assert got.shape == (smear.shape[1], smear.shape[0], 3)


@pytest.mark.parametrize("shape", [(1944, 2592), (1368, 1712), (652, 1226), (480, 640)])
def test_the_float_working_copy_is_the_area_average_not_requantised(
    shape: tuple[int, int],
) -> None:
    """Halved first (fast), it matches the one-step float32 area average of a smear to a
    fraction of a level, and keeps the fractions a uint8 copy would round away."""
    rgb = make_smear(shape[1], shape[0], n_wbc=4, n_blasts=2, px_per_um=6.0, seed=3).image
    got = working_copy(rgb, float32=True)
    size = (got.shape[1], got.shape[0])
    expected = cv2.resize(rgb.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    assert got.dtype == np.float32 and max(size) == 256
    diff = np.abs(got - expected)
    assert float(diff.mean()) < 1.0 and float(np.percentile(diff, 99)) < 4.0
    assert np.count_nonzero(got != np.round(got)) > 0.5 * got.size


def test_the_gate_measures_a_12_megapixel_still_without_a_float_copy() -> None:
    """Peak memory the gate's numpy arrays take for a 4056x3040 still: far below one
    float32 copy of it (148 MB)."""
    rgb = np.full((3040, 4056, 3), 225, np.uint8)
    rgb[(np.arange(3040) // 60) % 2 == 1, :, 1] = 90  # stained bands: something to measure
    tracemalloc.start()
    try:
        metrics = measure(rgb, px_per_um=10.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert metrics.sharpness is not None and metrics.content > 0
    assert peak < 60e6, f"the gate took {peak / 1e6:.0f} MB"
