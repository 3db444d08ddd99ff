"""Augmentation: deterministic per seed, real transforms, and training split only."""

from __future__ import annotations

import numpy as np
import pytest

from leukoscope.analysis.preprocess import PreprocessParams, preprocess_uint8
from leukoscope.core.synthetic import make_smear
from leukoscope_tools.data.augment import (
    AugmentParams,
    augment_batch,
    augment_split,
    expand_with_copies,
)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    params = PreprocessParams(input_size=(64, 64))
    return np.stack(
        [
            preprocess_uint8(make_smear(160, 120, n_blasts=i % 2, seed=i).image, params)
            for i in range(6)
        ]
    )


def test_same_seed_same_output_other_seed_differs(images: np.ndarray) -> None:
    a = augment_batch(images, seed=1, epoch=0)
    b = augment_batch(images, seed=1, epoch=0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, augment_batch(images, seed=2, epoch=0))
    assert not np.array_equal(a, augment_batch(images, seed=1, epoch=1))
    # Each image's transform depends on its position only, not on the batch around it.
    assert np.array_equal(augment_batch(images[:3], seed=1, epoch=0), a[:3])


def test_transforms_change_images_and_keep_shape(images: np.ndarray) -> None:
    before = images.copy()
    out = augment_batch(images, seed=4, epoch=0)
    assert np.array_equal(images, before), "the input array must not be modified"
    assert out.shape == images.shape and out.dtype == np.uint8
    assert all(not np.array_equal(o, i) for o, i in zip(out, images, strict=True))
    # Nearest fill: no black borders appear (the smears have no black pixels).
    assert out.min(axis=(1, 2, 3)).min() > 20


def test_flip_only_is_exact_flip(images: np.ndarray) -> None:
    params = AugmentParams(hflip=True, vflip=False, shift=0.0, zoom=0.0, shear_deg=0.0)
    out = augment_batch(images, seed=0, epoch=0, params=params)
    for o, i in zip(out, images, strict=True):
        assert np.array_equal(o, i) or np.array_equal(o, i[:, ::-1])


@pytest.mark.parametrize("split", ["val", "test", "validation", ""])
def test_validation_and_test_are_refused(images: np.ndarray, split: str) -> None:
    before = images.copy()
    with pytest.raises(ValueError, match="training split only"):
        augment_split(images, split, seed=0, epoch=0)
    assert np.array_equal(images, before)


def test_paper_protocol_copies_point_to_their_original(images: np.ndarray) -> None:
    out, origin = expand_with_copies(images, copies=2, seed=0)
    assert len(out) == 3 * len(images)
    assert np.array_equal(out[: len(images)], images)
    assert origin.tolist() == list(range(6)) * 3
