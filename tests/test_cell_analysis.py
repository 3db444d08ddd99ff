"""Cell-mode analysis of one photo: scale, cells, one batched classification, the decision.

A stand-in classifier (no TensorFlow) scores each crop by how much nucleus stain it
holds, so these tests run anywhere and check the pipeline around the model: which cells
are classified, how the slide is decided, what is reported, and when to retake.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from leukoscope.analysis import cells as cellmode
from leukoscope.analysis.cells import (
    CellSettings,
    analyse_cells,
    cell_box,
    field_area_um2,
    slide_features,
    slide_score,
    white_balance,
)
from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.detection import WhiteCell, detect_white_cells
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import Bundle
from leukoscope.model.classifier import TFLiteClassifier
from leukoscope.model.manifest import parse_manifest
from leukoscope.pipeline import analyse, decode_size
from tests.helpers import TINY_CELL_PARAMS

SETTINGS = CellSettings(max_cells=256, bias=-2.0, w_top_k=4.0, w_fraction=0.5)


def cells_manifest(settings: CellSettings = SETTINGS, **top: Any) -> dict[str, Any]:
    """A valid cells manifest (its file hashes are not checked by parse_manifest)."""
    raw: dict[str, Any] = {
        "format_version": 1,
        "name": "fake-cells",
        "version": "1",
        "architecture": "stand-in",
        "analysis_mode": "cells",
        "labels": ["other", "blast"],
        "positive_label": "blast",
        "input": {"width": 64, "height": 64, "channels": 3},
        "preprocess": TINY_CELL_PARAMS.to_json(),
        "thresholds": {"low": 0.4, "high": 0.6},
        "cells": dataclasses.asdict(settings),
        "files": {"model.tflite": "0" * 64, "golden/00.png": "1" * 64},
        "golden": {"tolerance": 0.02, "cases": [{"file": "golden/00.png", "p_leukemia": 0.5}]},
        "training": {},
        "metrics": {},
    }
    raw.update(top)
    return raw


class StainClassifier:
    """A stand-in cell classifier: p(blast) grows with the crop's purple stain.

    Records the batch sizes it was called with (the device must call it once per photo).
    """

    input_shape = (1, 64, 64, 3)
    num_outputs = 2

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(int(x.shape[0]))
        purple = np.clip((x[..., 2] - x[..., 1]) * 3.0, 0.0, 1.0).mean(axis=(1, 2))
        p = np.clip(purple * 4.0, 0.0, 1.0).astype(np.float32)
        return np.stack([1.0 - p, p], axis=1)


def fake_bundle(settings: CellSettings = SETTINGS) -> tuple[Bundle, StainClassifier]:
    clf = StainClassifier()
    manifest = parse_manifest(cells_manifest(settings))
    return Bundle(Path("fake"), manifest, cast(TFLiteClassifier, clf)), clf


def test_a_field_without_white_cells_is_a_retake_that_says_so() -> None:
    bundle, clf = fake_bundle()
    rgb = make_smear(400, 300, n_wbc=0, px_per_um=4.0, seed=3).image
    result = analyse(rgb, bundle, None)
    assert result.verdict is Verdict.RETAKE
    assert result.retake_reasons == ["no-white-cells"]
    assert result.retake_message == "no white cells in this field: move to another field"
    assert result.p_leukemia is None
    # The retake still carries what was measured, so the page can say why.
    assert result.cells is not None
    js = result.cells.to_json()
    assert js["n_found"] == 0 and js["n_classified"] == 0 and js["cells"] == []
    assert js["scale_source"] == "red-cells" and js["image_size"] == [400, 300]
    assert clf.calls in ([], [0])  # nothing to classify: the model is not run on cells


def test_fewer_cells_than_min_cells_is_a_retake() -> None:
    bundle, _ = fake_bundle(dataclasses.replace(SETTINGS, min_cells=4))
    rgb = make_smear(400, 300, n_wbc=3, px_per_um=4.0, seed=3).image
    result = analyse(rgb, bundle, None)
    assert result.verdict is Verdict.RETAKE and result.retake_reasons == ["no-white-cells"]
    assert result.cells is not None and result.cells.n_found == 3


def test_one_cell_decides_the_slide_by_itself() -> None:
    bundle, clf = fake_bundle()
    rgb = make_smear(400, 300, n_wbc=1, px_per_um=4.0, seed=3).image
    result = analyse(rgb, bundle, None)
    assert clf.calls == [1]
    assert result.cells is not None
    report = result.cells
    assert report.n_found == report.n_classified == 1
    p = report.cells[0].p_blast
    assert report.features.top_k_mean == pytest.approx(p)  # k = 3 > 1 cell: its own p
    assert report.features.blast_fraction == (1.0 if p >= SETTINGS.cell_cut else 0.0)
    want = slide_score(
        slide_features(np.array([p]), field_area_um2(rgb.shape, report.px_per_um), SETTINGS),
        SETTINGS,
    )
    assert report.score == pytest.approx(want, abs=1e-6)
    assert result.p_leukemia == pytest.approx(report.score)
    assert result.verdict is bundle.manifest.thresholds.decide(report.score)
    assert result.retake_reasons == []
    assert set(result.timings_ms) >= {"quality", "detect", "crops", "inference", "decision"}


def test_hundreds_of_cells_classify_the_largest_max_cells_in_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = dataclasses.replace(SETTINGS, max_cells=200)
    bundle, clf = fake_bundle(settings)
    smear = make_smear(1600, 1200, n_wbc=240, n_blasts=60, px_per_um=2.5, seed=3, rbc_density=0.3)
    found = detect_white_cells(smear.image).cells
    assert len(found) > 250
    result = analyse(smear.image, bundle, None, gate=False)
    # Memory stays bounded: never more than a chunk of crops at once.
    chunk = cellmode.INFERENCE_CHUNK
    assert clf.calls == [chunk] * (200 // chunk) + ([200 % chunk] if 200 % chunk else [])
    # Chunking changes nothing but the memory: each cell keeps its own probability.
    monkeypatch.setattr(cellmode, "INFERENCE_CHUNK", 1000)
    whole, clf_whole = fake_bundle(settings)
    at_once = analyse(smear.image, whole, None, gate=False)
    assert clf_whole.calls == [200]
    assert at_once.cells is not None and result.cells is not None
    assert [c.p_blast for c in at_once.cells.cells] == [c.p_blast for c in result.cells.cells]
    report = result.cells
    assert report is not None
    # Small pale detections (the synthetic neutrophils' lobes) are the check's rejects.
    assert report.n_found + report.n_rejected == len(found) and report.n_classified == 200
    largest = sorted(found, key=lambda c: -c.area_um2)[:200]
    assert {(round(c.x, 1), round(c.y, 1)) for c in largest} == {
        (round(c.x, 1), round(c.y, 1)) for c in report.cells
    }
    js = report.to_json()
    assert len(js["cells"]) == 200 and js["n_found"] + js["n_rejected"] == len(found)
    # The blast count and fraction are those of the classified cells.
    n_blasts = sum(c["blast"] for c in js["cells"])
    assert js["n_blasts"] == n_blasts
    assert js["blast_fraction"] == pytest.approx(n_blasts / 200, abs=1e-4)
    w, h = js["image_size"]
    for c in js["cells"]:
        x0, y0, x1, y1 = c["box"]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert x0 <= c["x"] <= x1 and y0 <= c["y"] <= y1


def test_no_red_cells_and_no_configured_scale_is_a_no_scale_retake() -> None:
    bundle, clf = fake_bundle()
    rgb = make_smear(400, 300, n_wbc=3, rbc_density=0.0, px_per_um=4.0, seed=3).image
    result = analyse(rgb, bundle, None, gate=False)
    assert result.verdict is Verdict.RETAKE
    assert result.retake_reasons == ["no-scale"]
    assert result.retake_message is not None and "calibrate px_per_um" in result.retake_message
    assert result.cells is None and clf.calls == []


def test_a_configured_scale_is_used_when_red_cells_cannot_be_measured() -> None:
    bundle, clf = fake_bundle()
    rgb = make_smear(400, 300, n_wbc=3, rbc_density=0.0, px_per_um=4.0, seed=3).image
    result = analyse(rgb, bundle, None, gate=False, px_per_um=4.0)
    assert result.verdict is not Verdict.RETAKE
    assert result.cells is not None
    js = result.cells.to_json()
    assert js["scale_source"] == "given" and js["px_per_um"] == 4.0
    assert js["n_found"] == 3 and clf.calls == [3]


def test_a_configured_scale_wins_over_the_red_cells() -> None:
    bundle, _ = fake_bundle()
    rgb = make_smear(400, 300, n_wbc=3, px_per_um=4.0, seed=3).image
    measured = analyse(rgb, bundle, None, gate=False).cells
    given = analyse(rgb, bundle, None, gate=False, px_per_um=3.0).cells
    assert measured is not None and given is not None
    assert measured.scale_source == "red-cells" and measured.px_per_um == pytest.approx(4, 0.05)
    assert given.scale_source == "given" and given.px_per_um == 3.0
    # The field's area (so the density) is measured with the given scale.
    area_um2 = 400 * 300 / 3.0**2
    assert given.n_classified > 0
    assert given.features.density == pytest.approx(given.n_classified * 10_000 / area_um2)


def test_the_quality_gate_runs_first() -> None:
    bundle, clf = fake_bundle()
    blank = np.full((300, 400, 3), 230, np.uint8)
    result = analyse(blank, bundle, None)
    assert result.verdict is Verdict.RETAKE
    assert "empty-field" in result.retake_reasons
    assert "no-white-cells" not in result.retake_reasons
    assert result.cells is None and clf.calls == []


def test_cells_mode_decodes_at_full_resolution() -> None:
    bundle, _ = fake_bundle()
    assert decode_size(bundle) is None


def test_analyse_cells_takes_any_classifier_function() -> None:
    rgb = make_smear(400, 300, n_wbc=2, n_blasts=2, px_per_um=4.0, seed=5).image
    high = analyse_cells(rgb, SETTINGS, TINY_CELL_PARAMS, lambda b: np.full(len(b), 0.9))
    low = analyse_cells(rgb, SETTINGS, TINY_CELL_PARAMS, lambda b: np.full(len(b), 0.1))
    assert high.report is not None and low.report is not None
    assert high.report.features.n_blasts == 4 and low.report.features.n_blasts == 0
    assert high.report.score > low.report.score
    with pytest.raises(ValueError, match="gave 1 probabilities for 4 cells"):
        analyse_cells(rgb, SETTINGS, TINY_CELL_PARAMS, lambda b: np.zeros(1))


@pytest.mark.parametrize(
    ("cell", "want"),
    [
        # A 4 px radius nucleus: the box is 2.2 diameters = 17.6 px around its centre.
        (WhiteCell(100.0, 100.0, 20.0, 4.0), (91, 91, 110, 110)),
        # A tiny nucleus: at least half the 24 um crop (12 um = 12 px at 1 px/um).
        (WhiteCell(100.0, 100.0, 20.0, 1.0), (94, 94, 107, 107)),
        # At the corner: clipped to the image.
        (WhiteCell(1.0, 198.0, 20.0, 10.0), (0, 176, 24, 200)),
    ],
)
def test_boxes_are_squares_around_the_nucleus_clipped_to_the_image(
    cell: WhiteCell, want: tuple[int, int, int, int]
) -> None:
    assert cell_box(cell, 1.0, 24.0, (300, 200)) == want


@pytest.mark.parametrize(
    ("background", "level"), [((230.2, 215.7, 221.1), 235.0), ((0.3, 255.0, 100.0), 1.0)]
)
def test_white_balance_is_the_per_pixel_formula(
    background: tuple[float, float, float], level: float
) -> None:
    crops = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    crops[0, 0, :, :] = np.arange(32)[:, None] * 8  # every channel sees dark and bright levels
    gain = np.float32(level) / np.maximum(np.asarray(background, np.float32), 1.0)
    want = np.clip(crops.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(white_balance(crops, background, level), want)
    assert white_balance(crops[:0], background, level).shape == (0, 32, 32, 3)
