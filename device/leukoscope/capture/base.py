"""What a capture yields and what a camera backend must do: `Still`, `PreviewFrame`, `Camera`.

Backends (one file each: `replay`, `opencv_uvc`, `picamera`) are built by name in
`capture.backends`; `capture.owner.CameraOwner` is the only thing that touches one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from leukoscope.core.errors import CameraError
from leukoscope.core.imageio import as_rgb8, load_image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Still:
    """One photo from the camera: decoded pixels, or the encoded file as the camera gave it.

    Replay stills carry the file's bytes (decoded later, at the scale the pipeline needs);
    live cameras carry RGB pixels (encoded to JPEG only for storage).
    """

    source: str
    rgb: np.ndarray | None = None
    data: bytes | None = None
    suffix: str = ".jpg"
    exposure_s: float = 0.0


@dataclass(frozen=True)
class PreviewFrame:
    """A low-resolution frame for the live view, with its focus score."""

    rgb: np.ndarray
    focus: float
    taken_at: float
    paused: bool = False


class Camera(Protocol):
    """What every camera backend provides. Methods raise CameraError when the camera fails."""

    name: str

    def open(self) -> None:
        """Find and claim the camera (raises CameraError if absent or busy)."""

    def check(self) -> None:
        """Cheap liveness check: raise CameraError if the camera has gone."""

    def capture_still(self, timeout_s: float) -> Still:
        """Take one full-resolution still within `timeout_s`."""

    def preview(self, size: tuple[int, int]) -> np.ndarray:
        """A low-resolution RGB frame no larger than `size` (width, height)."""

    def close(self) -> None:
        """Release the camera (idempotent)."""


def decode_still(
    still: Still, min_size: tuple[int, int] | None = None, reduce: int = 1
) -> np.ndarray:
    """The still's RGB pixels (decoding its file at reduced scale when allowed): at least
    `min_size`, or at 1/`reduce` of the full size (`load_image`'s arguments).

    Raises:
        ImageError: the camera delivered something that is not a usable image.
    """
    if still.rgb is not None:
        rgb = _reduce(as_rgb8(still.rgb), min_size)
        if reduce > 1:  # the size a JPEG's reduced decode gives, by area means
            h, w = rgb.shape[:2]
            size = (-(-w // reduce), -(-h // reduce))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        return rgb
    if still.data is None:
        raise CameraError(f"{still.source}: the camera returned no image")
    return load_image(still.data, min_size=min_size, reduce=reduce)


def _reduce(rgb: np.ndarray, min_size: tuple[int, int] | None) -> np.ndarray:
    """Shrink live-camera pixels by 2, 4 or 8 while still at least `min_size`, as a JPEG
    still is decoded (draft mode), so both reach the gate and the model at the same scale."""
    if min_size is None:
        return rgb
    h, w = rgb.shape[:2]
    for k in (8, 4, 2):
        if w // k >= min_size[0] and h // k >= min_size[1]:
            return cv2.resize(rgb, (w // k, h // k), interpolation=cv2.INTER_AREA)
    return rgb
