"""The differential count: Wilson interval, Rogan-Gladen correction, the sample's decision."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.differential import (
    PERFECT,
    ErrorRates,
    SampleRule,
    SampleState,
    count,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # The figures: a true 20% reads 13-29% with 100 cells, 15-26% with 200.
        (20, 100, 0.1333, 0.2888),
        (40, 200, 0.1505, 0.2609),
        # No blasts at all: the lower end is exactly 0, the upper end the "rule of 3.7".
        (0, 100, 0.0, 0.0370),
        (100, 100, 0.9630, 1.0),
    ],
)
def test_wilson_interval_on_known_counts(k: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=5e-4)


def test_no_cells_say_nothing() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(5, 3)


@given(st.integers(0, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_the_interval_holds_the_observed_fraction(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= high <= 1.0
    if n:
        assert low <= k / n <= high


def test_rogan_gladen_undoes_the_classifiers_false_blasts() -> None:
    rates = ErrorRates(sensitivity=0.9, specificity=0.97)
    # A healthy patient's 3% of "blasts" are the classifier's own false calls.
    assert rates.correct(0.03) == 0.0
    assert rates.correct(0.20) == pytest.approx((0.20 + 0.97 - 1) / (0.9 + 0.97 - 1))
    assert rates.correct(0.95) == 1.0
    assert PERFECT.correct(0.123) == pytest.approx(0.123)


def test_rates_no_better_than_chance_are_refused() -> None:
    with pytest.raises(ValueError, match="better than chance"):
        ErrorRates(0.5, 0.5)
    with pytest.raises(ValueError, match="lie in"):
        ErrorRates(1.2, 0.9)


def test_a_clean_count_is_decided_negative_after_the_minimum() -> None:
    rule = SampleRule(threshold=0.05, min_cells=100, max_cells=400, max_fields=60)
    early = count(3, 62, 0, rule)
    assert early.state is SampleState.COUNTING and early.verdict is None
    assert "62 white cells so far" in early.message and "38 more" in early.message
    done = count(5, 100, 0, rule)
    assert done.state is SampleState.DECIDED
    assert done.verdict is Verdict.NO_LEUKEMIA_SUSPECTED
    assert done.interval_percent[1] < 5.0


def test_many_blasts_refer() -> None:
    rule = SampleRule()
    got = count(4, 120, 30, rule)
    assert got.verdict is Verdict.LEUKEMIA_SUSPECTED
    assert got.blast_percent == pytest.approx(25.0)
    assert got.interval_percent[0] >= 5.0
    assert "refer" in got.message


def test_the_correction_keeps_a_healthy_patient_from_an_endless_count() -> None:
    """3% false blasts: uncorrected the interval never clears 5% before the limit."""
    rule = SampleRule(threshold=0.05, min_cells=100, max_cells=400, max_fields=60)
    rates = ErrorRates(sensitivity=0.9, specificity=0.97)
    raw = count(20, 400, 12, rule)
    assert raw.verdict is Verdict.INDETERMINATE
    corrected = count(20, 400, 12, rule, rates)
    assert corrected.verdict is Verdict.NO_LEUKEMIA_SUSPECTED
    assert corrected.blast_fraction == 0.0


def test_a_sample_that_reaches_its_maximum_is_indeterminate_with_the_reason() -> None:
    rule = SampleRule(threshold=0.05, min_cells=100, max_cells=400, max_fields=60)
    by_cells = count(30, 400, 22, rule)
    assert by_cells.verdict is Verdict.INDETERMINATE
    assert "400 white cells read" in by_cells.message
    by_fields = count(60, 150, 8, rule)
    assert by_fields.verdict is Verdict.INDETERMINATE
    assert "60 fields read (150 white cells)" in by_fields.message


def test_bad_rules_and_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        SampleRule(threshold=0.0)
    with pytest.raises(ValueError, match="min_cells"):
        SampleRule(min_cells=500, max_cells=400)
    with pytest.raises(ValueError, match="bad counts"):
        count(1, 10, 11, SampleRule())
