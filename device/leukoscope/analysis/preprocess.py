"""The one preprocessing path shared by training, calibration and the device.

The paper's steps (resize to 256x256, 3x3 median filter, 3x3 sharpen), then the
model's input size and normalisation. Every parameter comes from the bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

#: The paper's 3x3 sharpening kernel (identity plus a Laplacian).
SHARPEN_3X3 = ((0.0, -1.0, 0.0), (-1.0, 5.0, -1.0), (0.0, -1.0, 0.0))


@dataclass(frozen=True)
class PreprocessParams:
    """What `preprocess()` does, as recorded in a bundle's manifest.

    Sizes are (width, height). Normalisation maps a pixel p in 0..255 to
    p * scale + offset, the float the Keras model was trained on.
    """

    resize: tuple[int, int] = (256, 256)
    median_ksize: int = 3
    sharpen_kernel: tuple[tuple[float, ...], ...] | None = SHARPEN_3X3
    input_size: tuple[int, int] = (128, 128)
    scale: float = 1.0 / 255.0
    offset: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The manifest's `preprocess` object (the input size lives in its `input`)."""
        return {
            "resize": list(self.resize),
            "median_ksize": self.median_ksize,
            "sharpen_kernel": None
            if self.sharpen_kernel is None
            else [list(r) for r in self.sharpen_kernel],
            "normalization": {"scale": self.scale, "offset": self.offset},
        }


def filter_paper(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """The paper's filters on a uint8 image: median, then sharpen (borders replicate)."""
    out = rgb
    if params.median_ksize > 1:
        out = cv2.medianBlur(out, params.median_ksize)
    if params.sharpen_kernel is not None:
        kernel = np.asarray(params.sharpen_kernel, dtype=np.float32)
        # filter2D saturates to 0..255 for uint8 output, as the paper's images were.
        out = cv2.filter2D(out, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    return out


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height): area averaging when shrinking, bilinear when growing."""
    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    shrinking = rgb.shape[1] >= size[0] and rgb.shape[0] >= size[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(rgb, tuple(size), interpolation=interp)


def halvings(width: int, height: int, size: tuple[int, int]) -> int:
    """How many exact halvings `shrink_area` makes on the way from (width, height) to `size`:
    as many as leave the last, fractional step a factor of 2 to 4 (1 to 4 when none)."""
    k = 0
    while (width >> k) >= 4 * size[0] and (height >> k) >= 4 * size[1]:
        k += 1
    return k


def halve(img: np.ndarray, times: int = 1) -> np.ndarray:
    """2x2 means, `times` over (an odd last row or column is left out); dtype kept."""
    for _ in range(times):
        h, w = img.shape[0] // 2, img.shape[1] // 2
        # Even sides make it OpenCV's fast whole-factor path (exact means, rounded to uint8).
        img = cv2.resize(img[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)
    return img


def shrink_area(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a uint8 or float32 image down to `size` (width, height), fast.

    OpenCV averages by a whole factor in a fast path (2x2 means of a 5 MP still: about
    3 ms) but by a fractional one (say 2592 -> 1400 px) 10-15x slower. So the image is
    first halved exactly (`halvings` times), and only the last step, by a factor of 2-4,
    is fractional. The result is the one-step area average but for rounding at each
    halving (uint8: half a level, averaged away by the last step) and the last step's
    box edges, which fall on halved pixels.
    """
    k = halvings(img.shape[1], img.shape[0], size)
    out: np.ndarray = cv2.resize(halve(img, k), tuple(size), interpolation=cv2.INTER_AREA)
    return out


def preprocess_uint8(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Resize to `params.resize`, filter, then resize to the model's input size (uint8)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"preprocess needs HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
    out = filter_paper(resize(rgb, params.resize), params)
    return resize(out, params.input_size)


def preprocess(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """HxWx3 uint8 RGB -> the model's float32 input (h, w, 3), normalised."""
    out = preprocess_uint8(rgb, params).astype(np.float32)
    return out * np.float32(params.scale) + np.float32(params.offset)
