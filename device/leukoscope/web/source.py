"""What the status page reads and asks of the appliance: a small Protocol and its plain data.

The web app never touches the camera, the model or the database directly; it goes through
a `StatusSource`. `leukoscope.web.daemon_source` adapts the running daemon to it, and
`leukoscope.web.fake` is a fake that behaves like one (tests, the page's own demo).

Records are plain dicts with the store's columns (`id`, `created_at`, `outcome`,
`p_leukemia`, `quality`, `timings_ms`, `sample_id`, `model_*`, `image_*`, ...), so the
JSON API can hand them out as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from leukoscope.core.errors import LeukoscopeError

#: Outcomes a record can have: the four verdicts, or a fault.
OUTCOMES = ("no-leukemia-suspected", "leukemia-suspected", "indeterminate", "retake", "fault")


class CaptureRefusedError(LeukoscopeError, RuntimeError):
    """The appliance will not take a capture now; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ResultFilter:
    """Which records a listing wants: an outcome and a date range (UTC days, inclusive)."""

    outcome: str | None = None
    date_from: date | None = None
    date_to: date | None = None


@dataclass(frozen=True)
class ResultPage:
    """One page of records, newest first; `next_before` is the id to continue below."""

    items: list[dict[str, Any]]
    next_before: int | None


@dataclass(frozen=True)
class Preview:
    """A live-view JPEG from the camera owner, with its focus score."""

    jpeg: bytes
    focus: float
    good_enough: bool
    paused: bool
    taken_at: float


class StatusSource(Protocol):
    """Everything the web app reads from, or asks of, the appliance (any thread)."""

    def status(self) -> dict[str, Any]:
        """The daemon's state: phase, ready, faults, indicator, model, last result, counts."""

    def list_results(self, limit: int, before: int | None, flt: ResultFilter) -> ResultPage:
        """Up to `limit` records older than id `before` (all if None), newest first."""

    def get_result(self, record_id: int) -> dict[str, Any] | None:
        """One record, or None."""

    def image_path(self, record_id: int) -> Path | None:
        """The file of a record's image, or None if it has none (or it was deleted)."""

    def request_capture(self, sample_id: str | None) -> dict[str, Any]:
        """Start a capture the way the button does; returns at once with `result_seq`.

        Raises:
            CaptureRefusedError: busy, not ready, or stopping (with the HTTP status to answer).
        """

    def preview(self) -> Preview:
        """The latest low-resolution frame (raises CaptureRefusedError(503) when none)."""

    def health(self) -> dict[str, Any]:
        """Camera, model, disk free, CPU temperature, uptimes and versions."""

    def models(self) -> list[dict[str, Any]]:
        """The current bundle (role "current") and the previous one if kept ("previous")."""

    def metrics(self) -> dict[str, Any]:
        """Figures for /metrics: counts by outcome, recent stage timings, faults, disk."""
