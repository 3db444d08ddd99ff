"""`leukoscope sample analyse`: a sample's photos read offline, one line each and the
sample's; and the bundle's `sample` object, which sets the rule it counts by.

The shipped cells bundle reads synthetic smears with known white cells and blasts; a
copy of it gains a `sample` object (the manifest is not among the hashed files).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import pytest

from leukoscope.analysis.differential import ErrorRates, SampleRule
from leukoscope.cli.main import main
from leukoscope.config import SampleConfig
from leukoscope.core.errors import BundleError, ConfigError
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import parse_manifest, sample_spec
from tests.conftest import SHIPPED_BUNDLE
from tests.test_cell_analysis import cells_manifest

SAMPLE = {
    "threshold": 0.05,
    "min_cells": 20,
    "max_cells": 400,
    "max_fields": 10,
    "sensitivity": 0.9,
    "specificity": 0.96,
    "measured_on": "validation cells (synthetic, for the test)",
}
KEYS = {"sample", "verdict", "n_fields", "n_cells", "n_blasts", "blast_percent", "interval"}


def write_smear(path: Path, seed: int, n_wbc: int = 6, n_blasts: int = 2) -> Path:
    smear = make_smear(800, 600, n_wbc=n_wbc, n_blasts=n_blasts, px_per_um=4.0, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(smear.image, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def bundle_with_rule(tmp_path: Path) -> Path:
    """A copy of the shipped cells bundle whose manifest carries SAMPLE."""
    dst = tmp_path / "bundle"
    shutil.copytree(SHIPPED_BUNDLE, dst)
    raw = json.loads((dst / "manifest.json").read_text())
    raw["sample"] = SAMPLE
    (dst / "manifest.json").write_text(json.dumps(raw))
    return dst


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_json_lines_count_the_fields_and_skip_a_repeat_and_a_bad_file(
    tmp_path: Path, bundle_with_rule: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "P-1"
    for i in (0, 3, 4):  # 8 white cells, 2 of them blasts, per field
        write_smear(photos / f"{i:02d}.png", seed=40 + i)
    shutil.copy(photos / "00.png", photos / "01-again.png")
    (photos / "02-bad.jpg").write_bytes(b"not a jpeg")
    code, lines, err = run(
        ["sample", "analyse", str(photos), "--bundle", str(bundle_with_rule), "--json",
         "--sample-id", "P-1"],
        capsys,
    )  # fmt: skip
    assert code == 1 and "1 of 5 file(s) could not be read" in err
    rows = [json.loads(line) for line in lines]
    fields, last = rows[:-1], rows[-1]
    assert [f["status"] for f in fields] == ["counted", "repeat", "error", "counted", "counted"]
    assert fields[1]["repeats_field"] == 1 and "repeats field 1" in fields[1]["message"]
    assert "02-bad.jpg" in fields[2]["file"] and fields[2]["message"]
    assert KEYS | {"model"} <= set(last)
    assert last["sample"] == "P-1" and last["n_fields"] == 3
    assert last["n_cells"] == sum(f["n_cells"] for f in fields) == 24
    # 6 blasts were drawn; the shipped model may miss or add one here and there.
    assert last["n_blasts"] == sum(f["n_blasts"] for f in fields) and 4 <= last["n_blasts"] <= 8
    observed = last["n_blasts"] / last["n_cells"]  # corrected by Rogan-Gladen:
    assert last["blast_percent"] == pytest.approx(100 * (observed - 0.04) / 0.86, abs=0.01)
    low, high = last["interval"]
    assert low <= last["blast_percent"] <= high and low >= 5.0
    assert last["verdict"] == "leukemia-suspected" and last["corrected"] is True
    assert (
        last["model"]["sha256"]
        == json.loads((bundle_with_rule / "manifest.json").read_text())["files"]["model.tflite"]
    )


def test_text_lines_and_a_sample_below_its_minimum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_smear(tmp_path / "a.png", seed=50, n_blasts=0)
    no_white = write_smear(tmp_path / "b.png", seed=51, n_wbc=0, n_blasts=0)
    code, lines, _ = run(
        ["sample", "analyse", str(a), str(no_white), "--bundle", str(SHIPPED_BUNDLE)], capsys
    )
    assert code == 0
    body = [line for line in lines if not line.startswith("note:")]
    assert body[0].startswith(f"{a}: field 1 counted (") and "move to the next field" in body[0]
    assert body[1].startswith(f"{no_white}: field 2 retake: no white cells in this field")
    assert body[2].startswith("sample sample: indeterminate; ")
    assert "not decided" in body[2]


def test_the_count_stops_once_the_sample_is_decided(
    tmp_path: Path, bundle_with_rule: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(5):
        write_smear(tmp_path / "p" / f"{i}.png", seed=60 + i, n_wbc=12, n_blasts=6)
    code, lines, _ = run(
        ["sample", "analyse", str(tmp_path / "p"), "--bundle", str(bundle_with_rule), "--json"],
        capsys,
    )
    rows = [json.loads(line) for line in lines]
    assert code == 0 and rows[-1]["verdict"] == "leukemia-suspected"
    assert [r["status"] for r in rows[:-1]] == [
        "counted",
        "counted",
        "skipped",
        "skipped",
        "skipped",
    ]


@pytest.mark.parametrize("bad", ["x" * 10_000, "P<1>", "a\nb"])
def test_a_bad_sample_id_is_a_usage_error(
    tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_smear(tmp_path / "a.png", seed=50)
    code, lines, err = run(["sample", "analyse", str(a), "--sample-id", bad], capsys)
    assert code == 2 and lines == [] and "bad sample id" in err and len(err) < 300


def test_a_whole_field_bundle_is_refused(
    tmp_path: Path, session_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_smear(tmp_path / "a.png", seed=50)
    code, _, err = run(["sample", "analyse", str(a), "--bundle", str(session_bundle)], capsys)
    assert code == 2 and "cells bundle" in err


# --- the bundle's sample object -------------------------------------------------------------


def test_the_sample_object_is_parsed_into_a_rule_and_rates() -> None:
    m = parse_manifest(cells_manifest(sample=SAMPLE))
    assert m.sample is not None and m.sample.corrected
    assert m.sample.rule == SampleRule(0.05, 20, 400, 10)
    assert m.sample.rates == ErrorRates(0.9, 0.96)
    assert parse_manifest(cells_manifest()).sample is None


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"extra": 1}, "sample: unknown key(s) extra"),
        ({"threshold": 1.0}, "sample.threshold"),
        ({"threshold": "5%"}, "sample.threshold"),
        ({"min_cells": 0}, "sample.min_cells"),
        ({"min_cells": 500}, "sample.min_cells"),
        ({"max_fields": True}, "sample.max_fields"),
        ({"sensitivity": 0.5, "specificity": 0.5}, "sample.sensitivity"),
        ({"measured_on": ""}, "sample.measured_on"),
    ],
)
def test_a_bad_sample_object_is_refused_by_its_key_path(change: dict[str, Any], path: str) -> None:
    with pytest.raises(BundleError, match=path.replace("(", r"\(").replace(")", r"\)")):
        parse_manifest(cells_manifest(sample={**SAMPLE, **change}))


def test_a_missing_sample_key_and_a_whole_field_bundle_are_refused() -> None:
    partial = {k: v for k, v in SAMPLE.items() if k != "specificity"}
    with pytest.raises(BundleError, match="sample: missing key"):
        parse_manifest(cells_manifest(sample=partial))
    raw = cells_manifest(sample=SAMPLE, analysis_mode="whole-field")
    del raw["cells"]
    with pytest.raises(BundleError, match="sample: only a cells bundle"):
        parse_manifest(raw)


def test_the_config_overrides_the_bundles_rule_and_the_defaults_stand_in() -> None:
    m = parse_manifest(cells_manifest(sample=SAMPLE))
    spec = sample_spec(m, SampleConfig(threshold=0.2, max_fields=4))
    assert spec.rule == SampleRule(0.2, 20, 400, 4) and spec.rates == ErrorRates(0.9, 0.96)
    bare = sample_spec(parse_manifest(cells_manifest()), SampleConfig(min_cells=50))
    assert bare.rule == SampleRule(min_cells=50) and not bare.corrected
    assert bare.rates == ErrorRates(1.0, 1.0)
    with pytest.raises(ConfigError, match="min_cells"):
        sample_spec(m, SampleConfig(min_cells=401))


def test_a_tiny_cells_bundle_with_a_sample_object_loads(
    cells_bundle_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="leukoscope.model.bundle")
    assert load_bundle(cells_bundle_copy).manifest.sample is None
    assert "has no sample rule" in caplog.text
    caplog.clear()
    raw = json.loads((cells_bundle_copy / "manifest.json").read_text())
    raw["sample"] = SAMPLE
    (cells_bundle_copy / "manifest.json").write_text(json.dumps(raw))
    loaded = load_bundle(cells_bundle_copy)
    assert loaded.manifest.sample is not None
    assert loaded.manifest.sample.measured_on == SAMPLE["measured_on"]
    assert "has no sample rule" not in caplog.text
