"""The benchmark runs end to end and reports every stage (figures are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leukoscope.cli.main import main


def test_bench_writes_a_report_with_every_stage(session_bundle: Path, tmp_path: Path) -> None:
    report = tmp_path / "bench.md"
    assert (
        main(["bench", "--bundle", str(session_bundle), "--runs", "2", "--report", str(report)])
        == 0
    )
    result = json.loads(report.with_suffix(".json").read_text())
    stages = result["stages_ms"]
    assert {"preprocess", "inference, 1 thread", "inference, 2 threads"} <= set(stages)
    assert all(v["median"] > 0 for v in stages.values())
    assert result["full_size_filter_over_paper_order"] > 0
    assert result["peak_rss_mib"] > 0
    assert "| stage | median ms | p95 ms |" in report.read_text()


def test_the_whole_field_bench_refuses_a_cells_bundle_and_names_the_right_one(
    session_cells_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--bundle", str(session_cells_bundle), "--runs", "1"]) != 0
    err = capsys.readouterr().err
    assert "'cells' bundle" in err and "leukoscope bench-cells" in err
