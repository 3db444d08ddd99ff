"""Samples in memory for the fake appliance, with the real `Sample` types and rule.

It behaves as the daemon's samples do: a started sample is the active one and takes the
captures as fields; a field counts unless it was a retake or repeats a counted field; the
rule decides after each field, and a decided or closed sample takes no more; a review
needs a cell of a counted field and replaces an earlier review of that cell.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.differential import ErrorRates, SampleRule, count
from leukoscope.appliance.records import Record
from leukoscope.appliance.samples import (
    CellReview,
    FieldStatus,
    Sample,
    SampleCell,
    SampleError,
    SampleField,
    SampleState,
    check_review,
    check_sample_id,
    record_cells,
)
from leukoscope.web.source import SamplePage, SampleRefusedError

#: The fake's rule and classifier rates (a `cells` bundle's would come from its manifest).
RULE = SampleRule(threshold=0.05, min_cells=100, max_cells=400, max_fields=60)
RATES = ErrorRates(sensitivity=0.92, specificity=0.97)


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds")


class FakeSamples:
    """Samples, fields and reviews of the fake appliance (thread-safe)."""

    def __init__(
        self, records: Callable[[int], Record | None], model: tuple[str, str, str]
    ) -> None:
        self._records = records
        self._model = model
        self._lock = threading.Lock()
        self._samples: dict[str, Sample] = {}
        self._started: dict[str, float] = {}
        #: The sample captures go to; None when none is open.
        self.active: str | None = None

    def start(self, sample_id: str, *, now: float | None = None) -> Sample:
        """Start a sample; it becomes the active one."""
        try:
            check_sample_id(sample_id)
        except SampleError as exc:
            raise SampleRefusedError(str(exc), 400) from None
        unix = time.time() if now is None else now
        name, version, sha = self._model
        with self._lock:
            if sample_id in self._samples:
                raise SampleRefusedError(f"sample {sample_id!r} exists already: give a new id")
            sample = Sample(
                sample_id, _iso(unix), SampleState.OPEN, None, count(0, 0, 0, RULE, RATES).message,
                None, RULE, RATES, name, version, sha,
            )  # fmt: skip
            self._samples[sample_id] = sample
            self._started[sample_id] = unix
            self.active = sample_id
        return sample

    def takes_fields(self, sample_id: str | None) -> bool:
        """True if `sample_id` names an open sample."""
        with self._lock:
            s = self._samples.get(sample_id or "")
            return s is not None and s.state is SampleState.OPEN

    def add_field(
        self, sample_id: str, record: Record, *, repeats: int | None = None, shared: float = 0.6
    ) -> Sample:
        """Count `record` as the sample's next field (a retake counts nothing; `repeats`:
        the counted record it shows again, so it counts nothing either)."""
        cells = record.cells or {}
        retake = record.outcome == Verdict.RETAKE.value or not cells
        with self._lock:
            sample = self._samples.get(sample_id)
            if sample is None or sample.state is not SampleState.OPEN:
                raise SampleRefusedError(f"sample {sample_id!r} is not open")
            status = FieldStatus.RETAKE if retake else FieldStatus.COUNTED
            if not retake and repeats is not None:
                status = FieldStatus.REPEAT
            n_cells = 0 if retake else int(cells.get("n_classified") or 0)
            n_blasts = 0 if retake else int(cells.get("n_blasts") or 0)
            field = SampleField(
                record.id, len(sample.fields) + 1, status, n_cells, n_blasts,
                repeats if status is FieldStatus.REPEAT else None,
                shared if status is FieldStatus.REPEAT else None,
            )  # fmt: skip
            sample = replace(sample, fields=(*sample.fields, field))
            d = sample.differential()
            state = SampleState.DECIDED if d.verdict is not None else SampleState.OPEN
            sample = replace(sample, state=state, verdict=d.verdict, message=d.message)
            self._samples[sample_id] = sample
            if state is not SampleState.OPEN and self.active == sample_id:
                self.active = None
        return sample

    def close(self, sample_id: str, *, now: float | None = None) -> Sample:
        """Close a sample by hand (closing a closed one changes nothing)."""
        unix = time.time() if now is None else now
        with self._lock:
            sample = self._samples.get(sample_id)
            if sample is None:
                raise SampleRefusedError(f"no sample {sample_id!r}", 404)
            if sample.state is SampleState.CLOSED:
                return sample
            message = (
                sample.message
                if sample.state is SampleState.DECIDED
                else f"closed by hand after {sample.differential().n_cells} white cells: no verdict"
            )
            sample = replace(
                sample, state=SampleState.CLOSED, closed_at=_iso(unix), message=message
            )
            self._samples[sample_id] = sample
            if self.active == sample_id:
                self.active = None
        return sample

    def review(
        self,
        sample_id: str,
        record_id: int,
        cell_index: int,
        label: str,
        reviewer: str,
        *,
        now: float | None = None,
    ) -> CellReview:
        """Store a review of a cell of a counted field (replacing an earlier one)."""
        try:
            verdict, reviewer = check_review(label, reviewer)
        except SampleError as exc:
            raise SampleRefusedError(str(exc), 400) from None
        unix = time.time() if now is None else now
        with self._lock:
            sample = self._samples.get(sample_id)
            if sample is None:
                raise SampleRefusedError(f"no sample {sample_id!r}", 404)
            record = self._records(record_id)
            cells = [] if record is None else record_cells(record)
            counted = any(f.record_id == record_id for f in sample.counted)
            if not counted or not 0 <= cell_index < len(cells):
                raise SampleRefusedError(f"record {record_id} has no cell {cell_index}", 404)
            cell = cells[cell_index]
            review = CellReview(
                record_id, cell_index, verdict, bool(cell.get("blast")), cell.get("p_blast"),
                reviewer, _iso(unix),
            )  # fmt: skip
            kept = [
                r for r in sample.reviews if (r.record_id, r.cell_index) != (record_id, cell_index)
            ]
            reviews = sorted([*kept, review], key=lambda r: (r.record_id, r.cell_index))
            self._samples[sample_id] = replace(sample, reviews=tuple(reviews))
        return review

    def get(self, sample_id: str) -> Sample | None:
        """One sample, or None."""
        with self._lock:
            return self._samples.get(sample_id)

    def page(self, limit: int, before: float | None) -> SamplePage:
        """Up to `limit` samples started before `before`, newest first."""
        with self._lock:
            started = sorted(self._started.items(), key=lambda kv: -kv[1])
            rows = [(self._samples[sid], t) for sid, t in started if before is None or t < before]
        page = rows[:limit]
        more = len(rows) > limit and bool(page)
        return SamplePage([s for s, _ in page], page[-1][1] if more else None)

    def cells(self, sample: Sample) -> list[SampleCell]:
        """The cells of the sample's counted fields, blasts first, most probable first."""
        reviews = {(r.record_id, r.cell_index): r for r in sample.reviews}
        out: list[SampleCell] = []
        for f in sample.counted:
            record = self._records(f.record_id)
            for i, cell in enumerate([] if record is None else record_cells(record)):
                box = cell.get("box") or [0, 0, 0, 0]
                out.append(
                    SampleCell(
                        f.record_id, i, (box[0], box[1], box[2], box[3]), cell.get("p_blast"),
                        bool(cell.get("blast")), reviews.get((f.record_id, i)),
                    )
                )  # fmt: skip
        out.sort(key=lambda c: (not c.model_blast, -(c.p_blast or 0.0)))
        return out

    def reviewed(
        self, image_file: Callable[[Record], Path | None]
    ) -> Iterator[tuple[Sample, SampleCell, Path | None]]:
        """Every reviewed cell with its sample and its photo (None once deleted)."""
        with self._lock:
            samples = sorted(self._samples.values(), key=lambda s: s.id)
        for sample in samples:
            for cell in self.cells(sample):
                if cell.review is not None:
                    record = self._records(cell.record_id)
                    yield sample, cell, None if record is None else image_file(record)
