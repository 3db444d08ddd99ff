"""The sample-rule validation: simulated samples, the rule's choice and the cell rates.

Made-up per-photo counts with known answers; one realdata test runs the device on a slide.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.differential import PERFECT, ErrorRates, SampleRule
from leukoscope.model.bundle import load_bundle
from leukoscope_tools.data.photos import read_table
from leukoscope_tools.evaluate.sample_validation import (
    UNCORRECTED,
    PhotoResult,
    analyse_photo,
    cell_rates,
    idb1_blast_calls,
    rate_candidates,
    sample_object,
    write_manifest_sample,
)
from leukoscope_tools.evaluate.samples import (
    LEUKEMIA,
    NORMAL,
    Field,
    choose_rule,
    rule_grid,
    run_sample,
    simulate,
    summarise,
)
from tests.conftest import REPO, SHIPPED_BUNDLE

RULE = SampleRule(threshold=0.2, min_cells=50, max_cells=400, max_fields=8)


def test_a_sample_of_blasts_is_referred_once_min_cells_are_read() -> None:
    # 10 blasts a field: at 50 cells the Wilson interval of 50/50 starts at 0.93 >= 20%.
    outcome, used = run_sample([Field(10, 10)] * 9, RULE, PERFECT)
    assert outcome.verdict is Verdict.LEUKEMIA_SUSPECTED
    assert (used, outcome.n_fields, outcome.n_cells, outcome.ran_out) == (5, 5, 50, False)


def test_a_sample_without_blasts_is_cleared() -> None:
    outcome, used = run_sample([Field(10, 0)] * 9, RULE, PERFECT)
    assert outcome.verdict is Verdict.NO_LEUKEMIA_SUSPECTED
    assert used == 5


def test_a_sample_at_the_threshold_is_indeterminate_at_a_limit_or_when_fields_run_out() -> None:
    at_limit, used = run_sample([Field(10, 2)] * 20, RULE, PERFECT)
    assert at_limit.verdict is Verdict.INDETERMINATE and not at_limit.ran_out
    assert used == RULE.max_fields
    ran_out, used = run_sample([Field(10, 2)] * 3, RULE, PERFECT)
    assert ran_out.verdict is Verdict.INDETERMINATE and ran_out.ran_out
    assert (used, ran_out.n_cells) == (3, 30)


def test_the_correction_turns_false_blast_calls_into_a_clear_sample() -> None:
    # A classifier calling 30% of normal cells blasts: uncorrected, 3 of 10 looks like
    # leukemia at a 20% threshold; corrected for specificity 0.7 it is about 0%.
    fields = [Field(10, 3)] * 30
    raw, _ = run_sample(fields, RULE, PERFECT)
    corrected, _ = run_sample(fields, RULE, ErrorRates(0.95, 0.7))
    assert raw.verdict is Verdict.LEUKEMIA_SUSPECTED
    assert corrected.verdict is Verdict.NO_LEUKEMIA_SUSPECTED


def test_simulation_cuts_each_shuffle_into_disjoint_samples() -> None:
    rng = np.random.default_rng(0)
    by_round = simulate([Field(10, 10)] * 22, RULE, PERFECT, rounds=3, rng=rng)
    # 22 fields: four samples of 5 fields, and 2 leftover fields that make no sample.
    assert [len(r) for r in by_round] == [4, 4, 4]
    s = summarise(by_round, LEUKEMIA)
    assert (s["samples"], s["samples_per_round"], s["correct"], s["wrong"]) == (12, 4, 1.0, 0.0)
    assert s["fields_mean"] == 5 and s["cells_mean"] == 50
    # Wilson on 4 disjoint samples, not on 12: a wide interval.
    assert s["correct_ci"][0] < 0.6  # 12 of 12 would give 0.76


def test_a_pool_too_small_to_decide_gives_one_indeterminate_sample_per_round() -> None:
    by_round = simulate([Field(3, 0)] * 4, RULE, PERFECT, rounds=5, rng=np.random.default_rng(1))
    s = summarise(by_round, NORMAL)
    assert (s["samples"], s["correct"], s["indeterminate"], s["ran_out"]) == (5, 0.0, 1.0, 1.0)
    assert simulate([], RULE, PERFECT, 5, np.random.default_rng(1)) == []


def _pools() -> dict[str, tuple[str, list[Field]]]:
    return {
        "a leukemia": (LEUKEMIA, [Field(10, 5)] * 60),  # 50% blasts
        "a normal": (NORMAL, [Field(10, 1)] * 60),  # 10% "blasts"
    }


def test_rule_choice_avoids_the_threshold_that_refers_normal_samples() -> None:
    rules = rule_grid((0.05, 0.3), (20, 50), (400,), (40,))
    rates = {"at its word": PERFECT}
    rule, name, qualified, tried = choose_rule(_pools(), rules, rates, rounds=3, seed=0)
    assert qualified and name == "at its word"
    # 5% refers every normal sample (10% blasts); 30% decides both pools rightly,
    # and with min_cells 20 in the fewest fields.
    assert (rule.threshold, rule.min_cells) == (0.3, 20)
    by_threshold = {
        t["rule"]["threshold"]: t
        for t in tried
        if t["rule"]["min_cells"] == 20 and t["rates"] == "at its word"
    }
    assert by_threshold[0.05]["worst_wrong"] == 1.0
    assert by_threshold[0.3]["worst_wrong"] == 0.0 and by_threshold[0.3]["mean_correct"] == 1.0


def test_rule_choice_picks_the_rates_that_clear_normal_samples_at_a_low_threshold() -> None:
    # Corrected for specificity 0.9, the normal pool's 10% calls are about 0% blasts.
    rates = {"at its word": PERFECT, "corrected": ErrorRates(0.95, 0.9)}
    rules = rule_grid((0.05,), (20,), (400,), (40,))
    rule, name, qualified, tried = choose_rule(_pools(), rules, rates, rounds=2, seed=0)
    assert (name, qualified, rule.threshold) == ("corrected", True, 0.05)
    assert {t["rates"]: t["worst_wrong"] for t in tried} == {"at its word": 1.0, "corrected": 0.0}


def test_rule_choice_says_when_no_rule_meets_the_bound() -> None:
    rules = rule_grid((0.05,), (20,), (400,), (40,))
    rule, _, qualified, _ = choose_rule(_pools(), rules, {"raw": PERFECT}, rounds=2, seed=0)
    assert not qualified and rule.threshold == 0.05


def _photo(path: str, label: str, cells: list[list[float]], split: str = "val") -> PhotoResult:
    return PhotoResult(
        path=path, source="all-idb1", label=label, cls=label, group=path, split=split,
        verdict=Verdict.INDETERMINATE.value, score=0.5, gate_ok=True, gate_reasons=[],
        px_per_um=1.0, n_found=len(cells), n_classified=len(cells),
        n_blasts=sum(c[2] >= 0.5 for c in cells), cells=cells,
    )  # fmt: skip


def _data_with_xyc(tmp_path: Path) -> Path:
    xyc = tmp_path / "all-idb1" / "xyc"
    xyc.mkdir(parents=True)
    # Two annotated blasts near detections, one far from any (not detected).
    (xyc / "Im001_1.xyc").write_text("11\t10\n50\t51\n500\t500\n")
    return tmp_path


def test_cell_rates_count_matched_blasts_healthy_cells_and_pbc_cells(tmp_path: Path) -> None:
    data = _data_with_xyc(tmp_path)
    photos = [
        _photo("all-idb1/all/Im001_1.jpg", LEUKEMIA, [[10, 10, 0.9], [50, 50, 0.2], [200, 9, 0.9]]),
        _photo("all-idb1/normal/Im002_0.jpg", NORMAL, [[10, 10, 0.1], [90, 90, 0.7]]),
        _photo("all-idb1/normal/Im003_0.jpg", NORMAL, [[10, 10, 0.99]], split="test"),
    ]  # fmt: skip
    pbc: list[dict[str, Any]] = [
        {"file": "a", "cls": "lymphocyte", "p_blast": 0.1, "scale": "red-cells"},
        {"file": "b", "cls": "lymphocyte", "p_blast": 0.2, "scale": "red-cells"},
        {"file": "c", "cls": "neutrophil", "p_blast": 0.1, "scale": "pbc-median"},
        {"file": "d", "cls": "neutrophil", "p_blast": None, "scale": "red-cells"},
    ]
    rates = cell_rates(data, photos, pbc, cut=0.632)
    blasts = rates["all-idb1"]["blasts"]
    # The unmatched detection (200, 9) is of unknown kind: neither blast nor normal.
    assert (blasts["annotated_blasts"], blasts["detected"]) == (3, 2)
    assert blasts["sensitivity"]["k"] == 1 and blasts["sensitivity"]["rate"] == 0.5
    # Test photos never count; the healthy slide's 0.7 cell is a false blast.
    assert rates["all-idb1"]["specificity"]["rate"] == 0.5
    assert rates["pbc-normal"]["specificity"]["k"] == 3
    assert rates["pbc-normal"]["specificity_by_class"]["neutrophil"]["n"] == 1
    assert rates["pooled"]["specificity"]["k"] == 4 and rates["pooled"]["specificity"]["n"] == 5
    pooled = rates["pooled"]["specificity"]["rate"]
    # ALL-IDB1's 0.5 + 0.5 is no better than chance, and the pooled 0.5 + 0.8 too little
    # better (Rogan-Gladen would divide by 0.3): no rates to correct by.
    assert rate_candidates(rates) == {UNCORRECTED: PERFECT}
    # With a sensitivity of 0.9 the pooled rates (Youden 0.7) may correct, ALL-IDB1's
    # (0.9 + 0.5 - 1 = 0.4, under MIN_YOUDEN) still may not.
    better = copy.deepcopy(rates)
    better["pooled"]["sensitivity"]["rate"] = 0.9
    assert rate_candidates(better) == {"pooled": ErrorRates(0.9, pooled)}


def test_rates_no_better_than_chance_give_no_correction_and_no_manifest_object(
    tmp_path: Path,
) -> None:
    data = _data_with_xyc(tmp_path)
    photos = [
        _photo("all-idb1/all/Im001_1.jpg", LEUKEMIA, [[10, 10, 0.9], [50, 50, 0.2]]),
        _photo("all-idb1/normal/Im002_0.jpg", NORMAL, [[10, 10, 0.9], [90, 90, 0.1]]),
    ]
    rates = cell_rates(data, photos, [], cut=0.5)
    assert rates["better_than_chance"]["pooled"] is False
    assert rate_candidates(rates) == {UNCORRECTED: PERFECT}
    rule = {"threshold": 0.2, "min_cells": 50, "max_cells": 400, "max_fields": 8}
    result = {"cell_rates": rates, "rule": rule, "rates": UNCORRECTED, "rates_used": {}}
    assert sample_object(result) is None


def test_the_manifest_gets_the_sample_object_and_still_loads(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(SHIPPED_BUNDLE, bundle, ignore=shutil.ignore_patterns("manifest.json"))
    raw = json.loads((SHIPPED_BUNDLE / "manifest.json").read_text())
    raw.pop("sample", None)
    (bundle / "manifest.json").write_text(json.dumps(raw, indent=2) + "\n")
    sample = {
        "threshold": 0.2, "min_cells": 100, "max_cells": 400, "max_fields": 40,
        "sensitivity": 0.9, "specificity": 0.6, "measured_on": "made-up cells",
    }  # fmt: skip
    write_manifest_sample(bundle, sample)
    text = (bundle / "manifest.json").read_text()
    written = json.loads(text)
    keys = list(written)
    assert keys.index("sample") == keys.index("cells") + 1
    assert {k: v for k, v in written.items() if k != "sample"} == raw
    assert text == json.dumps(written, indent=2) + "\n"
    loaded = load_bundle(bundle)
    assert loaded.manifest.sample is not None
    assert loaded.manifest.sample.rule == SampleRule(0.2, 100, 400, 40)
    assert loaded.manifest.sample.rates == ErrorRates(0.9, 0.6)


def test_the_shipped_sample_object_is_the_one_the_report_chose() -> None:
    report = REPO / "models" / "reports" / "samples.json"
    if not report.is_file():
        pytest.skip("no samples report yet")
    chosen = json.loads(report.read_text())["manifest_sample"]
    shipped = json.loads((SHIPPED_BUNDLE / "manifest.json").read_text()).get("sample")
    assert shipped == chosen


@pytest.mark.realdata
def test_the_device_finds_and_calls_annotated_blasts_on_a_validation_slide(
    shared_data: Path,
) -> None:
    rows = read_table(REPO / "models" / "whole-field" / "split.csv")
    row = next(r for r in rows if r.path.endswith("Im007_1.jpg"))
    assert row.split == "val"
    bundle = load_bundle(SHIPPED_BUNDLE)
    assert bundle.manifest.cells is not None
    result = analyse_photo(shared_data, bundle, row, None)
    assert result.n_classified == len(result.cells) > 0
    calls = idb1_blast_calls(shared_data, [result], cut=bundle.manifest.cells.cell_cut)
    assert calls["detected"] >= 0.9 * calls["annotated_blasts"]
    assert calls["sensitivity"]["rate"] is not None and calls["sensitivity"]["rate"] > 0.5
