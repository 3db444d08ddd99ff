"""preprocess(): the paper's steps, checked against output computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from leukoscope.analysis.preprocess import PreprocessParams, preprocess, preprocess_uint8
from leukoscope.core.synthetic import make_smear

TINY = PreprocessParams(resize=(4, 4), median_ksize=3, input_size=(2, 2))


def _tiny_image() -> np.ndarray:
    channel = np.array(
        [
            [10, 10, 10, 10],
            [10, 10, 10, 10],
            [10, 10, 90, 90],
            [10, 10, 90, 90],
        ],
        np.uint8,
    )
    return np.repeat(channel[:, :, None], 3, axis=2)


def test_preprocess_matches_hand_computed_output() -> None:
    # Median 3x3 (edges replicated) keeps only the corner of the bright block:
    #   10 10 10 10 / 10 10 10 10 / 10 10 10 90 / 10 10 90 90
    # Sharpen [0 -1 0; -1 5 -1; 0 -1 0] (edges replicated, saturated to 0..255):
    #   10 10 10 10 / 10 10 10 0 / 10 10 0 250 / 10 0 250 90
    # Area resize to 2x2 averages 2x2 blocks, rounding half up: 10, 7.5->8, 7.5->8, 147.5->148.
    out = preprocess_uint8(_tiny_image(), TINY)
    expected = np.array([[10, 8], [8, 148]], np.uint8)
    for c in range(3):
        assert out[:, :, c].tolist() == expected.tolist()
    x = preprocess(_tiny_image(), TINY)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[:, :, 0], expected / 255.0, rtol=1e-6)


def test_normalisation_comes_from_params() -> None:
    params = PreprocessParams(
        resize=(4, 4),
        median_ksize=0,
        sharpen_kernel=None,
        input_size=(4, 4),
        scale=2.0 / 255.0,
        offset=-1.0,
    )
    x = preprocess(_tiny_image(), params)
    assert x[0, 0, 0] == pytest.approx(10 * 2 / 255 - 1)
    assert x[3, 3, 0] == pytest.approx(90 * 2 / 255 - 1)


def test_filters_can_be_switched_off() -> None:
    params = PreprocessParams(resize=(4, 4), median_ksize=0, sharpen_kernel=None, input_size=(4, 4))
    assert np.array_equal(preprocess_uint8(_tiny_image(), params), _tiny_image())


def test_output_has_the_models_input_size_whatever_the_photo() -> None:
    params = PreprocessParams(input_size=(128, 96))
    for w, h in [(2592, 1944), (224, 224), (100, 60)]:
        img = make_smear(w, h, seed=w).image
        assert preprocess(img, params).shape == (96, 128, 3)


def test_median_removes_salt_noise_before_sharpening() -> None:
    img = np.full((256, 256, 3), 120, np.uint8)
    img[::17, ::13] = 255  # isolated hot pixels
    out = preprocess_uint8(img, PreprocessParams(input_size=(256, 256)))
    assert int(out.max()) == 120 and int(out.min()) == 120


def test_wrong_input_is_refused() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        preprocess(np.zeros((8, 8), np.uint8), TINY)


def test_shrink_area_halves_first_and_stays_the_area_average() -> None:
    """A 5 MP smear shrunk to 320 px: two exact halvings, then one area step; within a
    level or two of the one-step area average, and 2x2 means exactly where it halves."""
    import cv2

    from leukoscope.analysis.preprocess import halve, halvings, shrink_area

    rgb = make_smear(2592, 1944, n_wbc=6, n_blasts=3, px_per_um=12.0, seed=2).image
    assert halvings(2592, 1944, (320, 240)) == 2  # 648 px: the last step is 2.025x
    assert halvings(640, 480, (320, 240)) == 0
    got = shrink_area(rgb, (320, 240))
    one_step = cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_AREA)
    diff = np.abs(got.astype(np.int16) - one_step.astype(np.int16))
    assert got.shape == (240, 320, 3) and float(diff.mean()) < 1.0
    assert float(np.percentile(diff, 99)) <= 4
    block = rgb[:2, :2].astype(np.float64).mean(axis=(0, 1))
    np.testing.assert_allclose(halve(rgb)[0, 0], block, atol=0.5)
    assert halve(rgb[:5, :7]).shape == (2, 3, 3)  # an odd last row and column left out
