"""From a probability of leukemia to the verdict a technician sees."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    """What the appliance answers for one photo."""

    LEUKEMIA_SUSPECTED = "leukemia-suspected"
    NO_LEUKEMIA_SUSPECTED = "no-leukemia-suspected"
    INDETERMINATE = "indeterminate"
    RETAKE = "retake"


@dataclass(frozen=True)
class Thresholds:
    """The decision band from a bundle: below `low` is negative, at or above `high` positive.

    Between the two the answer is indeterminate (refer, or retake another field).
    `low == high` means no indeterminate band.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.low <= self.high <= 1.0):
            raise ValueError(f"thresholds need 0 <= low <= high <= 1, got {self.low}, {self.high}")

    def decide(self, p_leukemia: float) -> Verdict:
        """The verdict for one probability of leukemia."""
        if p_leukemia >= self.high:
            return Verdict.LEUKEMIA_SUSPECTED
        if p_leukemia < self.low:
            return Verdict.NO_LEUKEMIA_SUSPECTED
        return Verdict.INDETERMINATE
