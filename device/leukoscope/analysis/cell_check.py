"""Is a detected nucleus a white cell? A small, explainable check after detection.

The detector (`detection.detect_white_cells`) keeps every purple blob above 12 um^2; on
real smears some of those are not white cells: large platelets, small platelet clumps
and stain specks lying on red cells. Counted and classified like cells, they raise a
healthy field's white-cell count and a few are called blasts. This check looks at each
detection once more and rejects what is small *and* pale:

1. `measure()`: around each detection, at the detector's 2 px/um, the blob of nucleus
   stain (OD green - OD blue) that holds its centre, and the blob's mean stain. A white
   cell's nucleus is dense chromatin; a platelet or a speck of precipitate is grainy and
   paler, and smaller than a red cell.
2. `judge()`: a detection is rejected when its nucleus is smaller than `small_um2`, its
   stain is below `max_stain` and below `relative_stain` times the densest detection of
   the same field (the field's own nuclei are the reference, so a paler lab's stain does
   not reject its small white cells). The thresholds were chosen on tuning data only
   (models/reports/cell-detection.md, "Detector check").

Rejected objects are not counted or classified; the cells analyser reports how many.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from leukoscope.analysis.detection import DETECT_PX_PER_UM, Detection, WhiteCell

#: The check measures at the detector's scale, so its pixels mean the same micrometres.
CHECK_PX_PER_UM = DETECT_PX_PER_UM
#: Nucleus stain (OD green - OD blue) above which a pixel belongs to the blob (as detection).
BLOB_PURPLE = 0.35


@dataclass(frozen=True)
class CheckParams:
    """The check's thresholds; a detection failing all three tests is rejected."""

    #: Nuclei this large (um^2) are kept whatever their stain: a small lymphocyte's is
    #: about 30-40 um^2, a large platelet's 12-25 um^2. 0 turns the check off.
    small_um2: float = 30.0
    #: Nuclei at least this dense (mean OD green - OD blue) are kept.
    max_stain: float = 0.9
    #: Nuclei at least this fraction of the field's densest detection are kept.
    relative_stain: float = 0.8

    def __post_init__(self) -> None:
        for name in ("small_um2", "max_stain", "relative_stain"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")


DEFAULT_CHECK = CheckParams()
#: No check at all: every detection is a white cell (the behaviour before the check).
NO_CHECK = CheckParams(small_um2=0.0)


@dataclass(frozen=True)
class ObjectFeatures:
    """What the check measured of one detection."""

    area_um2: float  # the detector's nucleus area
    blob_um2: float  # the stain blob around the centre, at the check's scale
    stain: float  # mean OD green - OD blue over the blob


def _od_lut(background_rgb: tuple[float, float, float]) -> np.ndarray:
    bg = np.maximum(np.asarray(background_rgb, np.float32), 1.0)
    levels = np.maximum(np.arange(256, dtype=np.float32), 0.5)[:, None]
    lut = -np.log(np.clip(levels / bg[None, :], 1e-3, 1.0)).astype(np.float32)
    return lut.reshape(1, 256, 3)


def _measure_one(
    rgb: np.ndarray, cell: WhiteCell, px_per_um: float, lut: np.ndarray
) -> ObjectFeatures:
    """The stain blob holding `cell`'s centre, in a window resampled to CHECK_PX_PER_UM."""
    h, w = rgb.shape[:2]
    half = max(2, round(min(2.0 * cell.radius_px / px_per_um + 2.0, 30.0) * px_per_um))
    x, y = round(cell.x), round(cell.y)
    x0, y0 = max(0, x - half), max(0, y - half)
    patch = rgb[y0 : min(h, y + half + 1), x0 : min(w, x + half + 1)]
    scale = CHECK_PX_PER_UM / px_per_um
    size = (max(3, round(patch.shape[1] * scale)), max(3, round(patch.shape[0] * scale)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    win = cv2.resize(np.ascontiguousarray(patch), size, interpolation=interp)
    od = cv2.LUT(win, lut)
    stain = cv2.GaussianBlur(od[:, :, 1] - od[:, :, 2], (0, 0), 0.5 * CHECK_PX_PER_UM)
    n, comp = cv2.connectedComponents((stain > BLOB_PURPLE).astype(np.uint8), connectivity=8)
    cx = int(np.clip(round((cell.x - x0) * size[0] / patch.shape[1]), 0, size[0] - 1))
    cy = int(np.clip(round((cell.y - y0) * size[1] / patch.shape[0]), 0, size[1] - 1))
    label = int(comp[cy, cx])
    if label == 0 and n > 1:
        # The centre fell on a pale gap (between a neutrophil's lobes): the nearest blob.
        ys, xs = np.nonzero(comp)
        k = int(np.argmin((xs - cx) ** 2 + (ys - cy) ** 2))
        label = int(comp[ys[k], xs[k]])
    if label == 0:
        inside = np.zeros(comp.shape, bool)
        inside[cy, cx] = True
    else:
        inside = comp == label
    return ObjectFeatures(
        area_um2=cell.area_um2,
        blob_um2=float(inside.sum()) / CHECK_PX_PER_UM**2,
        stain=float(stain[inside].mean()),
    )


def measure(rgb: np.ndarray, detection: Detection) -> list[ObjectFeatures]:
    """The check's numbers for every detected cell of `rgb` (same order)."""
    lut = _od_lut(detection.background_rgb)
    return [_measure_one(rgb, c, detection.scale.px_per_um, lut) for c in detection.cells]


def judge(f: ObjectFeatures, field_stain: float, params: CheckParams = DEFAULT_CHECK) -> bool:
    """True when `f` looks like a white cell; `field_stain`: the field's densest detection's."""
    small_and_pale = (
        f.area_um2 < params.small_um2
        and f.stain < params.max_stain
        and f.stain < params.relative_stain * field_stain
    )
    return not small_and_pale


@dataclass(frozen=True)
class CheckedCells:
    """A detection's cells split by the check (each list in detection order)."""

    kept: list[WhiteCell]
    rejected: list[WhiteCell]


def check_cells(
    rgb: np.ndarray, detection: Detection, params: CheckParams = DEFAULT_CHECK
) -> CheckedCells:
    """Keep the detections that look like white cells; the others are rejected."""
    if params.small_um2 <= 0 or not detection.cells:
        return CheckedCells(list(detection.cells), [])
    feats = measure(rgb, detection)
    field_stain = max(f.stain for f in feats)
    kept: list[WhiteCell] = []
    rejected: list[WhiteCell] = []
    for cell, f in zip(detection.cells, feats, strict=True):
        (kept if judge(f, field_stain, params) else rejected).append(cell)
    return CheckedCells(kept, rejected)
