"""`leukoscope demo-images`: with the shipped bundle the five fields give every outcome a
technician can meet but "leukemia suspected", so `make run` shows them. The shipped cells
bundle calls each drawn blast a blast, but not confidently enough for a drawn field to
reach "leukemia suspected" (real blasts score higher): the last test pins that down."""

from __future__ import annotations

from pathlib import Path

import pytest

from leukoscope.cli.main import main
from leukoscope.core.imageio import load_image
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import Bundle, load_bundle
from leukoscope.pipeline import analyse
from tests.conftest import SHIPPED_BUNDLE

EVERY_OUTCOME_BUT_REFER = {
    "no-leukemia-suspected",
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


def test_the_demo_fields_give_their_outcomes_with_the_shipped_bundle(
    demo_folder: Path, shipped: Bundle
) -> None:
    got = {p.name: outcome(p, shipped) for p in sorted(demo_folder.glob("*.png"))}
    assert got == {
        "synthetic-00-no-leukemia.png": "no-leukemia-suspected",
        "synthetic-01-blasts.png": "indeterminate",
        "synthetic-02-retake-focus.png": "out-of-focus",
        "synthetic-03-retake-exposure.png": "too-dark",
        "synthetic-04-retake-no-white-cells.png": "no-white-cells",
    }
    assert set(got.values()) == EVERY_OUTCOME_BUT_REFER


def test_the_scores_are_clear_of_the_thresholds(demo_folder: Path, shipped: Bundle) -> None:
    """A small change of runtime or numpy must not move a demo field across a threshold."""
    t = shipped.manifest.thresholds
    for name, lo, hi in (
        ("synthetic-00-no-leukemia.png", 0.0, t.low - 0.1),
        ("synthetic-01-blasts.png", t.low + 0.1, t.high - 0.1),
    ):
        pred = analyse(load_image(demo_folder / name), shipped, None, gate=True)
        assert pred.p_leukemia is not None and lo <= pred.p_leukemia <= hi, (name, pred.p_leukemia)


def test_the_drawn_blasts_are_each_called_blasts_and_the_mature_cells_are_not(
    shipped: Bundle,
) -> None:
    """What the blasts field shows: every blast boxed as a blast, below the refer line."""
    smear = make_smear(1024, 768, n_wbc=3, n_blasts=5, px_per_um=5.0, seed=7)
    pred = analyse(smear.image, shipped, None, gate=True)
    assert pred.cells is not None
    cut = pred.cells.cell_cut
    truth = [c for c in smear.cells if c.kind != "rbc"]
    calls: dict[str, list[bool]] = {"blast": [], "wbc": []}
    for c in pred.cells.cells:
        nearest = min(truth, key=lambda t: (t.x - c.x) ** 2 + (t.y - c.y) ** 2)
        calls[nearest.kind].append(c.p_blast >= cut)
    assert calls["blast"] and all(calls["blast"]), calls
    assert calls["wbc"] and not any(calls["wbc"]), calls
    assert pred.p_leukemia is not None and pred.p_leukemia < shipped.manifest.thresholds.high
