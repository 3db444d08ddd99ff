"""What the status page reads and asks of the appliance: a small Protocol and its plain data.

The web app never touches the camera, the model or the database directly; it goes through
a `StatusSource`. `leukoscope.web.daemon_source` adapts the running daemon to it, and
`leukoscope.web.fake` is a fake that behaves like one (tests, the page's own demo).

Records are `leukoscope.appliance.records.Record`s, read by the one `RecordReader`;
the JSON API hands out their `to_json()` form. Samples are
`leukoscope.appliance.samples.Sample`s, read by the one `SampleReader`, started, closed
and reviewed through the daemon (its one writer).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from leukoscope.appliance.records import Record, RecordFilter, RecordPage
from leukoscope.appliance.samples import CellReview, Sample, SampleCell
from leukoscope.core.errors import LeukoscopeError


class CaptureRefusedError(LeukoscopeError, RuntimeError):
    """The appliance will not take a capture now; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class SampleRefusedError(LeukoscopeError, RuntimeError):
    """The appliance will not start, close or review this sample now (an id in use, a
    closed sample, no model loaded); `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SamplePage:
    """One page of samples, newest first; `next_before` is the cursor of the next page
    (the start time, unix seconds, of the last sample here), None on the last page."""

    items: list[Sample]
    next_before: float | None


@dataclass(frozen=True)
class Preview:
    """A live-view JPEG from the camera owner, with its focus score."""

    jpeg: bytes
    focus: float
    good_enough: bool
    paused: bool
    taken_at: float


class CaptureLog:
    """The last captures started from the page, each under a number the API hands out, so
    a client can follow its capture to the record it made (`GET /api/captures/<n>`)."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._next = 1
        self._results: OrderedDict[int, Callable[[], dict[str, Any] | None]] = OrderedDict()

    def add(self, result: Callable[[], dict[str, Any] | None]) -> int:
        """Remember a started capture; `result()` is None while it runs, then the record's
        plain form (or `{"ok": False, "error": ...}` when none was made). Its number."""
        with self._lock:
            capture_id = self._next
            self._next += 1
            self._results[capture_id] = result
            while len(self._results) > self.keep:
                self._results.popitem(last=False)
        return capture_id

    def get(self, capture_id: int) -> dict[str, Any] | None:
        """{"done": False} while capture `capture_id` runs, then {"done": True,
        "record_id", "outcome", "error"}; None when the number is unknown or forgotten."""
        with self._lock:
            result = self._results.get(capture_id)
        if result is None:
            return None
        done = result()
        if done is None:
            return {"done": False}
        rid = done.get("id")
        return {
            "done": True,
            "record_id": rid if isinstance(rid, int) else None,
            "outcome": done.get("outcome"),
            "error": done.get("error"),
        }


class StatusSource(Protocol):
    """Everything the web app reads from, or asks of, the appliance (any thread)."""

    def status(self) -> dict[str, Any]:
        """The daemon's state: phase, ready, faults, indicator, model, last result, counts."""

    def list_results(self, limit: int, before: int | None, flt: RecordFilter) -> RecordPage:
        """Up to `limit` records older than id `before` (None: from the newest), newest
        first, without their per-cell lists."""

    def export(self, flt: RecordFilter) -> Iterable[Record]:
        """Every record matching `flt`, newest first, without their per-cell lists."""

    def get_result(self, record_id: int) -> Record | None:
        """One record, or None."""

    def image_file(self, record: Record) -> Path | None:
        """The file of a record's image, or None if it has none (or it was deleted)."""

    def request_capture(self, sample_id: str | None) -> dict[str, Any]:
        """Start a capture the way the button does; returns at once with `result_seq` and
        `capture_id` (see `capture_result`).

        Raises:
            CaptureRefusedError: busy, not ready, or stopping (with the HTTP status to answer).
        """

    def capture_result(self, capture_id: int) -> dict[str, Any] | None:
        """Where a capture started by `request_capture` stands (`CaptureLog.get`)."""

    def confirm_clock(self, browser_unix: float) -> dict[str, Any]:
        """A logged-in person's browser time: trust the clock this boot if ours agrees;
        else say by how much it is off ({"ok", "trusted", "offset_s", "error"?})."""

    def preview(self) -> Preview:
        """The latest low-resolution frame (raises CaptureRefusedError(503) when none)."""

    def health(self) -> dict[str, Any]:
        """Camera, model, disk free, CPU temperature, uptimes and versions."""

    def models(self) -> list[dict[str, Any]]:
        """The current bundle (role "current") and the previous one if kept ("previous")."""

    def metrics(self) -> dict[str, Any]:
        """Figures for /metrics: counts by outcome, recent stage timings, faults, disk."""

    # --- samples -------------------------------------------------------------------------------

    def list_samples(self, limit: int, before: float | None) -> SamplePage:
        """Up to `limit` samples started before `before` (unix seconds; None: from the
        newest), newest first."""

    def get_sample(self, sample_id: str) -> Sample | None:
        """One sample with its fields and reviews, or None."""

    def sample_cells(self, sample: Sample) -> list[SampleCell]:
        """The white cells of a sample's counted fields, blasts first, most probable first."""

    def reviewed_cells(self) -> Iterable[tuple[Sample, SampleCell, Path | None]]:
        """Every reviewed cell with its sample and its photo (None once deleted)."""

    def active_sample(self) -> str | None:
        """The sample that captures now go to, or None."""

    def start_sample(self, sample_id: str) -> Sample:
        """Start a sample (it becomes the active one).

        Raises:
            SampleRefusedError: the id is in use, or the appliance cannot start one now.
        """

    def close_sample(self, sample_id: str) -> Sample:
        """Close a sample by hand (closing a closed one changes nothing).

        Raises:
            SampleRefusedError: no such sample, or the appliance cannot close it now.
        """

    def review_cell(
        self, sample_id: str, record_id: int, cell_index: int, label: str, reviewer: str
    ) -> CellReview:
        """Store a person's reading of one cell (a second review of a cell replaces the first).

        Raises:
            SampleRefusedError: no such sample or cell, a bad label or reviewer.
        """
