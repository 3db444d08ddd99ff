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
  - `sharpness` (only when the photo's scale is known, as in cells mode, and at least
    `SHARP_PX_PER_UM`; coarser photos are judged by `focus`): the same
    Laplacian energy measured at two physical scales, `SHARP_PX_PER_UM` px/um (or the
    photo's own scale, if coarser) over half that. Blur removes the fine scale's detail
    far more than the coarse one's, whatever the field shows, so it judges focus against
    what the content itself gives; the 256 px `focus` cannot see a blur of a few pixels
    in a 5-megapixel still (it scores 800-940 for sharp ALL-IDB1 fields and still
    hundreds for blurred ones).

The live view's score (`preview_focus`) is `focus` less 1.1x the Laplacian energy the
frame's own sensor noise gives it (`noise_energy`, measured in its flattest parts): white
noise of variance s^2 adds 20 s^2 to the Laplacian's variance, so a defocused 320x240
frame from a camera at high gain scored as sharp (noise of 4 levels: 17-100 against a
limit of 7.5; a blank frame with noise of 7 levels 290), and the live view said "focus
good" over grain (models/reports/focus-noise.md). Stills keep `focus` as it is: its limit
was chosen on the 3,892 real images with their noise in them, and taking noise off it
refuses sharp ALL-IDB2 crops, whose finest detail at 256 px is mostly their camera's
noise. `sharpness` still counts noise as detail: a 5 MP field blurred by 3 px with noise
of 4 levels passes it (the same report, with a noise-robust version that was tried).

Behind an eyepiece's field stop every metric is taken inside the field only (`fov`),
exposure on the photo as taken, the others on the flat-fielded one. A photo too dark or
too bright is told so, and not also that its field is empty or unstained: those cannot
be judged until the exposure is right.

The default thresholds were chosen from data: `tests/quality_survey.py` on all 3,892
images in ../shared/data (ALL-IDB1, ALL-IDB2, Kaggle ALL, BCCD) and degraded copies of
them; see `QualityThresholds` for the values and the margins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import cv2
import numpy as np

from leukoscope.analysis.field_of_view import FieldOfView
from leukoscope.analysis.preprocess import halve, halvings

#: The long side of the working copy every metric is computed on.
WORKING_LONG_SIDE = 256
_CONTENT_DELTA = 18.0
_CHROMA_DELTA = 15.0
_FOCUS_VAR_FLOOR = 400.0
#: The fine scale `sharpness` is measured at, px per micrometre (a pixel of 0.33 um).
SHARP_PX_PER_UM = 3.0
#: Sharpness is measured on the field's middle, this many pixels across after binning.
SHARP_WINDOW = 640
#: Sensor noise is measured in this share of a copy's pixels: its flattest.
NOISE_FLAT_SHARE = 0.3
#: The live view takes this many times a frame's measured noise energy off its focus
#: score: the estimate runs a few per cent low on a preview shrunk by a fractional factor
#: (320 -> 256 px), and a noisy blank frame must not look in focus.
PREVIEW_NOISE_MARGIN = 1.1
#: The median absolute value of a zero-mean Gaussian, in standard deviations.
_MAD_TO_SIGMA = 0.6745


class RetakeReason(StrEnum):
    """Why a photo was refused, in the order they are checked and reported."""

    TOO_DARK = "too-dark"
    TOO_BRIGHT = "too-bright"
    EMPTY_FIELD = "empty-field"
    NO_STAINED_CELLS = "no-stained-cells"
    OUT_OF_FOCUS = "out-of-focus"
    #: The red cells measure a scale the rig's calibration does not allow.
    SCALE_CHANGED = "scale-changed"


@dataclass(frozen=True)
class QualityMetrics:
    """The gate's measurements of one photo (see the module docstring)."""

    mean_luma: float
    clipped_high: float
    clipped_low: float
    focus: float
    stain: float
    content: float
    #: None when the photo's scale is not known (whole-field mode, no red cells).
    sharpness: float | None = None

    def to_json(self) -> dict[str, float]:
        """The metrics rounded for a record (sharpness only when it was measured)."""
        return {k: round(float(v), 5) for k, v in asdict(self).items() if v is not None}


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
    # Sharpness, where the scale is known: the 58 ALL-IDB1 training and validation
    # fields, sharp >= 0.243 (Im016_1), blurred with sigma 0.26 um (3 px of a 5 MP
    # ALL-IDB1 still) <= 0.168 (Im086_0). Eyepiece-simulated (realistic) ALL-IDB1
    # validation fields: 0.23-0.36.
    min_sharpness: float = 0.2

    def check(self, m: QualityMetrics) -> list[RetakeReason]:
        """The reasons this photo must be retaken, empty when it passes."""
        reasons: list[RetakeReason] = []
        if m.mean_luma < self.min_mean_luma or m.clipped_low > self.max_clipped_low:
            reasons.append(RetakeReason.TOO_DARK)
        if m.mean_luma > self.max_mean_luma or m.clipped_high > self.max_clipped_high:
            reasons.append(RetakeReason.TOO_BRIGHT)
        if reasons:
            return reasons  # content, stain and focus cannot be judged on a bad exposure
        if m.content < self.min_content:
            reasons.append(RetakeReason.EMPTY_FIELD)
        elif m.stain < self.min_stain:
            reasons.append(RetakeReason.NO_STAINED_CELLS)
        if m.sharpness is not None:
            if m.sharpness < self.min_sharpness:
                reasons.append(RetakeReason.OUT_OF_FOCUS)
        elif m.focus < self.min_focus:
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


def working_copy(
    rgb: np.ndarray, long_side: int = WORKING_LONG_SIDE, *, float32: bool = False
) -> np.ndarray:
    """Resize an image so its long side is `long_side` (aspect kept; dtype kept, or float32).

    With `float32` a shrunk copy is the area average in float32 (`_area_float32`: halved
    exactly first, as `preprocess.shrink_area`, then not re-quantised), without holding
    the full-size photo as float32 (60 MB for 5 MP).
    """
    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if float32 and scale < 1.0 and rgb.dtype != np.float32:
        return _area_float32(rgb, size)
    out = rgb.astype(np.float32) if float32 else rgb
    if scale == 1.0:
        return out
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized: np.ndarray = cv2.resize(out, size, interpolation=interp)
    return resized


#: Rows of the photo converted to float32 at a time by `_area_float32` (a multiple of
#: every power of two `halvings` can ask for, so each strip halves exactly).
_STRIP_ROWS = 128


def _area_float32(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The area average of a uint8 `img` as float32 at `size`, without a float32 copy of it.

    As `preprocess.shrink_area` does: halved exactly, then one fractional area resize.
    The first halving is in uint8 (OpenCV's integer fast path: 3 ms for 5 MP, where a
    float32 copy alone takes 15 ms); its rounding, at most half a level, is averaged
    over 25 or more of its pixels by the later steps. The rest are in float32 (never
    re-quantised), a strip of rows at a time, so a 12 MP still never has a float32 copy
    (150 MB). 4-5x faster than one fractional area resize of the photo in float32.
    """
    k = halvings(img.shape[1], img.shape[0], size)
    if k:
        img = halve(img)
        k -= 1
    step = 1 << k
    rows, cols = img.shape[0] // step * step, img.shape[1] // step * step
    parts = [
        halve(img[y : min(y + _STRIP_ROWS, rows), :cols].astype(np.float32), k)
        for y in range(0, rows, _STRIP_ROWS)
    ]
    out: np.ndarray = cv2.resize(np.concatenate(parts), size, interpolation=cv2.INTER_AREA)
    return out


def focus_score(gray: np.ndarray, *, less_noise: float = 0.0) -> float:
    """Sharpness of a float32 grey image: Laplacian variance over intensity variance, x1000.

    Args:
        gray: the working copy's luma.
        less_noise: subtract this many times the noise's own Laplacian energy
            (`noise_energy`) first; 0: as measured, noise and all.
    """
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=1)
    energy = float(lap.var())
    if less_noise:
        energy = max(0.0, energy - less_noise * noise_energy(gray, lap))
    return 1000.0 * energy / max(float(gray.var()), _FOCUS_VAR_FLOOR)


def preview_focus(rgb: np.ndarray) -> float:
    """The live view's focus score: `focus` less `PREVIEW_NOISE_MARGIN` x the frame's own
    noise energy (see the module)."""
    return focus_score(_luma(working_copy(rgb, float32=True)), less_noise=PREVIEW_NOISE_MARGIN)


def noise_energy(grey: np.ndarray, lap: np.ndarray | None = None) -> float:
    """The Laplacian energy sensor noise alone gives `grey`, measured in its flattest parts.

    The flattest `NOISE_FLAT_SHARE` of pixels (the smallest gradient once smoothed by a
    Gaussian of 2 px: the glass between cells, the middle of red cells) hold nothing but
    noise at this scale, so the spread of the Laplacian there is the noise's; the median
    absolute value, over 0.6745, is that spread for Gaussian noise, unmoved by the few
    pixels where a faint edge crosses. Measured rather than modelled: JPEG and a
    camera's own processing make noise that is not white, and a shrunk copy's noise is
    not the original's over the shrink's area.
    """
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1) if lap is None else lap
    smooth = cv2.GaussianBlur(grey, (0, 0), 2.0)
    grad = cv2.magnitude(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
    grad, lap = grad[1:-1, 1:-1], lap[1:-1, 1:-1]  # the border ring sees its reflection
    flat = grad <= np.quantile(grad, NOISE_FLAT_SHARE)
    return float(np.median(np.abs(lap[flat])) / _MAD_TO_SIGMA) ** 2


def _luma(small: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.299 * small[:, :, 0] + 0.587 * small[:, :, 1] + 0.114 * small[:, :, 2]
    return out


def _inside(fov: FieldOfView | None, shape: tuple[int, int], erode: int) -> np.ndarray | None:
    """The field's mask at a working copy's size, `erode` px in from a stop's edge."""
    if fov is None or not fov.stop:
        return None
    mask: np.ndarray = fov.mask(shape).astype(np.uint8)
    if erode > 0:
        mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    return mask.astype(bool) if mask.any() else None


def _laplacian_energy(grey: np.ndarray, inside: np.ndarray | None) -> float:
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
    return float(lap[inside].var() if inside is not None else lap.var())


def sharpness(rgb: np.ndarray, px_per_um: float, fov: FieldOfView | None = None) -> float:
    """Laplacian energy at `SHARP_PX_PER_UM` to twice that (the photo binned by a whole
    factor) over that at half of it (see the module)."""
    if fov is not None and fov.stop:
        cx, cy, half = fov.cx, fov.cy, fov.radius / np.sqrt(2)
    else:
        cx, cy, half = rgb.shape[1] / 2, rgb.shape[0] / 2, float(max(rgb.shape[:2]))
    # The middle of the field, at most SHARP_WINDOW px of the binned copy across: focus
    # is one setting for the whole field, and a 5 MP still's every pixel costs time.
    half = min(half, SHARP_WINDOW / 2 * max(1, int(px_per_um / SHARP_PX_PER_UM)))
    x0, y0 = max(0, round(cx - half)), max(0, round(cy - half))
    rgb = rgb[y0 : round(cy + half), x0 : round(cx + half)]
    fov = None
    h, w = rgb.shape[:2]
    # Whole k x k pixel bins: a fractional shrink (say by 0.95) averages neighbours
    # unevenly and takes away the fine detail it is meant to measure.
    k = max(1, int(px_per_um / SHARP_PX_PER_UM))
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)
    if k > 1:
        grey = cv2.resize(grey, (max(8, w // k), max(8, h // k)), interpolation=cv2.INTER_AREA)
    fine = grey.astype(np.float32)
    coarse = cv2.resize(
        fine,
        (max(4, fine.shape[1] // 2), max(4, fine.shape[0] // 2)),
        interpolation=cv2.INTER_AREA,
    )
    e_fine = _laplacian_energy(fine, _inside(fov, fine.shape[:2], 3))
    e_coarse = _laplacian_energy(coarse, _inside(fov, coarse.shape[:2], 2))
    return e_fine / max(e_coarse, 1e-6)


def measure(
    rgb: np.ndarray,
    *,
    fov: FieldOfView | None = None,
    taken: np.ndarray | None = None,
    px_per_um: float | None = None,
) -> QualityMetrics:
    """The gate's metrics for an HxWx3 uint8 RGB image of any size.

    Args:
        rgb: the photo (flat-fielded when it was: stain, content and focus).
        fov: its field; None or no stop: the whole frame.
        taken: the photo as taken, for exposure (default `rgb`).
        px_per_um: its scale, when known: adds `sharpness`.
    """
    small = working_copy(rgb, float32=True)
    inside = _inside(fov, small.shape[:2], 2)
    luma = _luma(small)
    raw = small if taken is None else working_copy(taken, float32=True)
    raw_luma = _luma(raw)
    if inside is not None:
        luma_in, raw_in, px = luma[inside], raw_luma[inside], small[inside]
    else:
        luma_in, raw_in, px = luma.ravel(), raw_luma.ravel(), small.reshape(-1, 3)
    n = float(luma_in.size)
    median = float(np.median(luma_in))
    chroma = px.max(axis=1) - px.min(axis=1)
    stained = (chroma > _CHROMA_DELTA) & (px[:, 1] < np.maximum(px[:, 0], px[:, 2]))
    if inside is None:
        focus = focus_score(luma)
    else:
        focus = (
            1000.0
            * _laplacian_energy(luma, _inside(fov, small.shape[:2], 4))
            / max(float(luma_in.var()), _FOCUS_VAR_FLOOR)
        )
    return QualityMetrics(
        mean_luma=float(raw_in.mean()),
        clipped_high=float(np.count_nonzero(raw_in >= 250.0)) / n,
        clipped_low=float(np.count_nonzero(raw_in <= 5.0)) / n,
        focus=focus,
        stain=float(np.count_nonzero(stained)) / n,
        content=float(np.count_nonzero(np.abs(luma_in - median) > _CONTENT_DELTA)) / n,
        # Below SHARP_PX_PER_UM the photo's own pixels are coarser than the detail the
        # measure looks for (224x224 kaggle-all fields, 2.1 px/um): `focus` judges those.
        sharpness=(
            None
            if px_per_um is None or px_per_um < SHARP_PX_PER_UM
            else sharpness(rgb, px_per_um, fov)
        ),
    )


def assess(
    rgb: np.ndarray,
    thresholds: QualityThresholds | None = None,
    *,
    fov: FieldOfView | None = None,
    taken: np.ndarray | None = None,
    px_per_um: float | None = None,
) -> QualityResult:
    """Measure a photo and check it against the thresholds (the defaults if None)."""
    metrics = measure(rgb, fov=fov, taken=taken, px_per_um=px_per_um)
    reasons = (thresholds or QualityThresholds()).check(metrics)
    return QualityResult(metrics, tuple(reasons))
