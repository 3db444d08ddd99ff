"""The quality gate: is this photo good enough to show the model? (focus, exposure, stain, field)

Every metric is computed on a working copy whose long side is `WORKING_LONG_SIDE` pixels
(shrunk by area averaging, or enlarged bilinearly), so thresholds do not depend on the
camera's resolution: a 224x224 Kaggle field, a 257x257 ALL-IDB2 crop and a 5-megapixel
ALL-IDB1 photo are judged at the same scale. It is also the scale the model works at
(its preprocessing resizes to 256x256 first), so "sharp enough" means sharp enough for it.

The working copy is kept in float32 (no re-quantisation), so a smooth, defocused field
does not gain fake detail from rounding. Metrics (all on the working copy):
  - `mean_luma`: mean brightness 0..255 (Rec. 601 luma).
  - `clipped_high` / `clipped_low`: fractions of pixels at luma >= 250 / <= 5.
  - `focus`: variance of the Laplacian of the luma over max(variance of the luma, 400),
    x1000. Dividing by the contrast makes it measure sharpness rather than how much is in
    view; the floor of 400 (a standard deviation of 20) keeps a nearly flat, blurred field
    from scoring high on its last faint ripples.
  - `stain`: fraction of pixels that are coloured (max - min channel > 15) and not green
    or yellow (green is not the largest channel): the purple and pink of a Romanowsky stain.
  - `content`: fraction of pixels whose luma is more than 18 away from the median luma
    (the background): cells of any colour; near 0 for a blank slide.

The default thresholds were chosen from data: `tests/quality_survey.py` on all 3,892
images in ../shared/data (ALL-IDB1, ALL-IDB2, Kaggle ALL, BCCD) and degraded copies of
them; see `QualityThresholds` for the values and the margins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import cv2
import numpy as np

#: The long side of the working copy every metric is computed on.
WORKING_LONG_SIDE = 256
_CONTENT_DELTA = 18.0
_CHROMA_DELTA = 15.0
_FOCUS_VAR_FLOOR = 400.0


class RetakeReason(StrEnum):
    """Why a photo was refused, in the order they are checked and reported."""

    TOO_DARK = "too-dark"
    TOO_BRIGHT = "too-bright"
    EMPTY_FIELD = "empty-field"
    NO_STAINED_CELLS = "no-stained-cells"
    OUT_OF_FOCUS = "out-of-focus"


@dataclass(frozen=True)
class QualityMetrics:
    """The gate's measurements of one photo (see the module docstring)."""

    mean_luma: float
    clipped_high: float
    clipped_low: float
    focus: float
    stain: float
    content: float

    def to_json(self) -> dict[str, float]:
        """The metrics rounded for a record."""
        return {k: round(float(v), 5) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of the gate; the config's [quality] table overrides any of them.

    Each limit sits between the worst of the 3,892 real images and the best of the
    degraded copies (`tests/quality_survey.py`, copies of every 5th image; the comments
    give both figures). Degraded copies: Gaussian blur with sigma = 1% of the long side;
    over-exposed = gain that puts the median luma at 1.6x full scale (background and red
    cells blown out); under-exposed = gain that puts the median luma at 45; grey =
    desaturated; blank = the photo's own background colour plus sensor noise; plus black
    and white frames. The tightest margins are focus (9.39 vs 5.55) and clipping (0.61 vs
    0.75): a microscope whose sharp fields score below 7.5 needs its own min_focus.
    """

    min_mean_luma: float = 65.0  # real >= 91.2 (ALL-IDB2); under-exposed <= 46.5
    max_mean_luma: float = 250.0  # real <= 245.4 (Kaggle); white 255
    max_clipped_high: float = 0.70  # real <= 0.61 (Kaggle, white background); over >= 0.75
    max_clipped_low: float = 0.30  # real <= 0.001; black 1.0
    # Focus: real >= 9.39 (ALL-IDB2 crops); blurred <= 5.55, or <= 6.9 for blurred 5 MP
    # ALL-IDB1 stills saved as JPEG and decoded at 1/4 scale, as the daemon decodes them.
    min_focus: float = 7.5
    min_stain: float = 0.02  # real >= 0.049 (Kaggle); grey 0.0
    min_content: float = 0.015  # real >= 0.038 (ALL-IDB2); blank 0.0

    def check(self, m: QualityMetrics) -> list[RetakeReason]:
        """The reasons this photo must be retaken, empty when it passes."""
        reasons: list[RetakeReason] = []
        if m.mean_luma < self.min_mean_luma or m.clipped_low > self.max_clipped_low:
            reasons.append(RetakeReason.TOO_DARK)
        if m.mean_luma > self.max_mean_luma or m.clipped_high > self.max_clipped_high:
            reasons.append(RetakeReason.TOO_BRIGHT)
        if m.content < self.min_content:
            reasons.append(RetakeReason.EMPTY_FIELD)
        elif m.stain < self.min_stain:
            reasons.append(RetakeReason.NO_STAINED_CELLS)
        if m.focus < self.min_focus:
            reasons.append(RetakeReason.OUT_OF_FOCUS)
        return reasons


@dataclass(frozen=True)
class QualityResult:
    """The gate's verdict on one photo."""

    metrics: QualityMetrics
    reasons: tuple[RetakeReason, ...]

    @property
    def ok(self) -> bool:
        """True when the photo may go to the model."""
        return not self.reasons


def working_copy(rgb: np.ndarray, long_side: int = WORKING_LONG_SIDE) -> np.ndarray:
    """Resize an image so its long side is `long_side` (aspect and dtype kept)."""
    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    if scale == 1.0:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interp)


def focus_score(gray: np.ndarray) -> float:
    """Sharpness of a float32 grey image: Laplacian variance over intensity variance, x1000."""
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=1)
    return 1000.0 * float(lap.var()) / max(float(gray.var()), _FOCUS_VAR_FLOOR)


def measure(rgb: np.ndarray) -> QualityMetrics:
    """The gate's metrics for an HxWx3 uint8 RGB image of any size."""
    small = working_copy(rgb.astype(np.float32))
    r, g, b = small[:, :, 0], small[:, :, 1], small[:, :, 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    n = float(luma.size)
    median = float(np.median(luma))
    chroma = small.max(axis=2) - small.min(axis=2)
    stained = (chroma > _CHROMA_DELTA) & (g < np.maximum(r, b))
    return QualityMetrics(
        mean_luma=float(luma.mean()),
        clipped_high=float(np.count_nonzero(luma >= 250.0)) / n,
        clipped_low=float(np.count_nonzero(luma <= 5.0)) / n,
        focus=focus_score(luma),
        stain=float(np.count_nonzero(stained)) / n,
        content=float(np.count_nonzero(np.abs(luma - median) > _CONTENT_DELTA)) / n,
    )


def assess(rgb: np.ndarray, thresholds: QualityThresholds | None = None) -> QualityResult:
    """Measure a photo and check it against the thresholds (the defaults if None)."""
    metrics = measure(rgb)
    reasons = (thresholds or QualityThresholds()).check(metrics)
    return QualityResult(metrics, tuple(reasons))
