"""Simulated samples: held-out fields pooled into patients' samples, counted by a sample rule.

The appliance decides a patient from many fields (`leukoscope.analysis.differential`):
it adds each field's white cells and blasts to the count until the corrected 95% interval
clears the referral threshold either way, or a limit makes the sample indeterminate.
There are no multi-field patient records in the public sets, so samples are simulated:

1. A pool is the fields of one source and label (and one slide group, where asked).
   Retakes are not in it: they count nothing on the device either.
2. Each round shuffles the pool (seeded) and cuts it into consecutive, disjoint samples:
   a sample takes fields until the rule decides, and the next one starts with the next
   field. A round whose first sample runs out of fields undecided gives that one sample,
   indeterminate ("ran out"); leftover fields after a decided sample are no sample.
3. Over rounds, the share of samples referred, cleared and indeterminate, and the fields
   and cells they took. Samples of one round share no field, so the samples per round,
   not the total over rounds, is the honest count behind an interval.

`choose_rule` picks a rule from a grid, and which measured rates to correct by, on
VALIDATION pools by the criterion it states (`CRITERION`).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.differential import ErrorRates, SampleRule, SampleState, count
from leukoscope_tools.metrics import wilson

#: A leukemia pool's samples should be referred, a normal pool's cleared.
LEUKEMIA = "leukemia"
NORMAL = "normal"
#: The rule grid searched by default. Thresholds are clinical blast shares: 5% in blood is
#: worth a referral, 20% is acute leukaemia by WHO criteria.
THRESHOLDS = (0.05, 0.10, 0.20)
MIN_CELLS = (50, 100, 200)
MAX_CELLS = (200, 400, 1000)
MAX_FIELDS = (10, 20, 40, 80)
#: A rule is acceptable when no source's pools are wrongly decided more often than this.
MAX_WRONG = 0.05


@dataclass(frozen=True)
class Field:
    """One field's counts: white cells classified and, of them, called blasts."""

    n_cells: int
    n_blasts: int


@dataclass(frozen=True)
class SampleOutcome:
    """How one simulated sample ended."""

    verdict: Verdict  # LEUKEMIA_SUSPECTED, NO_LEUKEMIA_SUSPECTED or INDETERMINATE
    n_fields: int
    n_cells: int
    #: The pool ran out of fields before the rule decided (indeterminate).
    ran_out: bool


def run_sample(
    fields: Sequence[Field], rule: SampleRule, rates: ErrorRates
) -> tuple[SampleOutcome, int]:
    """Count `fields` in order until the rule decides: the outcome and the fields it used."""
    n_cells = n_blasts = 0
    for i, f in enumerate(fields):
        n_cells += f.n_cells
        n_blasts += f.n_blasts
        if n_cells < rule.min_cells and i + 1 < rule.max_fields:
            continue  # `count` can only say "counting" here; skipping it saves time
        d = count(i + 1, n_cells, n_blasts, rule, rates)
        if d.state is SampleState.DECIDED:
            assert d.verdict is not None
            return SampleOutcome(d.verdict, i + 1, n_cells, False), i + 1
    return SampleOutcome(Verdict.INDETERMINATE, len(fields), n_cells, True), len(fields)


def simulate(
    pool: Sequence[Field],
    rule: SampleRule,
    rates: ErrorRates,
    rounds: int,
    rng: np.random.Generator,
) -> list[list[SampleOutcome]]:
    """Per round, the pool shuffled and cut into disjoint samples (see the module's step 2)."""
    out: list[list[SampleOutcome]] = []
    if not pool:
        return out
    for _ in range(rounds):
        fields = [pool[i] for i in rng.permutation(len(pool))]
        samples: list[SampleOutcome] = []
        start = 0
        while start < len(fields):
            outcome, used = run_sample(fields[start:], rule, rates)
            if outcome.ran_out and samples:
                break  # leftover fields: not a whole sample
            samples.append(outcome)
            start += used
        out.append(samples)
    return out


def _ci(k: float, n: float) -> list[float] | None:
    """Wilson 95% interval on the effective counts (rounded to whole samples)."""
    n_eff = max(1, round(n))
    got = wilson(min(n_eff, round(k)), n_eff) if n > 0 else None
    return None if got is None else [round(got[0], 4), round(got[1], 4)]


def summarise(by_round: Sequence[Sequence[SampleOutcome]], label: str) -> dict[str, Any]:
    """A pool's sample-level numbers: verdict shares with intervals, fields and cells taken.

    For a leukemia pool `correct` is the share referred (sensitivity) and `wrong` the share
    cleared; for a normal pool `correct` is the share cleared (specificity), `wrong` referred.
    Intervals use the samples per round (disjoint) as n, not the total over rounds.
    """
    flat = [o for r in by_round for o in r]
    n = len(flat)
    if n == 0:
        return {"label": label, "samples": 0}
    rounds = len(by_round)
    refer = sum(o.verdict is Verdict.LEUKEMIA_SUSPECTED for o in flat)
    clear = sum(o.verdict is Verdict.NO_LEUKEMIA_SUSPECTED for o in flat)
    indet = n - refer - clear
    right, wrong = (refer, clear) if label == LEUKEMIA else (clear, refer)
    per_round = n / rounds
    fields = [o.n_fields for o in flat]
    cells = [o.n_cells for o in flat]
    return {
        "label": label,
        "samples": n,
        "rounds": rounds,
        "samples_per_round": round(per_round, 2),
        "correct": round(right / n, 4),
        "correct_ci": _ci(right / rounds, per_round),
        "wrong": round(wrong / n, 4),
        "wrong_ci": _ci(wrong / rounds, per_round),
        "indeterminate": round(indet / n, 4),
        "indeterminate_ci": _ci(indet / rounds, per_round),
        "ran_out": round(sum(o.ran_out for o in flat) / n, 4),
        "fields_mean": round(statistics.fmean(fields), 2),
        "fields_median": float(statistics.median(fields)),
        "fields_max": max(fields),
        "cells_mean": round(statistics.fmean(cells), 1),
        "cells_median": float(statistics.median(cells)),
    }


def rule_grid(
    thresholds: Iterable[float] = THRESHOLDS,
    min_cells: Iterable[int] = MIN_CELLS,
    max_cells: Iterable[int] = MAX_CELLS,
    max_fields: Iterable[int] = MAX_FIELDS,
) -> list[SampleRule]:
    """Every valid rule of the grid (min_cells <= max_cells)."""
    return [
        SampleRule(t, lo, hi, mf)
        for t, lo, hi, mf in itertools.product(thresholds, min_cells, max_cells, max_fields)
        if lo <= hi
    ]


def evaluate_rule(
    pools: Mapping[str, tuple[str, Sequence[Field]]],
    rule: SampleRule,
    rates: ErrorRates,
    rounds: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Each pool's summary under `rule` (pools: name -> (label, fields)); seeded per pool."""
    out = {}
    for i, (name, (label, pool)) in enumerate(sorted(pools.items())):
        rng = np.random.default_rng([seed, i])
        out[name] = summarise(simulate(pool, rule, rates, rounds, rng), label)
    return out


def rule_score(pools: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """What the criterion compares: the worst wrong-decision share, the mean right-decision
    share and the mean fields, over the pools that hold samples."""
    used = [p for p in pools.values() if p.get("samples")]
    return {
        "worst_wrong": max((p["wrong"] for p in used), default=1.0),
        "mean_correct": round(statistics.fmean(p["correct"] for p in used), 4) if used else 0.0,
        "mean_fields": round(statistics.fmean(p["fields_mean"] for p in used), 2) if used else 0.0,
    }


CRITERION = (
    f"on validation samples only: among rules (and rates to correct by) whose every pool "
    f"(source and label) is wrongly decided at most {MAX_WRONG:.0%} of the time (a "
    f"leukemia sample cleared, a normal one referred), the highest mean share decided "
    f"rightly (sensitivity and specificity averaged over the pools), then the fewest "
    f"fields; if none qualifies, the fewest wrong decisions in the worst pool, then the same"
)


def criterion_key(t: dict[str, Any]) -> tuple[float, ...]:
    """How `CRITERION` orders qualifying tries (smallest first)."""
    r = t["rule"]
    return (
        -t["mean_correct"],
        t["mean_fields"],
        r["min_cells"],
        r["max_cells"],
        r["max_fields"],
        r["threshold"],
    )


def fallback_key(t: dict[str, Any]) -> tuple[float, ...]:
    """How `CRITERION` orders tries when none qualifies: the worst pool's wrong share first."""
    return (t["worst_wrong"], *criterion_key(t))


def best_try(tried: Sequence[dict[str, Any]], max_wrong: float = MAX_WRONG) -> dict[str, Any]:
    """The try `CRITERION` picks among `tried`."""
    ok = [t for t in tried if t["worst_wrong"] <= max_wrong]
    return min(ok, key=criterion_key) if ok else min(tried, key=fallback_key)


def choose_rule(
    pools: Mapping[str, tuple[str, Sequence[Field]]],
    rules: Sequence[SampleRule],
    rates: Mapping[str, ErrorRates],
    rounds: int,
    seed: int,
    max_wrong: float = MAX_WRONG,
) -> tuple[SampleRule, str, bool, list[dict[str, Any]]]:
    """The rule and rates `CRITERION` picks on these (validation) pools.

    Args:
        rates: the candidate rates to correct by, by name (e.g. where they were measured).

    Returns (rule, the rates' name, whether it met the bound, every try).
    """
    tried = []
    for name, er in rates.items():
        for rule in rules:
            per_pool = evaluate_rule(pools, rule, er, rounds, seed)
            tried.append(
                {"rates": name, "rule": rule_dict(rule), **rule_score(per_pool), "pools": per_pool}
            )
    if not tried:
        raise ValueError("no rule or no rates to choose from")
    best = best_try(tried, max_wrong)
    r = best["rule"]
    rule = SampleRule(r["threshold"], r["min_cells"], r["max_cells"], r["max_fields"])
    return rule, best["rates"], best["worst_wrong"] <= max_wrong, tried


def rule_dict(rule: SampleRule) -> dict[str, Any]:
    """A rule as the JSON object the manifest's `sample` holds (without the rates)."""
    return {
        "threshold": rule.threshold,
        "min_cells": rule.min_cells,
        "max_cells": rule.max_cells,
        "max_fields": rule.max_fields,
    }
