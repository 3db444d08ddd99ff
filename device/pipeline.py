"""One photo's analysis: decode, quality gate, model, decision, with per-stage timings.

Shared by the daemon and `leukoscope classify`, so both answer the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from leukoscope.bundle import Bundle
from leukoscope.decision import Verdict
from leukoscope.quality import WORKING_LONG_SIDE, QualityResult, QualityThresholds, assess


@dataclass
class Analysis:
    """The outcome for one photo: a verdict (retake when the gate refused it)."""

    verdict: Verdict
    quality: QualityResult | None
    p_leukemia: float | None = None
    probabilities: dict[str, float] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def retake_reasons(self) -> list[str]:
        """The gate's reasons, as strings for records and JSON."""
        return [] if self.quality is None else [r.value for r in self.quality.reasons]


def decode_size(bundle: Bundle) -> tuple[int, int]:
    """The smallest (width, height) a still may be decoded at for the gate and the model."""
    w, h = bundle.manifest.preprocess.resize
    return (max(w, WORKING_LONG_SIDE), max(h, WORKING_LONG_SIDE))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


def analyse(
    rgb: np.ndarray, bundle: Bundle, thresholds: QualityThresholds | None, *, gate: bool = True
) -> Analysis:
    """Gate a decoded RGB photo, then (if it passed) classify it.

    Args:
        rgb: HxWx3 uint8 RGB (already decoded; decoding is the caller's stage).
        bundle: the loaded model bundle.
        thresholds: the quality gate's limits (defaults if None).
        gate: False skips the gate's refusals (metrics are still measured).
    """
    t0 = time.perf_counter()
    quality = assess(rgb, thresholds)
    timings = {"quality": _ms(t0)}
    if gate and not quality.ok:
        return Analysis(Verdict.RETAKE, quality, timings_ms=timings)
    t0 = time.perf_counter()
    pred = bundle.predict(rgb)
    timings["inference"] = _ms(t0)
    return Analysis(pred.verdict, quality, pred.p_leukemia, pred.probabilities, timings)
