"""`leukoscope demo-images`: with the shipped bundle the six fields give every outcome a
technician can meet, so `make run` shows each of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from leukoscope.cli.main import main
from leukoscope.core.imageio import load_image
from leukoscope.model.bundle import Bundle, load_bundle
from leukoscope.pipeline import analyse
from tests.conftest import SHIPPED_BUNDLE

EVERY_OUTCOME = {
    "no-leukemia-suspected",
    "leukemia-suspected",
    "indeterminate",
    "out-of-focus",
    "too-dark",
    "no-white-cells",
}


@pytest.fixture(scope="module")
def shipped() -> Bundle:
    return load_bundle(SHIPPED_BUNDLE)


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    assert main(["demo-images", str(folder)]) == 0
    return folder


def outcome(path: Path, bundle: Bundle) -> str:
    """The verdict, or for a retake its one reason, as the daemon would decide it."""
    pred = analyse(load_image(path), bundle, None, gate=True)
    if pred.verdict.value == "retake":
        assert len(pred.retake_reasons) == 1, pred.retake_reasons
        return str(pred.retake_reasons[0])
    return pred.verdict.value


def test_the_demo_fields_give_every_outcome_with_the_shipped_bundle(
    demo_folder: Path, shipped: Bundle
) -> None:
    got = {p.name: outcome(p, shipped) for p in sorted(demo_folder.glob("*.png"))}
    assert got == {
        "synthetic-00-no-leukemia.png": "no-leukemia-suspected",
        "synthetic-01-leukemia.png": "leukemia-suspected",
        "synthetic-02-indeterminate.png": "indeterminate",
        "synthetic-03-retake-focus.png": "out-of-focus",
        "synthetic-04-retake-exposure.png": "too-dark",
        "synthetic-05-retake-no-white-cells.png": "no-white-cells",
    }
    assert set(got.values()) == EVERY_OUTCOME


def test_the_scores_are_clear_of_the_thresholds(demo_folder: Path, shipped: Bundle) -> None:
    """A small change of runtime or numpy must not move a demo field across a threshold."""
    t = shipped.manifest.thresholds
    for name, lo, hi in (
        ("synthetic-00-no-leukemia.png", 0.0, t.low - 0.1),
        ("synthetic-01-leukemia.png", t.high + 0.1, 1.0),
        ("synthetic-02-indeterminate.png", t.low + 0.1, t.high - 0.1),
    ):
        pred = analyse(load_image(demo_folder / name), shipped, None, gate=True)
        assert pred.p_leukemia is not None and lo <= pred.p_leukemia <= hi, (name, pred.p_leukemia)
