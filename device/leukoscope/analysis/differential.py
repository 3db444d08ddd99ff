"""The differential count of a sample: blasts among the white cells read across its fields.

A technician judges a patient from 100-200 consecutive white cells, not from one field:
the blast percentage against a threshold (20% or more is acute leukaemia by WHO criteria;
5% or more in blood is rare without a blood cancer and worth a referral). Steps:

1. The observed blast fraction `k / n` gets a 95% Wilson score interval (the binomial
   interval that stays inside [0, 1] and behaves at k = 0, where the plain normal one
   collapses to a point).
2. The classifier is not perfect: calling a share `1 - specificity` of normal cells blasts,
   it would show a healthy patient a few percent of "blasts". The Rogan-Gladen estimator
   undoes that: true = (observed + specificity - 1) / (sensitivity + specificity - 1),
   applied to the estimate and both interval ends (it is increasing, so the order holds),
   clipped to [0, 1]. The rates come from the bundle, measured on validation cells.
3. The sample is decided once the corrected interval lies wholly on one side of the
   referral threshold, and at least `min_cells` were read; at `max_cells` or `max_fields`
   without that, it is indeterminate with the reason.

The interval ignores the uncertainty of the measured rates themselves, so it is a little
too narrow when the validation set was small; `min_cells` keeps a decision from resting
on a handful of cells either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from leukoscope.analysis.decision import Verdict

#: The two-sided 95% normal quantile.
Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion k/n (as fractions)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At k = 0 (or n) the exact end is 0 (or 1); rounding must not move it off.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return (low, high)


@dataclass(frozen=True)
class ErrorRates:
    """The cell classifier's rates at its cell cut, measured on validation cells."""

    sensitivity: float
    specificity: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.sensitivity <= 1.0 and 0.0 <= self.specificity <= 1.0):
            raise ValueError(f"rates must lie in [0, 1], got {self}")
        if self.sensitivity + self.specificity <= 1.0:
            raise ValueError(
                f"sensitivity + specificity must exceed 1 (a classifier better than chance), "
                f"got {self.sensitivity} + {self.specificity}"
            )

    def correct(self, observed: float) -> float:
        """Rogan-Gladen: the true blast fraction that would show `observed`, in [0, 1]."""
        true = (observed + self.specificity - 1.0) / (self.sensitivity + self.specificity - 1.0)
        return min(1.0, max(0.0, true))


#: A classifier taken at its word (no correction).
PERFECT = ErrorRates(1.0, 1.0)


@dataclass(frozen=True)
class SampleRule:
    """When a sample is decided: the referral threshold and how many cells and fields."""

    #: Blast fraction at or above which the patient is referred (0.05 = 5%).
    threshold: float = 0.05
    #: No decision before this many classified white cells.
    min_cells: int = 100
    #: Indeterminate once this many cells were read without a decision.
    max_cells: int = 400
    #: Indeterminate after this many fields without a decision.
    max_fields: int = 60

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")
        if not 1 <= self.min_cells <= self.max_cells:
            raise ValueError(
                f"need 1 <= min_cells <= max_cells, got {self.min_cells}, {self.max_cells}"
            )
        if self.max_fields < 1:
            raise ValueError(f"max_fields must be at least 1, got {self.max_fields}")


class SampleState(StrEnum):
    """Where a sample stands after its latest field."""

    COUNTING = "counting"
    DECIDED = "decided"


@dataclass(frozen=True)
class Differential:
    """A sample's count so far and what it means."""

    n_fields: int
    n_cells: int
    n_blasts: int
    #: The blast fraction corrected for the classifier's rates, and its 95% interval.
    blast_fraction: float
    interval: tuple[float, float]
    state: SampleState
    #: The verdict once decided; INDETERMINATE when a limit was reached first.
    verdict: Verdict | None
    #: Why the sample stands where it does, in words for the technician.
    message: str

    @property
    def blast_percent(self) -> float:
        """The corrected blast fraction in percent."""
        return 100.0 * self.blast_fraction

    @property
    def interval_percent(self) -> tuple[float, float]:
        """The corrected 95% interval in percent."""
        return (100.0 * self.interval[0], 100.0 * self.interval[1])


def count(
    n_fields: int,
    n_cells: int,
    n_blasts: int,
    rule: SampleRule,
    rates: ErrorRates = PERFECT,
) -> Differential:
    """The differential of a sample of `n_fields` fields with these counts, and its decision."""
    if n_fields < 0 or n_cells < 0 or not 0 <= n_blasts <= n_cells:
        raise ValueError(f"bad counts: {n_fields} fields, {n_cells} cells, {n_blasts} blasts")
    observed = n_blasts / n_cells if n_cells else 0.0
    low, high = wilson_interval(n_blasts, n_cells)
    fraction = rates.correct(observed)
    interval = (rates.correct(low), rates.correct(high))
    pct = f"{100 * rule.threshold:g}%"
    if n_cells >= rule.min_cells and interval[0] >= rule.threshold:
        return Differential(
            n_fields, n_cells, n_blasts, fraction, interval, SampleState.DECIDED,
            Verdict.LEUKEMIA_SUSPECTED,
            f"blasts at or above {pct} in {n_cells} white cells: leukemia suspected, refer",
        )  # fmt: skip
    if n_cells >= rule.min_cells and interval[1] < rule.threshold:
        return Differential(
            n_fields, n_cells, n_blasts, fraction, interval, SampleState.DECIDED,
            Verdict.NO_LEUKEMIA_SUSPECTED,
            f"blasts below {pct} in {n_cells} white cells: no leukemia suspected",
        )  # fmt: skip
    if n_cells >= rule.max_cells or n_fields >= rule.max_fields:
        limit = (
            f"{n_cells} white cells read"
            if n_cells >= rule.max_cells
            else f"{n_fields} fields read ({n_cells} white cells)"
        )
        return Differential(
            n_fields, n_cells, n_blasts, fraction, interval, SampleState.DECIDED,
            Verdict.INDETERMINATE,
            f"{limit} and the blast share is still too close to {pct} to call: "
            "indeterminate, have the smear read by a person",
        )  # fmt: skip
    need = (
        f"{rule.min_cells - n_cells} more white cells at least"
        if n_cells < rule.min_cells
        else "more white cells"
    )
    return Differential(
        n_fields, n_cells, n_blasts, fraction, interval, SampleState.COUNTING, None,
        f"{n_cells} white cells so far ({need}): move to the next field",
    )  # fmt: skip
