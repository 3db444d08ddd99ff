"""Bundles: a good one loads; each kind of damage is refused with its own message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from leukoscope.analysis.analysers import WholeFieldAnalyser
from leukoscope.analysis.decision import Thresholds, Verdict
from leukoscope.core.errors import BundleError
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import parse_manifest
from tests.helpers import refusal_of_a_pipe


def _edit_manifest(root: Path, edit: Any) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_good_bundle_loads_and_classifies(session_bundle: Path) -> None:
    bundle = load_bundle(session_bundle)
    m = bundle.manifest
    assert m.labels == ("normal", "leukemia") or "leukemia" in m.labels
    assert isinstance(bundle.analyser, WholeFieldAnalyser)
    pred = bundle.analyser.predict(make_smear(400, 300, n_blasts=3, seed=11).image)
    assert 0.0 <= pred.p_leukemia <= 1.0
    assert abs(sum(pred.probabilities.values()) - 1.0) < 0.02
    assert pred.verdict == m.thresholds.decide(pred.p_leukemia)
    assert len(m.model_sha256) == 64


def test_tampered_tflite_is_refused(bundle_copy: Path) -> None:
    model = bundle_copy / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.tflite: sha256 mismatch \(tampered"):
        load_bundle(bundle_copy)


def test_missing_file_is_refused(bundle_copy: Path) -> None:
    golden = sorted((bundle_copy / "golden").iterdir())[0]
    golden.unlink()
    with pytest.raises(BundleError, match=f"missing file golden/{golden.name}"):
        load_bundle(bundle_copy)


def test_missing_manifest_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="missing file manifest.json"):
        load_bundle(bundle_copy)


def test_bad_json_is_refused(bundle_copy: Path) -> None:
    path = bundle_copy / "manifest.json"
    path.write_text(path.read_text()[:-20])
    with pytest.raises(BundleError, match="bad JSON at line"):
        load_bundle(bundle_copy)


def test_wrong_input_shape_is_refused(bundle_copy: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["input"]["width"] = d["input"]["height"] = 100

    _edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match="model input shape .* does not match the manifest"):
        load_bundle(bundle_copy)


def test_golden_mismatch_is_refused(bundle_copy: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        case = d["golden"]["cases"][0]
        case["p_leukemia"] = 1.0 if case["p_leukemia"] < 0.5 else 0.0

    _edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match="golden mismatch on golden/"):
        load_bundle(bundle_copy)


def test_a_whole_field_bundle_relabelled_cells_is_refused(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda d: d.update(analysis_mode="cells"))
    with pytest.raises(BundleError, match="cells: missing: a cells bundle needs its cells object"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(colour="blue"), "manifest: unknown key"),
        (lambda d: d.pop("labels"), "manifest: missing key"),
        (lambda d: d.update(format_version=2), "format_version: 2 is not supported"),
        (lambda d: d["thresholds"].update(low=0.9, high=0.1), "thresholds: low"),
        (lambda d: d["thresholds"].update(high="x"), "thresholds.high: must be a number"),
        (lambda d: d.update(positive_label="cancer"), "positive_label: 'cancer' is not one"),
        (lambda d: d["preprocess"].update(median_ksize=4), "median_ksize: must be odd"),
        (lambda d: d["files"].update({"../etc/passwd": "0" * 64}), "must be relative"),
        (lambda d: d["golden"].update(cases=[]), "golden.cases: must be a non-empty list"),
        (lambda d: d.update(name="bad name!"), "name: bad value"),
    ],
)
def test_schema_errors_name_the_key(session_bundle: Path, edit: Any, message: str) -> None:
    raw = json.loads((session_bundle / "manifest.json").read_text())
    edit(raw)
    with pytest.raises(BundleError, match=message):
        parse_manifest(raw)


def test_thresholds_decide_with_an_indeterminate_band() -> None:
    th = Thresholds(0.3, 0.7)
    assert th.decide(0.0) is Verdict.NO_LEUKEMIA_SUSPECTED
    assert th.decide(0.29) is Verdict.NO_LEUKEMIA_SUSPECTED
    assert th.decide(0.3) is Verdict.INDETERMINATE
    assert th.decide(0.69) is Verdict.INDETERMINATE
    assert th.decide(0.7) is Verdict.LEUKEMIA_SUSPECTED
    assert Thresholds(0.5, 0.5).decide(0.5) is Verdict.LEUKEMIA_SUSPECTED
    with pytest.raises(ValueError):
        Thresholds(0.8, 0.2)


def test_quantisation_parameters_come_from_the_interpreter(session_bundle: Path) -> None:
    bundle = load_bundle(session_bundle)
    clf = bundle.classifier
    assert clf.input_dtype == "int8"
    # Saturated inputs must not wrap around: black and white give different answers
    # from each other but both stay probabilities.
    shape = clf.input_shape[1:]
    for value in (-5.0, 0.0, 1.0, 5.0):
        out = clf.predict(np.full(shape, value, np.float32))
        assert np.all((out >= 0) & (out <= 1))


def test_a_pipe_in_place_of_the_manifest_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").unlink()
    errors = refusal_of_a_pipe(lambda _: load_bundle(bundle_copy), bundle_copy / "manifest.json")
    assert len(errors) == 1 and "not a regular file" in errors[0]


def test_a_pipe_in_place_of_the_model_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "model.tflite").unlink()
    errors = refusal_of_a_pipe(lambda _: load_bundle(bundle_copy), bundle_copy / "model.tflite")
    assert len(errors) == 1 and "cannot read model.tflite (not a regular file" in errors[0]
