"""The shipped bundles: the default (cell mode) and the whole-field model it replaced.

Each loads, carries its card, and its recorded numbers hold.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from leukoscope.model.bundle import load_bundle
from tests.conftest import SHIPPED_BUNDLE, WHOLE_FIELD_BUNDLE

MAX_BUNDLE_BYTES = 10 * 1024 * 1024


def _manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        pytest.fail(f"no shipped bundle at {root}")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def manifest() -> dict:
    """The whole-field bundle's manifest."""
    return _manifest(WHOLE_FIELD_BUNDLE)


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_the_default_is_the_cell_mode_bundle_and_it_loads() -> None:
    # Issue 8: the better mode by the comparison report ships as the default.
    raw = _manifest(SHIPPED_BUNDLE)
    assert raw["analysis_mode"] == "cells"
    bundle = load_bundle(SHIPPED_BUNDLE)
    assert bundle.manifest.cells is not None
    assert bundle.classifier.input_dtype == "int8"
    assert _size(SHIPPED_BUNDLE) < MAX_BUNDLE_BYTES
    card = (SHIPPED_BUNDLE / "MODEL_CARD.md").read_text()
    assert "not a diagnosis" in card and "COMPARE.md" in card


def test_whole_field_bundle_loads_and_is_small(manifest: dict) -> None:
    bundle = load_bundle(WHOLE_FIELD_BUNDLE)
    assert bundle.manifest.analysis_mode == "whole-field"
    assert bundle.classifier.input_dtype == "int8"
    assert _size(WHOLE_FIELD_BUNDLE) < MAX_BUNDLE_BYTES
    th = manifest["thresholds"]
    assert th["low"] <= manifest["metrics"]["cut"] <= th["high"]


def test_split_is_group_disjoint_and_recorded(manifest: dict) -> None:
    from leukoscope_tools.data.photos import SPLITS, parse_table

    rows = parse_table((WHOLE_FIELD_BUNDLE / "split.csv").read_text())
    splits: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.split != "excluded":  # byte-identical copies, in no split
            splits[row.group].add(row.split)
    assert all(len(s) == 1 for s in splits.values()), "a group spans two splits"
    recorded = manifest["training"]["split_counts"]
    for split in (*SPLITS, "excluded"):
        assert sum(r.split == split for r in rows) == sum(recorded.get(split, {}).values())
    test_n = sum(r.split == "test" for r in rows)
    assert manifest["metrics"]["test"]["overall"]["n"] == test_n
    assert {r.split for r in rows} <= {*SPLITS, "excluded"}
    # BCCD (unlabelled) and ALL-IDB2 (crops of ALL-IDB1 slides) stay out of this model.
    assert {r.source for r in rows} == {"kaggle-all", "all-idb1"}


def test_card_states_use_and_cross_source_results(manifest: dict) -> None:
    card = (WHOLE_FIELD_BUNDLE / "MODEL_CARD.md").read_text()
    assert "not a diagnosis" in card
    assert "Donida Labati" in card and "Ghaderzadeh" in card
    cross = manifest["metrics"]["cross_source"]
    assert {"kaggle-all -> all-idb1", "all-idb1 -> kaggle-all"} <= set(cross)
    for result in cross.values():
        auc = result["overall"]["roc_auc"]
        assert auc is not None and f"{auc:.3f}" in card, "the card must quote cross-source AUCs"
    assert manifest["metrics"]["parity"]["agreement"] >= 0.99


@pytest.mark.realdata
@pytest.mark.host
def test_reevaluation_matches_manifest(shared_data: Path) -> None:
    from leukoscope_tools.evaluate.field import reevaluate_bundle

    assert reevaluate_bundle(WHOLE_FIELD_BUNDLE, shared_data) == []
