"""Cell-mode analysis: classify every white cell, then decide for the field.

The shared core of a bundle's `cells` analysis mode, used by the device (`pipeline`) and
by the host tools that train and evaluate it, so both compute the same thing:

1. `cell_batch()`: the model inputs for the detected cells: a square of `crop_um`
   micrometres around each nucleus (`cells.crop_cells`), white-balanced so the glass is
   the same grey on every microscope, then the bundle's preprocessing (the paper's median
   and sharpen filters, normalisation).
2. `slide_features()`: from the cells' blast probabilities to three numbers: the mean of
   the `k` most suspicious cells, the white-cell density (cells per 10,000 um^2 of field)
   and the fraction of cells called blasts.
3. `slide_score()`: a logistic model over those numbers, its weights fitted on
   validation slides and stored in the bundle; the bundle's thresholds turn the score
   into a verdict.

`analyse_cells()` runs all of it on one decoded photo (scale, detection, the check that
drops what is not a white cell (`cell_check`), crops, one batched classification,
decision) and returns a `CellAnalysis`: the `CellReport` that records, `classify --json`
and the status page carry, or the reason to retake.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import cv2
import numpy as np

from leukoscope.analysis.cell_check import CheckParams, check_cells
from leukoscope.analysis.detection import (
    DEFAULT_PARAMS,
    Detection,
    DetectParams,
    ScaleEstimate,
    WhiteCell,
    crop_cells,
    detect_white_cells,
    estimate_scale,
)
from leukoscope.analysis.field_of_view import FieldOfView
from leukoscope.analysis.preprocess import PreprocessParams, filter_paper
from leukoscope.core.errors import ImageError

#: Cells are cropped and classified this many at a time (one invoke each).
INFERENCE_CHUNK = 64
#: Density is counted per this many square micrometres of field.
DENSITY_AREA_UM2 = 10_000.0


@dataclass(frozen=True)
class CellSettings:
    """A `cells` bundle's settings (its manifest's `cells` object)."""

    #: Side of the square crop around each nucleus, micrometres.
    crop_um: float = 24.0
    #: White balance: each crop is scaled so the field's glass becomes this grey level.
    glass_level: float = 235.0
    #: The slide feature `top_k_mean` averages the k highest blast probabilities.
    k: int = 3
    #: A cell counts as a blast (fraction, counts, overlay colour) at p >= cell_cut.
    cell_cut: float = 0.5
    #: Fewer white cells than this: retake ("no white cells in this field").
    min_cells: int = 1
    #: At most this many cells are classified, the largest nuclei first.
    max_cells: int = 256
    #: The logistic slide model: sigmoid(bias + w_top_k * top_k_mean
    #: + w_density * log1p(density) + w_fraction * blast_fraction).
    bias: float = 0.0
    w_top_k: float = 1.0
    w_density: float = 0.0
    w_fraction: float = 0.0
    #: The not-a-white-cell check (`cell_check`): a detection is rejected when its nucleus
    #: is under `reject_small_um2` and its mean stain under both `reject_max_stain` and
    #: `reject_relative_stain` times the field's densest. 0 turns the check off (a
    #: manifest written before the check has none).
    reject_small_um2: float = 30.0
    reject_max_stain: float = 0.9
    reject_relative_stain: float = 0.8

    def check_params(self) -> CheckParams:
        """The check's thresholds."""
        return CheckParams(self.reject_small_um2, self.reject_max_stain, self.reject_relative_stain)

    def __post_init__(self) -> None:
        for name, (lo, hi) in SETTING_RANGES.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"{name} must be a finite number in {lo}..{hi}, got {value}")
        if self.min_cells > self.max_cells:
            raise ValueError(
                f"need 1 <= min_cells <= max_cells <= 4096, got {self.min_cells}, {self.max_cells}"
            )


#: Each setting's allowed range: checked here and named by the manifest parser's errors.
SETTING_RANGES: dict[str, tuple[float, float]] = {
    "crop_um": (4.0, 100.0),
    "glass_level": (1.0, 255.0),
    "k": (1, 100),
    "cell_cut": (0.0, 1.0),
    "min_cells": (1, 4096),
    "max_cells": (1, 4096),
    "bias": (-1000.0, 1000.0),
    "w_top_k": (-1000.0, 1000.0),
    "w_density": (-1000.0, 1000.0),
    "w_fraction": (-1000.0, 1000.0),
    "reject_small_um2": (0.0, 1000.0),
    "reject_max_stain": (0.0, 10.0),
    "reject_relative_stain": (0.0, 1.0),
}
#: Settings a manifest may leave out, and what they are then (bundles from before them).
OPTIONAL_SETTINGS: dict[str, float] = {
    "reject_small_um2": 0.0,
    "reject_max_stain": 0.9,
    "reject_relative_stain": 0.8,
}


@dataclass(frozen=True)
class SlideFeatures:
    """What the slide decision sees of one field's cells."""

    n_cells: int  # cells classified
    n_blasts: int  # of them, at p >= cell_cut
    top_k_mean: float  # mean of the k highest probabilities (fewer cells: of all of them)
    density: float  # cells per DENSITY_AREA_UM2 of field
    blast_fraction: float  # n_blasts / n_cells (0 with no cells)


def select_cells(cells: list[WhiteCell], max_cells: int) -> list[WhiteCell]:
    """The cells to classify: all of them, or the `max_cells` largest nuclei (blasts are large)."""
    if len(cells) <= max_cells:
        return list(cells)
    order = sorted(range(len(cells)), key=lambda i: (-cells[i].area_um2, i))[:max_cells]
    return [cells[i] for i in sorted(order)]


def white_balance(
    crops: np.ndarray, background_rgb: tuple[float, float, float], level: float
) -> np.ndarray:
    """Scale each channel so the glass colour becomes `level` grey (uint8 in, uint8 out).

    Each output is clip(p * gain + 0.5, 0, 255) truncated, in float32; it is computed
    once per level and channel (a lookup table), not once per pixel.
    """
    gain = np.float32(level) / np.maximum(np.asarray(background_rgb, np.float32), 1.0)
    levels = np.arange(256, dtype=np.float32)[:, None]
    lut = np.clip(levels * gain + 0.5, 0, 255).astype(np.uint8)  # 256 x 3
    if crops.size == 0:
        return crops.astype(np.uint8, copy=True)
    flat = np.ascontiguousarray(crops, dtype=np.uint8).reshape(-1, 1, 3)
    out: np.ndarray = cv2.LUT(flat, lut.reshape(1, 256, 3))
    return out.reshape(crops.shape)


def cell_crops(
    rgb: np.ndarray,
    cells: list[WhiteCell],
    detection: Detection,
    settings: CellSettings,
    pre: PreprocessParams,
) -> np.ndarray:
    """The filtered uint8 crops (N x h x w x 3) the model sees, before normalisation.

    Crops are taken at `pre.input_size` directly (no intermediate resize), white-balanced
    by the field's background, then filtered as the paper does.
    """
    width, height = pre.input_size
    if width != height:
        raise ValueError(f"cell crops are square; the model input is {width}x{height}")
    crops = crop_cells(
        rgb,
        cells,
        detection.scale.px_per_um,
        size_um=settings.crop_um,
        out_px=width,
        background=detection.background_rgb,
    )
    crops = white_balance(crops, detection.background_rgb, settings.glass_level)
    for i in range(len(crops)):
        crops[i] = filter_paper(crops[i], pre)
    return crops


def normalise(crops: np.ndarray, pre: PreprocessParams) -> np.ndarray:
    """uint8 crops -> the model's float32 inputs."""
    return crops.astype(np.float32) * np.float32(pre.scale) + np.float32(pre.offset)


def cell_batch(
    rgb: np.ndarray,
    cells: list[WhiteCell],
    detection: Detection,
    settings: CellSettings,
    pre: PreprocessParams,
) -> np.ndarray:
    """The model inputs (N x h x w x 3 float32) for `cells` of the field `rgb`."""
    return normalise(cell_crops(rgb, cells, detection, settings, pre), pre)


def field_area_um2(shape: tuple[int, ...], px_per_um: float) -> float:
    """Area of an image of this shape, in square micrometres."""
    return float(shape[0] * shape[1]) / (px_per_um * px_per_um)


def slide_features(p_blast: np.ndarray, area_um2: float, settings: CellSettings) -> SlideFeatures:
    """The slide features of one field from its cells' blast probabilities."""
    p = np.asarray(p_blast, np.float64).reshape(-1)
    n = int(p.size)
    if n == 0:
        return SlideFeatures(0, 0, 0.0, 0.0, 0.0)
    top = np.sort(p)[::-1][: settings.k]
    n_blasts = int(np.count_nonzero(p >= settings.cell_cut))
    density = n * DENSITY_AREA_UM2 / max(area_um2, 1e-9)
    return SlideFeatures(n, n_blasts, float(top.mean()), float(density), n_blasts / n)


def slide_score(f: SlideFeatures, settings: CellSettings) -> float:
    """The field's score in 0..1 (the bundle's thresholds apply to it)."""
    z = (
        settings.bias
        + settings.w_top_k * f.top_k_mean
        + settings.w_density * math.log1p(f.density)
        + settings.w_fraction * f.blast_fraction
    )
    # A numerically safe logistic for any z.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class CellRetake(StrEnum):
    """Why cell analysis could not judge a photo (a retake reason, like the gate's)."""

    NO_SCALE = "no-scale"
    NO_WHITE_CELLS = "no-white-cells"


#: What the technician is told for each cell-analysis retake.
RETAKE_MESSAGES = {
    CellRetake.NO_SCALE: "cannot measure the red cells: retake, or calibrate px_per_um",
    CellRetake.NO_WHITE_CELLS: "no white cells in this field: move to another field",
}

#: A cell's box is this many nucleus diameters across...
BOX_NUCLEUS_DIAMETERS = 2.2
#: ...but at least this fraction of the crop (a small nucleus still gets a visible box).
BOX_MIN_CROP_FRACTION = 0.5


def cell_box(
    cell: WhiteCell, px_per_um: float, crop_um: float, image_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The overlay box of one cell: an integer square [x0, y0, x1, y1] around its nucleus.

    Its side is `BOX_NUCLEUS_DIAMETERS` nucleus diameters, at least
    `BOX_MIN_CROP_FRACTION` of the crop; it is clipped to the image (0 <= x0 < x1 <= width).
    """
    width, height = image_size
    side = max(
        BOX_NUCLEUS_DIAMETERS * 2.0 * cell.radius_px, BOX_MIN_CROP_FRACTION * crop_um * px_per_um
    )
    half = side / 2.0
    cx, cy = cell.x + 0.5, cell.y + 0.5  # pixel centres -> continuous coordinates
    x0 = min(max(0, math.floor(cx - half)), width - 1)
    y0 = min(max(0, math.floor(cy - half)), height - 1)
    x1 = max(min(width, math.ceil(cx + half)), x0 + 1)
    y1 = max(min(height, math.ceil(cy + half)), y0 + 1)
    return (x0, y0, x1, y1)


@dataclass(frozen=True)
class CellResult:
    """One classified white cell, in the decoded photo's pixel coordinates."""

    x: float
    y: float
    box: tuple[int, int, int, int]
    p_blast: float
    blast: bool
    clump: bool

    def to_json(self) -> dict[str, Any]:
        """The cell as records and `classify --json` carry it."""
        return {
            "x": round(self.x, 1),
            "y": round(self.y, 1),
            "box": list(self.box),
            "p_blast": round(self.p_blast, 4),
            "blast": self.blast,
            "clump": self.clump,
        }


@dataclass(frozen=True)
class CellReport:
    """What cell analysis found in one photo (the JSON object `cells` of a result)."""

    px_per_um: float
    scale_source: str  # "red-cells" or "given"
    image_size: tuple[int, int]  # (width, height) of the photo the boxes refer to
    n_found: int  # white cells detected (and kept by the check)
    features: SlideFeatures  # of the cells classified (at most max_cells of them)
    score: float  # the slide score (the photo's p_leukemia when it was judged)
    cell_cut: float
    cells: tuple[CellResult, ...]
    #: Detections the check rejected as not white cells (platelets, specks): not counted.
    n_rejected: int = 0

    @property
    def n_classified(self) -> int:
        """How many of the found cells were classified (the largest, up to max_cells)."""
        return self.features.n_cells

    def to_json(self) -> dict[str, Any]:
        """The `cells` object of a result, as records, the API and `classify --json` carry it."""
        f = self.features
        return {
            "px_per_um": round(self.px_per_um, 4),
            "scale_source": self.scale_source,
            "image_size": list(self.image_size),
            "n_found": self.n_found,
            "n_rejected": self.n_rejected,
            "n_classified": f.n_cells,
            "n_blasts": f.n_blasts,
            "top_k_mean": round(f.top_k_mean, 4),
            "density": round(f.density, 4),
            "blast_fraction": round(f.blast_fraction, 4),
            "score": round(self.score, 4),
            "cell_cut": self.cell_cut,
            "cells": [c.to_json() for c in self.cells],
        }


@dataclass(frozen=True)
class CellAnalysis:
    """The outcome of `analyse_cells()` for one photo."""

    #: None only when no scale could be found (retake NO_SCALE): nothing was measured.
    report: CellReport | None
    #: Why the photo must be retaken, or None when its score may be judged.
    retake: CellRetake | None
    #: Per stage: "detect" (scale and detection), "crops", "inference", "decision".
    timings_ms: dict[str, float] = field(default_factory=dict)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


def analyse_cells(
    rgb: np.ndarray,
    settings: CellSettings,
    pre: PreprocessParams,
    blast_probabilities: Callable[[np.ndarray], np.ndarray],
    *,
    px_per_um: float | None = None,
    scale: ScaleEstimate | None = None,
    fov: FieldOfView | None = None,
    detect_params: DetectParams = DEFAULT_PARAMS,
    check: CheckParams | None = None,
) -> CellAnalysis:
    """The cell analysis of one decoded photo, stage by stage.

    1. Scale: `scale` when the caller measured it, `px_per_um` when given (a calibrated
       microscope), else estimated from the red cells; none -> retake NO_SCALE (report None).
    2. White cells detected; the `max_cells` largest selected. Behind a field stop (`fov`),
       a cell whose crop would cross the stop's edge is not classified, and the density
       counts the area where cells are kept. Detections the check (`cell_check`) finds
       small and pale (platelets, specks) are not white cells: not counted, not
       classified, only counted in `n_rejected`.
    3. Their crops (`cell_batch`), classified by `blast_probabilities` (N x h x w x 3
       float32 -> N probabilities of "blast"), in chunks of INFERENCE_CHUNK cells.
    4. Slide features and score; fewer than `min_cells` found -> retake NO_WHITE_CELLS
       (the report still says what was found).

    Args:
        rgb: HxWx3 uint8 RGB photo.
        settings: the bundle's cell settings.
        pre: the bundle's preprocessing (crops are cut at its input size).
        blast_probabilities: the cell classifier.
        px_per_um: the configured scale, or None to measure it.
        scale: the scale already measured (it wins over `px_per_um`).
        fov: the photo's field (`field_of_view.find_field`); None: the whole frame.
        detect_params: nucleus detection thresholds.
        check: the not-a-white-cell check's thresholds; None: the bundle's
            (`settings.check_params()`); `cell_check.NO_CHECK`: none.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if scale is not None:
        pass
    elif px_per_um is not None:
        scale = ScaleEstimate(float(px_per_um), 0, "given")
    else:
        try:
            scale = estimate_scale(rgb)
        except ImageError:
            timings["detect"] = _ms(t0)
            return CellAnalysis(None, CellRetake.NO_SCALE, timings)
    detection = replace(
        detect_white_cells(rgb, px_per_um=scale.px_per_um, params=detect_params), scale=scale
    )
    usable = FieldOfView.whole(rgb.shape[1], rgb.shape[0]) if fov is None else fov
    # A crop reaching past the stop's edge would show the dark surround to the classifier.
    usable = usable.shrunk(settings.crop_um * scale.px_per_um / 2)
    if usable.stop:
        detection = replace(
            detection, cells=[c for c in detection.cells if usable.contains(c.x, c.y)]
        )
    checked = check_cells(rgb, detection, settings.check_params() if check is None else check)
    detection = replace(detection, cells=checked.kept)
    chosen = select_cells(detection.cells, settings.max_cells)
    timings["detect"] = _ms(t0)
    crops_s = infer_s = 0.0
    parts = [np.empty(0, np.float64)]
    # In chunks, so a crowded field's inputs never take more than a chunk's memory
    # (64 crops of 128x128 are 12 MB as float32); one invoke per chunk.
    for start in range(0, len(chosen), INFERENCE_CHUNK):
        part = chosen[start : start + INFERENCE_CHUNK]
        t0 = time.perf_counter()
        batch = cell_batch(rgb, part, detection, settings, pre)
        t1 = time.perf_counter()
        got = np.asarray(blast_probabilities(batch), np.float64).reshape(-1)
        infer_s += time.perf_counter() - t1
        crops_s += t1 - t0
        if got.size != len(part):
            raise ValueError(f"the classifier gave {got.size} probabilities for {len(part)} cells")
        parts.append(got)
    p = np.clip(np.concatenate(parts), 0.0, 1.0)
    timings["crops"] = round(crops_s * 1000.0, 2)
    timings["inference"] = round(infer_s * 1000.0, 2)
    t0 = time.perf_counter()
    size = (int(rgb.shape[1]), int(rgb.shape[0]))
    area_um2 = (
        usable.area_px / scale.px_per_um**2
        if usable.stop
        else field_area_um2(rgb.shape, scale.px_per_um)
    )
    features = slide_features(p, area_um2, settings)
    score = slide_score(features, settings)
    results = tuple(
        CellResult(
            x=c.x,
            y=c.y,
            box=cell_box(c, scale.px_per_um, settings.crop_um, size),
            p_blast=float(pc),
            blast=bool(pc >= settings.cell_cut),
            clump=c.clump,
        )
        for c, pc in zip(chosen, p, strict=True)
    )
    report = CellReport(
        px_per_um=scale.px_per_um,
        scale_source=scale.source,
        image_size=size,
        n_found=len(detection.cells),
        features=features,
        score=score,
        cell_cut=settings.cell_cut,
        cells=results,
        n_rejected=len(checked.rejected),
    )
    retake = CellRetake.NO_WHITE_CELLS if len(detection.cells) < settings.min_cells else None
    timings["decision"] = _ms(t0)
    return CellAnalysis(report, retake, timings)
