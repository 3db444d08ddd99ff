"""`leukoscope bench-cells`: the cell analysis's stages timed on a photo, with a report."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from leukoscope.bench.cells import STAGES
from leukoscope.cli.main import main
from leukoscope.core.synthetic import make_smear


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "field.jpg"
    img = make_smear(800, 600, n_wbc=4, n_blasts=3, px_per_um=4.0, seed=8).image
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


def test_bench_prints_every_stage_and_writes_a_report(
    session_cells_bundle: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "out" / "bench.md"
    argv = ["bench-cells", "--bundle", str(session_cells_bundle), "--image", str(photo)]
    assert main([*argv, "--runs", "2", "--threads", "2", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "| **total: cell analysis** |" in out and "120 ms budget" in out
    assert "inference, 7 crops in one batch, 2 thread(s)" in out
    assert report.read_text() in out
    figures = json.loads(report.with_suffix(".json").read_text())
    assert figures["n_found"] == figures["n_classified"] == 7 and figures["threads"] == 2
    assert set(figures["stages_ms"]) == set(STAGES)
    assert all(v > 0 for v in figures["stages_ms"].values())
    # The total is the wall time of the stages together, not a made-up sum.
    assert figures["total_ms"] >= 0.8 * sum(figures["stages_ms"].values())


def test_bench_refuses_a_whole_field_bundle(
    session_bundle: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench-cells", "--bundle", str(session_bundle), "--image", str(photo), "--runs", "1"]
    assert main(argv) == 2
    assert "bench-cells needs a cells bundle" in capsys.readouterr().err


def test_bench_refuses_a_photo_that_is_a_retake(
    session_cells_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.png"
    img = make_smear(400, 300, n_wbc=0, px_per_um=4.0, seed=8).image
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    argv = ["bench-cells", "--bundle", str(session_cells_bundle), "--image", str(path)]
    argv += ["--runs", "1"]
    assert main(argv) == 2
    assert "is a retake (no-white-cells)" in capsys.readouterr().err
