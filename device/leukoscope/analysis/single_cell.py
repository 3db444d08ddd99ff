"""One white cell near an image's centre, cropped as a field's cells are.

A lab checks the classifier on cells it has already cut out (by hand, or exported by a
cell analyser such as a CellaVision), each image holding one white cell near its centre.
Those cells must reach the model exactly as a field's detected cells do, so the crop is
made by the same `cell_crops` (the bundle's `crop_um` square, white-balanced, filtered):

1. Scale: the caller's `px_per_um` (a calibrated camera), else the red cells around the
   cell are measured (7.5 um each), else the caller's `default_px_per_um` (a source's
   calibrated value), else the image is taken to be `crop_um` wide (a cut-out cell
   usually fills its image); `scale_source` says which.
2. Centre: the detected nucleus nearest the image's centre, if it lies within a quarter
   of the image's shorter side of it (a cut-out cell is near the middle; a nucleus in a
   corner is a neighbour); else the image's centre itself (a pale or smudged nucleus the
   detector missed is still the cell the user means).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leukoscope.analysis.cells import CellSettings, cell_crops
from leukoscope.analysis.detection import (
    Detection,
    ScaleEstimate,
    WhiteCell,
    background_colour,
    detect_white_cells,
    estimate_scale,
)
from leukoscope.analysis.preprocess import PreprocessParams
from leukoscope.core.errors import ImageError

#: The detected nucleus must lie within this share of the shorter side of the centre.
CENTRE_SHARE = 0.25
#: A nucleus assumed where none is detected: about a lymphocyte's (8 um across).
DEFAULT_NUCLEUS_UM = 4.0


@dataclass(frozen=True)
class CentreCell:
    """The crop of an image's centre cell and how it was found."""

    crop: np.ndarray  # h x w x 3 uint8, as `cell_crops` gives it (before normalisation)
    cell: WhiteCell
    px_per_um: float
    scale_source: str  # "given", "red-cells", "default" or "image-width"
    detected: bool  # False: no nucleus near the centre, cropped at the image's centre


def image_scale(
    rgb: np.ndarray,
    crop_um: float,
    px_per_um: float | None = None,
    default_px_per_um: float | None = None,
) -> ScaleEstimate:
    """The image's scale: given, from its red cells, a default, or the image as `crop_um` wide."""
    if px_per_um is not None:
        return ScaleEstimate(float(px_per_um), 0, "given")
    try:
        return estimate_scale(rgb)
    except ImageError:
        if default_px_per_um is not None:
            return ScaleEstimate(float(default_px_per_um), 0, "default")
        return ScaleEstimate(min(rgb.shape[:2]) / crop_um, 0, "image-width")


def centre_cell(
    rgb: np.ndarray,
    settings: CellSettings,
    pre: PreprocessParams,
    *,
    px_per_um: float | None = None,
    default_px_per_um: float | None = None,
) -> CentreCell:
    """The model's crop of the white cell nearest the centre of `rgb` (HxWx3 uint8)."""
    scale = image_scale(rgb, settings.crop_um, px_per_um, default_px_per_um)
    h, w = rgb.shape[:2]
    cx, cy = w / 2.0, h / 2.0
    try:
        det = detect_white_cells(rgb, px_per_um=scale.px_per_um)
        found = det.cells
        background = det.background_rgb
    except ImageError:
        found = []
        bg = background_colour(rgb)
        background = (float(bg[0]), float(bg[1]), float(bg[2]))
    near = [c for c in found if np.hypot(c.x - cx, c.y - cy) <= CENTRE_SHARE * min(h, w)]
    if near:
        cell = min(near, key=lambda c: np.hypot(c.x - cx, c.y - cy))
    else:
        r = DEFAULT_NUCLEUS_UM * scale.px_per_um
        cell = WhiteCell(cx, cy, float(np.pi * DEFAULT_NUCLEUS_UM**2), r)
    detection = Detection([cell], scale, background)
    crop = cell_crops(rgb, [cell], detection, settings, pre)[0]
    return CentreCell(crop, cell, scale.px_per_um, scale.source, bool(near))
