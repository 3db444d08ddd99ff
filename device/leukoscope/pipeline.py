"""One photo's analysis: decode, quality gate, model, decision, with per-stage timings.

Shared by the daemon and `leukoscope classify`, so both answer the same way.

The quality gate runs first; then the bundle's analyser (`analysis.analysers`, one per
analysis mode) judges the photo. A whole-field bundle classifies the resized photo. A
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
from dataclasses import dataclass, field

import numpy as np

from leukoscope.analysis.cells import RETAKE_MESSAGES, CellReport, CellRetake
from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.quality import QualityResult, QualityThresholds, assess
from leukoscope.model.bundle import Bundle


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


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


def analyse(
    rgb: np.ndarray,
    bundle: Bundle,
    thresholds: QualityThresholds | None,
    *,
    gate: bool = True,
    px_per_um: float | None = None,
) -> Analysis:
    """Gate a decoded RGB photo, then (if it passed) classify it.

    Args:
        rgb: HxWx3 uint8 RGB (already decoded; decoding is the caller's stage).
        bundle: the loaded model bundle.
        thresholds: the quality gate's limits (defaults if None).
        gate: False skips the gate's refusals (metrics are still measured).
        px_per_um: cells mode: the calibrated scale of `rgb` (pixels per micrometre),
            or None to measure it from the red cells. Ignored in whole-field mode.
    """
    t0 = time.perf_counter()
    quality = assess(rgb, thresholds)
    timings = {"quality": _ms(t0)}
    if gate and not quality.ok:
        return Analysis(Verdict.RETAKE, quality, timings_ms=timings)
    outcome = bundle.analyser.analyse(rgb, px_per_um=px_per_um)
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
