"""One photo's analysis: decode, quality gate, model, decision, with per-stage timings.

Shared by the daemon and `leukoscope classify`, so both answer the same way.

Steps: the field (`field_of_view.prepare_field`: the eyepiece's field stop found, and
vignetting and the lamp's colour divided out when the photo needs it); in cells mode the
scale (the red-cell ruler, checked against the rig's calibration); the quality gate,
inside the field; then the bundle's analyser (`analysis.analysers`, one per analysis
mode) judges the flat-fielded photo. A whole-field bundle classifies the resized photo. A
cells bundle finds, crops and classifies every white cell and scores the slide; its
`Analysis.cells` is the `CellReport` whose `to_json()` records and the API carry:

    {"px_per_um": 5.87, "scale_source": "red-cells" | "given", "image_size": [w, h],
     "n_found": 7, "n_classified": 7, "n_blasts": 2, "top_k_mean": 0.61, "density": 1.12,
     "blast_fraction": 0.29, "score": 0.65, "cell_cut": 0.5,
     "cells": [{"x": 301.2, "y": 88.0, "box": [x0, y0, x1, y1], "p_blast": 0.93,
                "blast": true, "clump": false}, ...]}

In both modes `p_leukemia` is the number the bundle's thresholds judge (the slide score
in cells mode).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from leukoscope.analysis.analysers import CellAnalyser, Outcome
from leukoscope.analysis.cells import RETAKE_MESSAGES, CellReport, CellRetake
from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.detection import SCALE_MAX_SIDE, ScaleEstimate, estimate_scale
from leukoscope.analysis.field_of_view import prepare_field
from leukoscope.analysis.preprocess import halve
from leukoscope.analysis.quality import (
    SHARP_PX_PER_UM,
    QualityResult,
    QualityThresholds,
    RetakeReason,
    assess,
)
from leukoscope.config import CameraConfig
from leukoscope.core.errors import ImageError
from leukoscope.core.imageio import load_image
from leukoscope.model.bundle import Bundle

#: A measured scale further than this from the calibration (relative) is a retake.
DEFAULT_SCALE_TOLERANCE = 0.15
#: A calibrated rig's stills are decoded at half size only when half the calibration is
#: at least this many times the scale the model's crops need (`decode_reduction`): the
#: crops' pixels follow the calibration, but the cells' detail follows the true scale,
#: which a calibration from red cells may overstate by a few per cent (the ruler is held
#: to 5% of the true scale), and the cells must not reach the model coarser than it saw
#: them in training.
HALF_DECODE_MARGIN = 1.05


@dataclass(frozen=True)
class Rig:
    """What a technician calibrated on this microscope and camera (`leukoscope calibrate`).

    `px_per_um` is used for every photo of the rig; each photo's red cells still measure
    their own scale, and one that differs by more than `tolerance` (a share) is a retake
    ("zoom or objective changed?"). Where the red cells cannot be measured the
    calibration is used. `reference` is the blank-field photo that flat-fields every photo.
    """

    px_per_um: float | None = None
    tolerance: float = DEFAULT_SCALE_TOLERANCE
    reference: np.ndarray | None = None
    _reduced: dict[int, Rig] = field(default_factory=dict, compare=False, repr=False)

    def reduced(self, factor: int) -> Rig:
        """The rig as stills decoded at 1/`factor` of full size see it: its scale divided
        by `factor`, its blank-field reference shrunk once to that size (kept)."""
        if factor == 1:
            return self
        if factor not in self._reduced:
            ref = self.reference
            if ref is not None:
                size = (-(-ref.shape[1] // factor), -(-ref.shape[0] // factor))
                ref = cv2.resize(ref, size, interpolation=cv2.INTER_AREA)
            scale = None if self.px_per_um is None else self.px_per_um / factor
            self._reduced[factor] = Rig(scale, self.tolerance, ref)
        return self._reduced[factor]


def load_rig(camera: CameraConfig) -> Rig:
    """The rig's calibration from the config's [camera] table (reads the blank-field photo)."""
    reference = None if camera.blank_field is None else load_image(camera.blank_field)
    return Rig(camera.px_per_um, camera.scale_tolerance, reference)


@dataclass
class Analysis:
    """The outcome for one photo: a verdict (retake when the gate refused it)."""

    verdict: Verdict
    quality: QualityResult | None
    p_leukemia: float | None = None
    probabilities: dict[str, float] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: Cells mode: what cell analysis found (None in whole-field mode, when the gate
    #: refused the photo, or when no scale could be found).
    cells: CellReport | None = None
    #: Cells mode: why cell analysis asks for a retake (after the gate's own reasons).
    cell_retake: CellRetake | None = None

    @property
    def retake_reasons(self) -> list[str]:
        """The gate's reasons, then cell analysis's, as strings for records and JSON."""
        reasons = [] if self.quality is None else [r.value for r in self.quality.reasons]
        if self.cell_retake is not None:
            reasons.append(self.cell_retake.value)
        return reasons

    @property
    def retake_message(self) -> str | None:
        """Cell analysis's sentence for the technician ("no white cells in this field: ...")."""
        return None if self.cell_retake is None else RETAKE_MESSAGES[self.cell_retake]


def decode_size(bundle: Bundle) -> tuple[int, int] | None:
    """The smallest (width, height) a still may be decoded at for the gate and the model.

    The bundle's analyser says (`gated_size`): whole-field, the larger of the
    preprocessing's first resize and the gate's working size; cells, None (full
    resolution, for the detail of small nuclei).
    """
    return bundle.analyser.gated_size


def decode_reduction(bundle: Bundle, rig: Rig | None) -> int:
    """How many times smaller than full size a still may be decoded for this rig: 2 for a
    cells bundle on a calibrated rig whose half scale still fills the model's crops (with
    `HALF_DECODE_MARGIN`), else 1. The caller analyses it with `rig.reduced(...)`.

    A 5 MP still at 12 px/um: 144 px crops at half size, decoded in about two thirds of
    the time, and a quarter of the pixels for every later stage. Without a calibration the
    scale is only known after decoding, so stills are decoded at full size; so are they
    where the gate's focus measure would change with halving (see below).
    """
    analyser = bundle.analyser
    if not isinstance(analyser, CellAnalyser) or rig is None or rig.px_per_um is None:
        return 1
    scale = rig.px_per_um
    fills_crops = scale / 2 >= analyser.min_px_per_um * HALF_DECODE_MARGIN
    # The gate's `sharpness` bins a photo by a whole factor of its scale and its limit
    # holds at that binned scale: halving is safe only where the half still's bin is
    # half the full still's (the same binned pixels, sharpness equal to 0.001 on ALL-IDB1
    # fields). Elsewhere the measure moves to a finer scale: at 11.8 px/um (bins of 3,
    # then 1) 16 of 47 ALL-IDB1 fields blurred by 3 px passed the gate when halved.
    same_focus_scale = _sharpness_bin(scale) == 2 * _sharpness_bin(scale / 2)
    return 2 if fills_crops and same_focus_scale else 1


def _sharpness_bin(px_per_um: float) -> int:
    """The whole factor the gate's `sharpness` bins a photo of this scale by (its rule)."""
    return max(1, int(px_per_um / SHARP_PX_PER_UM))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


def analyse(
    rgb: np.ndarray,
    bundle: Bundle,
    thresholds: QualityThresholds | None,
    *,
    gate: bool = True,
    px_per_um: float | None = None,
    rig: Rig | None = None,
    concurrent: bool = True,
) -> Analysis:
    """Gate a decoded RGB photo, then (if it passed) classify it.

    Args:
        rgb: HxWx3 uint8 RGB (already decoded; decoding is the caller's stage).
        bundle: the loaded model bundle.
        thresholds: the quality gate's limits (defaults if None).
        gate: False skips the gate's refusals (metrics are still measured).
        px_per_um: cells mode: a scale to use as it is (pixels per micrometre of `rgb`),
            unchecked. Ignored in whole-field mode.
        rig: the rig's calibration: its scale, checked against each photo's red cells,
            and its blank-field reference.
        concurrent: run the quality gate on another thread while the model's analysis
            runs (the same answers; False: one after the other, the analysis only when
            the gate passed).
    """
    rig = rig or Rig()
    t0 = time.perf_counter()
    prepared = prepare_field(rgb, rig.reference)
    timings = {"field": _ms(t0)}
    t0 = time.perf_counter()
    scale, changed = None, False
    if bundle.analyser.needs_scale:
        scale, changed = _scale(prepared.rgb, px_per_um, rig)
        timings["scale"] = _ms(t0)

    def gate_photo() -> QualityResult:
        t0 = time.perf_counter()
        result = assess(
            prepared.rgb,
            thresholds,
            fov=prepared.fov,
            taken=rgb if prepared.corrected else None,
            px_per_um=None if scale is None else scale.px_per_um,
        )
        timings["quality"] = _ms(t0)
        return result

    # The gate and the model's analysis need nothing of each other: on a second core the
    # gate runs while the analysis does (the gate's answer is the same; only when it
    # refuses is the analysis's work thrown away). Not when the refusal is already known.
    runs_model = not (bundle.analyser.needs_scale and scale is None) and not (gate and changed)
    outcome: Outcome | None = None
    failed: Exception | None = None
    if concurrent and runs_model:
        pending = _gate_pool().submit(gate_photo)
        try:
            outcome = bundle.analyser.analyse(prepared.rgb, scale=scale, fov=prepared.fov)
        except Exception as exc:  # raised below, unless the gate refuses the photo anyway
            failed = exc
        quality = pending.result()
    else:
        quality = gate_photo()
        if runs_model and (quality.ok or not gate):
            outcome = bundle.analyser.analyse(prepared.rgb, scale=scale, fov=prepared.fov)
    if changed:
        quality = replace(quality, reasons=(*quality.reasons, RetakeReason.SCALE_CHANGED))
    if gate and not quality.ok:
        return Analysis(Verdict.RETAKE, quality, timings_ms=timings)
    if failed is not None:
        raise failed
    if outcome is None:  # cells mode without a scale
        return Analysis(
            Verdict.RETAKE, quality, timings_ms=timings, cell_retake=CellRetake.NO_SCALE
        )
    timings.update(outcome.timings_ms)
    return Analysis(
        outcome.verdict,
        quality,
        outcome.p_leukemia,
        outcome.probabilities,
        timings,
        cells=outcome.cells,
        cell_retake=outcome.cell_retake,
    )


_GATE_POOL: ThreadPoolExecutor | None = None


def _gate_pool() -> ThreadPoolExecutor:
    """The one worker thread the quality gate runs on (started on first use)."""
    global _GATE_POOL
    if _GATE_POOL is None:
        _GATE_POOL = ThreadPoolExecutor(1, thread_name_prefix="quality-gate")
    return _GATE_POOL


def check_halvings(width: int, height: int) -> int:
    """How many exact halvings bring a photo's long side to `SCALE_MAX_SIDE` or less: the
    copy a calibrated rig's red cells are measured on (`_scale`)."""
    k = 0
    while max(width, height) >> k > SCALE_MAX_SIDE:
        k += 1
    return k


def _scale(rgb: np.ndarray, px_per_um: float | None, rig: Rig) -> tuple[ScaleEstimate | None, bool]:
    """The scale to analyse at, and whether the red cells contradict the calibration."""
    if px_per_um is not None:
        return ScaleEstimate(float(px_per_um), 0, "given"), False
    # With a calibration the red cells only check it (against a tolerance of 15%: a changed
    # zoom or objective), so they are measured on the photo halved exactly (2x2 means, 2-3
    # ms) instead of on an area copy of 1400 px (about 40 ms of a 5 MP still), which the
    # scale the analysis uses needs when nothing was calibrated.
    k = 0 if rig.px_per_um is None else check_halvings(rgb.shape[1], rgb.shape[0])
    try:
        measured: ScaleEstimate | None = estimate_scale(halve(rgb, k) if k else rgb)
    except ImageError:
        measured = None
    if rig.px_per_um is None:
        return measured, False
    if measured is not None and k:
        # halve() drops an odd last row or column: the copy's own size says its scale.
        measured = replace(
            measured, px_per_um=measured.px_per_um * rgb.shape[1] / (rgb.shape[1] >> k)
        )
    calibrated = ScaleEstimate(rig.px_per_um, 0, "given")
    if measured is None:
        return calibrated, False
    off = abs(measured.px_per_um / rig.px_per_um - 1.0)
    return calibrated, off > rig.tolerance
