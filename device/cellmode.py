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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from leukoscope.cells import Detection, WhiteCell, crop_cells
from leukoscope.preprocess import PreprocessParams, filter_paper

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

    def __post_init__(self) -> None:
        if not 4.0 <= self.crop_um <= 100.0:
            raise ValueError(f"crop_um must be in 4..100, got {self.crop_um}")
        if not 1.0 <= self.glass_level <= 255.0:
            raise ValueError(f"glass_level must be in 1..255, got {self.glass_level}")
        if not 1 <= self.k <= 100:
            raise ValueError(f"k must be in 1..100, got {self.k}")
        if not 0.0 <= self.cell_cut <= 1.0:
            raise ValueError(f"cell_cut must be in 0..1, got {self.cell_cut}")
        if not 1 <= self.min_cells <= self.max_cells <= 4096:
            raise ValueError(
                f"need 1 <= min_cells <= max_cells <= 4096, got {self.min_cells}, {self.max_cells}"
            )
        for name in ("bias", "w_top_k", "w_density", "w_fraction"):
            value = getattr(self, name)
            if not math.isfinite(value) or abs(value) > 1000:
                raise ValueError(f"{name} must be a finite number within +-1000, got {value}")


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
    """Scale each channel so the glass colour becomes `level` grey (uint8 in, uint8 out)."""
    gain = np.float32(level) / np.maximum(np.asarray(background_rgb, np.float32), 1.0)
    return np.clip(crops.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


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
