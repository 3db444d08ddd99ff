"""`leukoscope bench-cells`: the cell analysis's stages timed on a photo, with a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import pytest

from leukoscope.bench.cells import STAGES, cells_within
from leukoscope.bench.daemon import _config, _decoded, without_inference
from leukoscope.cli.main import main
from leukoscope.config import load_config
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
    # The total is the wall time of the stages together, not a made-up sum (the quality
    # gate runs beside the analysis, on another thread).
    stages = figures["stages_ms"]
    assert figures["total_ms"] >= 0.8 * (sum(stages.values()) - stages["quality"])
    # Without inference: the decode and the other stages, what a field costs before its cells.
    fixed = figures["without_inference_ms"]
    assert figures["decode_full_ms"] <= fixed < figures["total_with_decode_ms"]
    per_cell = figures["inference_per_cell_ms"]
    assert per_cell == pytest.approx(figures["stages_ms"]["inference"] / 7, rel=0.01)
    crops = figures["stages_ms"]["crops"]
    assert figures["crops_per_cell_ms"] == pytest.approx(crops / 7, rel=0.01)
    assert figures["cells_within_budget"] == cells_within(
        120.0, fixed - crops, per_cell + figures["crops_per_cell_ms"]
    )
    assert f"| **without inference: decode and every other stage** | **{fixed:.1f}** |" in out
    assert f"| inference per white cell, 2 thread(s) | {per_cell:.2f} |" in out
    assert "meets the 120 ms budget at 2 thread(s)" in out


def test_a_calibrated_scale_is_used_as_the_daemon_uses_it(
    session_cells_bundle: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench-cells", "--bundle", str(session_cells_bundle), "--image", str(photo)]
    assert main([*argv, "--runs", "1", "--px-per-um", "4.2"]) == 0
    out = capsys.readouterr().out
    # The analysis runs at the calibration; the red cells still check it (their stage runs).
    assert "4.2 px/um (calibrated, checked by the red cells)" in out
    assert "| scale from the red cells |" in out
    # A calibration the red cells disagree with (by 50%) is a retake, as in the daemon.
    assert main([*argv, "--runs", "1", "--px-per-um", "6.0"]) == 2
    assert "is a retake (scale-changed)" in capsys.readouterr().err


def test_a_fine_calibration_is_benched_at_the_half_size_decode_the_daemon_uses(
    session_cells_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fine.jpg"
    img = make_smear(1200, 900, n_wbc=4, n_blasts=2, px_per_um=12.0, seed=8).image
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    argv = ["bench-cells", "--bundle", str(session_cells_bundle), "--image", str(path)]
    assert main([*argv, "--runs", "1", "--px-per-um", "12"]) == 0
    out = capsys.readouterr().out
    assert "1200x900 (decoded at half size, 600x450, as the calibration allows); 6.0 px/um" in out
    assert "| JPEG decode, half size |" in out and "(JPEG decode at full size, for" in out
    assert main([*argv, "--runs", "1"]) == 0  # uncalibrated: full size
    assert "1200x900 (decoded at full size)" in capsys.readouterr().out


def test_cells_within_a_budget_counts_whole_cells_after_the_fixed_stages() -> None:
    assert cells_within(120.0, 60.0, 4.7) == 12  # 60 ms left, 12 x 4.7 = 56.4
    assert cells_within(120.0, 115.0, 4.7) == 1
    assert cells_within(120.0, 116.0, 4.7) == 0
    assert cells_within(120.0, 130.0, 4.7) == 0  # the stages alone are over
    assert cells_within(120.0, 60.0, 0.0) == 0  # no cells measured: no claim


def test_the_daemon_bench_takes_inference_out_per_capture_and_per_cell() -> None:
    rows: list[dict[str, Any]] = [
        {
            "timings_ms": {"trigger_to_indicator": 200.0, "inference": 60.0},
            "cells": {"n_classified": 6},
        },
        {
            "timings_ms": {"trigger_to_indicator": 260.0, "inference": 120.0},
            "cells": {"n_classified": 12},
        },
        {"timings_ms": {"trigger_to_indicator": 150.0}, "cells": None},  # a retake: no inference
    ]
    fixed, per_cell = without_inference(rows)
    assert fixed == 140.0  # 140, 140, 150
    assert per_cell == 10.0


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


def test_bench_daemon_passes_the_calibration_and_says_what_size_it_decoded(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, tmp_path / "bundle", 12.0))
    assert cfg.camera.px_per_um == 12.0
    assert load_config(_config(tmp_path, tmp_path / "bundle")).camera.px_per_um is None
    half = [{"cells": {"image_size": [1296, 972]}}] * 3
    assert _decoded(half, (2592, 1944), 12.0) == (
        "calibrated 12.0 px/um; stills decoded at 1296x972, reduced"
    )
    full: list[dict[str, Any]] = [{"cells": {"image_size": [2592, 1944]}}, {"cells": None}]
    assert _decoded(full, (2592, 1944), None) == "no calibration; stills decoded at full size"
