"""A rig's scale, measured once by a technician: from a stage micrometer or from red cells.

A Pi camera on an eyepiece has a scale (pixels per micrometre) set by the objective, the
eyepiece, the camera's lens and its zoom; it stays put until one of them changes.

- `micrometer_scale()`: a photo of a stage micrometer (dark lines `spacing_um` apart,
  10 um on the usual 1 mm / 100 slide). The lines' period is found from the strongest
  peak of the photo's spectrum (its direction is the lines' normal, so any rotation
  works); the photo is then turned so the lines stand upright, averaged down the lines
  into one profile, and every line's centre is located (a parabola through each dip).
  A straight line through centre against line number gives the period: tens of lines
  make it far more exact than any single gap.
- `smear_scale()`: the red-cell ruler (`detection.estimate_scale`) on several fields of
  a normal smear, each through `prepare_field` first; the median, and the spread
  (interquartile range over median) that says how far to trust it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from leukoscope.analysis.detection import estimate_scale
from leukoscope.analysis.field_of_view import find_field, prepare_field
from leukoscope.core.errors import ImageError

#: The micrometer photo is measured on a copy no larger than this on its long side.
MICROMETER_SIDE = 1600
#: The fewest lines a micrometer's period is fitted to.
MIN_LINES = 5
#: The fewest smear fields a calibration is taken from.
MIN_FIELDS = 3


@dataclass(frozen=True)
class ScaleCalibration:
    """A rig's measured scale and what it rests on."""

    px_per_um: float
    #: Micrometer: the fit's relative standard error; smear: interquartile range / median.
    spread: float
    #: Lines fitted (micrometer) or fields measured (smear).
    n: int
    method: str  # "micrometer" or "red-cells"


def _grey_field(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A float grey copy (long side <= MICROMETER_SIDE), its field mask and the shrink factor."""
    h, w = rgb.shape[:2]
    f = min(1.0, MICROMETER_SIDE / max(h, w))
    small = (
        rgb
        if f == 1.0
        else cv2.resize(rgb, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    )
    grey = cv2.cvtColor(np.ascontiguousarray(small[..., :3]), cv2.COLOR_RGB2GRAY)
    fov = find_field(rgb)
    mask = fov.mask(grey.shape[:2])
    if fov.stop:  # keep clear of the stop's soft rim
        mask = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    return grey.astype(np.float32), mask, f


def _dominant_frequency(grey: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """The strongest periodic pattern: its angle (radians, of the lines' normal) and period (px)."""
    h, w = grey.shape
    level = float(grey[mask].mean())
    centred = np.where(mask, grey - level, 0.0).astype(np.float32)
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    spectrum = np.abs(np.fft.rfft2(centred * window))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    radius = np.hypot(fx, fy)
    # Ignore the slow shading (periods above a third of the frame) and the pixel grid.
    spectrum[(radius < 3.0 / min(h, w)) | (radius > 0.4)] = 0
    iy, ix = np.unravel_index(int(np.argmax(spectrum)), spectrum.shape)
    f_y, f_x = float(fy[iy, 0]), float(fx[0, ix])
    if f_x == 0 and f_y == 0:
        raise ImageError("no lines found: is this a stage micrometer?")
    # Thin lines have strong harmonics: the fundamental is the lowest of f/k still clearly
    # present (a sine grating has none, a comb of lines has every one).
    peak = float(spectrum[iy, ix])
    for k in (4, 3, 2):
        ky, kx = round(f_y / k * h) % h, round(f_x / k * w)
        near = spectrum[max(0, ky - 1) : ky + 2, max(0, kx - 1) : kx + 2]
        if near.size and float(near.max()) > 0.2 * peak:
            f_y, f_x = f_y / k, f_x / k
            break
    return float(np.arctan2(f_y, f_x)), 1.0 / float(np.hypot(f_x, f_y))


def micrometer_scale(rgb: np.ndarray, spacing_um: float = 10.0) -> ScaleCalibration:
    """Pixels per micrometre of `rgb` from a stage micrometer's lines `spacing_um` apart.

    Raises:
        ImageError: fewer than MIN_LINES lines could be located.
    """
    if spacing_um <= 0:
        raise ValueError(f"spacing_um must be positive, got {spacing_um}")
    grey, mask, f = _grey_field(rgb)
    angle, period0 = _dominant_frequency(grey, mask)
    h, w = grey.shape
    # Turn the photo so the lines' normal lies along x: the lines then stand upright.
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), float(np.degrees(angle)), 1.0)
    upright = cv2.warpAffine(grey, turn, (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(mask.astype(np.uint8), turn, (w, h), flags=cv2.INTER_NEAREST)
    counts = inside.sum(axis=0)
    profile = (upright * inside).sum(axis=0) / np.maximum(counts, 1)
    cols = np.flatnonzero(counts >= 0.25 * max(1, int(counts.max())))
    if cols.size < 3 * period0:
        raise ImageError("too little of the micrometer in view to measure its lines")
    prof = cv2.GaussianBlur(
        profile[cols[0] : cols[-1] + 1].astype(np.float32).reshape(1, -1), (0, 0), period0 / 10
    ).ravel()
    centres = _dips(prof, period0)
    if len(centres) < MIN_LINES:
        raise ImageError(f"only {len(centres)} micrometer lines located (need {MIN_LINES})")
    index = np.round((centres - centres[0]) / period0)
    slope, intercept = np.polyfit(index, centres, 1)
    resid = centres - (slope * index + intercept)
    stderr = float(np.sqrt(resid.var() / max(1.0, float(((index - index.mean()) ** 2).sum()))))
    period = float(slope) / f
    return ScaleCalibration(period / spacing_um, stderr / float(slope), len(centres), "micrometer")


def _dips(profile: np.ndarray, period: float) -> np.ndarray:
    """Sub-pixel centres of the profile's dark lines, about `period` apart."""
    half = max(1, round(period * 0.4))
    lo = cv2.erode(profile.reshape(1, -1), np.ones((1, 2 * half + 1), np.uint8)).ravel()
    hi = cv2.dilate(profile.reshape(1, -1), np.ones((1, 2 * half + 1), np.uint8)).ravel()
    depth = float(np.median(hi - lo))
    out = []
    for i in range(1, len(profile) - 1):
        if profile[i] == lo[i] and hi[i] - profile[i] > 0.5 * depth > 0:
            a, b, c = float(profile[i - 1]), float(profile[i]), float(profile[i + 1])
            den = a - 2 * b + c
            out.append(i + (0.5 * (a - c) / den if den > 0 else 0.0))
    dips = np.asarray(out)
    if dips.size:  # one centre per plateau
        dips = dips[np.concatenate([[True], np.diff(dips) > 0.5 * period])]
    return dips


def smear_scale(photos: Iterable[np.ndarray]) -> ScaleCalibration:
    """The median red-cell scale of several fields of a normal smear, and its spread.

    Raises:
        ImageError: fewer than MIN_FIELDS fields could be measured.
    """
    values = []
    tried = 0
    for rgb in photos:
        tried += 1
        try:
            values.append(estimate_scale(prepare_field(rgb).rgb).px_per_um)
        except ImageError:
            continue
    if len(values) < MIN_FIELDS:
        raise ImageError(
            f"the red cells could be measured in {len(values)} of {tried} fields "
            f"(need {MIN_FIELDS}): take fields with separate red cells"
        )
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return ScaleCalibration(float(med), float((q3 - q1) / med), len(values), "red-cells")
