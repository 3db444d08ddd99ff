"""White-cell detection on the held-out ALL-IDB1 slides: blast recall and false detections.

The numbers the report (models/reports/cell-detection.md) quotes, with a small margin:
a change that loses blasts or floods healthy slides with detections fails here.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from leukoscope.analysis.detection import DEFAULT_PARAMS
from leukoscope_tools.evaluate.detection import (
    DEFAULT_SPLIT,
    OVERLAP_GROUPS,
    SlideResult,
    read_split,
    run,
    summarise,
)

#: The detector's tune/held-out split, as committed (DEFAULT_SPLIT is relative to the repo).
SPLIT = Path(__file__).resolve().parent.parent / DEFAULT_SPLIT
#: Measured 161 of 161 held-out blasts (100%); the issue's target is 95%.
MIN_HELD_OUT_RECALL = 0.97
#: Measured 2.2 detections per healthy held-out slide on average, at most 4.
MAX_HEALTHY_MEAN = 3.5
MAX_HEALTHY_ANY = 8


def test_split_file_keeps_overlapping_fields_together() -> None:
    split = read_split(SPLIT)
    assert set(split.values()) == {"tune", "held-out"}
    for members in OVERLAP_GROUPS:
        sides = {v for k, v in split.items() if k.split("_")[0] in members}
        assert len(sides) == 1, (members, sides)
    assert not any(k.startswith("Im108") for k in split)  # the byte-identical copy


@pytest.fixture(scope="module")
def held_out(shared_data: Path) -> list[SlideResult]:
    return run(shared_data, SPLIT, 0, DEFAULT_PARAMS, ("held-out",))


@pytest.mark.realdata
@pytest.mark.slow
def test_held_out_blast_recall(held_out: list[SlideResult]) -> None:
    s = summarise(held_out, "held-out")
    assert s["blasts"] >= 100  # the split did not shrink to a few slides
    assert s["recall"] >= MIN_HELD_OUT_RECALL, s


@pytest.mark.realdata
@pytest.mark.slow
def test_held_out_healthy_slides_have_few_detections(held_out: list[SlideResult]) -> None:
    healthy = [r.detections for r in held_out if r.label == "normal"]
    assert len(healthy) >= 10
    assert statistics.fmean(healthy) <= MAX_HEALTHY_MEAN
    assert max(healthy) <= MAX_HEALTHY_ANY


@pytest.mark.realdata
@pytest.mark.slow
def test_scale_is_consistent_per_camera(held_out: list[SlideResult]) -> None:
    # One camera and objective per image size: the red-cell ruler must agree with itself.
    by_size: dict[str, list[float]] = {}
    for r in held_out:
        by_size.setdefault(r.size, []).append(r.px_per_um)
    for size, values in by_size.items():
        if len(values) >= 3:
            med = statistics.median(values)
            assert max(values) / min(values) < 1.2, (size, values)
            assert 5.0 < med < 20.0, (size, med)
