"""The quality gate on its own thread, beside the model's analysis: the same answers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from leukoscope.analysis.analysers import CellAnalyser
from leukoscope.analysis.decision import Verdict
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import Bundle, load_bundle
from leukoscope.pipeline import Analysis, Rig, analyse

PX_PER_UM = 4.0


@pytest.fixture(scope="module")
def sharp() -> np.ndarray:
    return make_smear(1200, 900, seed=6, px_per_um=PX_PER_UM, n_wbc=5, n_blasts=3).image


@pytest.fixture(scope="module")
def bundle(session_cells_bundle: Path) -> Bundle:
    return load_bundle(session_cells_bundle)


def _answer(a: Analysis) -> tuple[object, ...]:
    cells = None if a.cells is None else a.cells.to_json()
    metrics = None if a.quality is None else a.quality.metrics.to_json()
    return (a.verdict, a.retake_reasons, a.p_leukemia, cells, metrics)


def test_the_gate_beside_the_analysis_gives_the_same_answers(
    sharp: np.ndarray, bundle: Bundle
) -> None:
    dark = (sharp.astype(np.float32) * 0.18).astype(np.uint8)
    cases = [
        (sharp, Rig()),
        (sharp, Rig(px_per_um=PX_PER_UM)),
        (sharp, Rig(px_per_um=PX_PER_UM * 1.5)),  # a changed zoom: a retake
        (dark, Rig(px_per_um=PX_PER_UM)),  # too dark: the gate refuses, the model ran
    ]
    seen = set()
    for rgb, rig in cases:
        together = analyse(rgb, bundle, None, rig=rig)
        apart = analyse(rgb, bundle, None, rig=rig, concurrent=False)
        assert _answer(together) == _answer(apart)
        assert "quality" in together.timings_ms
        seen.add(tuple(together.retake_reasons))
    assert len(seen) == 3  # judged, scale-changed, and the gate's own refusal


def test_a_photo_the_gate_refuses_is_a_retake_even_if_the_model_fails(
    sharp: np.ndarray, session_cells_bundle: Path
) -> None:
    broken = load_bundle(session_cells_bundle)

    def fails(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("the interpreter failed")

    assert isinstance(broken.analyser, CellAnalyser)
    broken.analyser = dataclasses.replace(broken.analyser, blast_probabilities=fails)
    dark = (sharp.astype(np.float32) * 0.18).astype(np.uint8)
    refused = analyse(dark, broken, None, rig=Rig(px_per_um=PX_PER_UM))
    assert refused.verdict is Verdict.RETAKE and refused.cells is None
    assert refused.retake_reasons == ["too-dark"]
    with pytest.raises(RuntimeError, match="interpreter failed"):  # a photo it passes
        analyse(sharp, broken, None, rig=Rig(px_per_um=PX_PER_UM))
