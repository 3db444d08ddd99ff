"""Bad input to `leukoscope-tools`: one `error:` line naming the problem, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from leukoscope_tools.cli import main

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "whole-field"


def test_evaluate_a_folder_that_is_not_a_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(tmp_path), str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: missing file manifest.json\n"


def test_evaluate_a_bundle_without_recorded_test_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(SHIPPED, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["metrics"]["test"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert main(["evaluate", str(bundle), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bundle}: manifest metrics lack the recorded cut and test split\n"
