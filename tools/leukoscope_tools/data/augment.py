"""Seeded augmentation of the training split: the paper's flips, shifts, zoom and shear.

Applied to preprocessed uint8 model inputs, after the split, to training rows only:
`augment_split` refuses anything but the training split. Edges are filled with the
nearest pixel, as Keras's `fill_mode="nearest"`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random transforms (fractions of the image size, shear in degrees)."""

    hflip: bool = True
    vflip: bool = True
    shift: float = 0.1
    zoom: float = 0.1
    shear_deg: float = 10.0


def random_transform(img: np.ndarray, rng: np.random.Generator, p: AugmentParams) -> np.ndarray:
    """One random flip/shift/zoom/shear of an HxWx3 uint8 image (same size, nearest fill)."""
    h, w = img.shape[:2]
    out = img
    if p.hflip and rng.random() < 0.5:
        out = out[:, ::-1]
    if p.vflip and rng.random() < 0.5:
        out = out[::-1]
    zoom = rng.uniform(1 - p.zoom, 1 + p.zoom)
    shear = np.deg2rad(rng.uniform(-p.shear_deg, p.shear_deg))
    tx, ty = rng.uniform(-p.shift, p.shift, 2) * (w, h)
    # Zoom and shear about the centre, then shift.
    a = np.array([[zoom, zoom * np.tan(shear)], [0.0, zoom]])
    centre = np.array([w / 2, h / 2])
    offset = centre - a @ centre + (tx, ty)
    m = np.hstack([a, offset[:, None]]).astype(np.float32)
    return cv2.warpAffine(
        np.ascontiguousarray(out),
        m,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def augment_batch(
    images: np.ndarray, seed: int, epoch: int, params: AugmentParams | None = None
) -> np.ndarray:
    """A transformed copy of every image; the same (seed, epoch) gives the same output."""
    params = params or AugmentParams()
    out = np.empty_like(images)
    for i in range(len(images)):
        # One stream per (seed, epoch, image): results do not depend on batch order.
        rng = np.random.default_rng([seed, epoch, i])
        out[i] = random_transform(images[i], rng, params)
    return out


def augment_split(
    images: np.ndarray, split: str, seed: int, epoch: int, params: AugmentParams | None = None
) -> np.ndarray:
    """Augment the training split; refuse validation or test images (they stay untouched)."""
    if split != "train":
        raise ValueError(f"augmentation is for the training split only, not {split!r}")
    return augment_batch(images, seed, epoch, params)


def expand_with_copies(
    images: np.ndarray, copies: int, seed: int, params: AugmentParams | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each image plus `copies` augmented versions, and the index of each one's original.

    This is the paper's protocol (augment the whole set, then split) that `compare`
    reproduces to show how much it inflates accuracy; the real pipeline never uses it.
    """
    parts = [images] + [augment_batch(images, seed, k + 1, params) for k in range(copies)]
    origin = np.tile(np.arange(len(images)), copies + 1)
    return np.concatenate(parts), origin
