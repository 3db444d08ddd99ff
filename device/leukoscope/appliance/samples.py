"""Samples: one patient's smear, its fields counted into one differential and one verdict.

A sample is started with an id (the page, `leukoscope capture --sample-id`, or a long
press of the button); each photo taken for it becomes a field. A field's white cells are
added to the sample's count unless the field repeats one already counted (it shares more
than `max_overlap` of its area with it: `analysis.overlap`), or the photo was a retake.
After each field the sample's differential is recomputed (`analysis.differential`): it
stays open, or is decided (and then takes no more fields), or is closed by hand.

Storage: the tables `samples`, `sample_fields` and `cell_reviews` of the record database
(`appliance.records` holds the schema). A field is written in the same transaction as its
record, so a power cut leaves both or neither: a restarted daemon continues the sample
with nothing lost or counted twice. The counts are never stored apart from the fields
they are summed from, so they cannot drift. `Samples` writes (the daemon's thread);
`SampleReader` reads (the web threads, the CLI, the tests).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.differential import Differential, ErrorRates, SampleRule, count
from leukoscope.analysis.overlap import shared_fraction
from leukoscope.appliance.records import NewRecord, Record, RecordReader, Store
from leukoscope.core.errors import StoreError

#: A sample id: what a technician types or scans (letters, digits, a few separators).
SAMPLE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,63}$")
#: A reviewer's name as typed on the page.
REVIEWER_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")


class SampleState(StrEnum):
    """Where a sample stands."""

    OPEN = "open"
    DECIDED = "decided"
    CLOSED = "closed"


class FieldStatus(StrEnum):
    """What became of one photo taken for a sample."""

    COUNTED = "counted"
    REPEAT = "repeat"  # the same region as a counted field: not counted again
    RETAKE = "retake"  # refused by the quality gate or the cell analysis


class ReviewLabel(StrEnum):
    """A person's reading of one cell."""

    BLAST = "blast"
    NOT_BLAST = "not-blast"


class SampleError(StoreError, ValueError):
    """A sample request that cannot be carried out (unknown id, decided, bad cell ...)."""


def check_sample_id(text: Any) -> str:
    """A valid sample id, or SampleError saying what a sample id may be."""
    if not isinstance(text, str) or not SAMPLE_ID_RE.fullmatch(text):
        shown = repr(text) if not isinstance(text, str) or len(text) <= 80 else "a long text"
        raise SampleError(
            f"bad sample id {shown}: 1-64 letters, digits, spaces or . _ : / -, "
            "starting with a letter or digit"
        )
    return text


def check_review(label: Any, reviewer: Any) -> tuple[ReviewLabel, str]:
    """A review's label and the reviewer's name (stripped), or SampleError saying why not."""
    try:
        verdict = ReviewLabel(label)
    except ValueError:
        raise SampleError(f"bad label {label!r}: blast or not-blast") from None
    if not isinstance(reviewer, str) or not REVIEWER_RE.match(reviewer.strip()):
        raise SampleError("a review needs the reviewer's name (1-64 characters)")
    return verdict, reviewer.strip()


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class SampleField:
    """One photo taken for a sample."""

    record_id: int
    position: int
    status: FieldStatus
    n_cells: int
    n_blasts: int
    #: A repeat: the counted field it shows again, and the share of area they have in common.
    repeats_record: int | None = None
    shared: float | None = None


@dataclass(frozen=True)
class CellReview:
    """A person's reading of one cell of a counted field."""

    record_id: int
    cell_index: int
    label: ReviewLabel
    model_blast: bool
    p_blast: float | None
    reviewer: str
    reviewed_at: str


@dataclass(frozen=True)
class Sample:
    """A sample with its fields and reviews, as stored."""

    id: str
    started_at: str
    state: SampleState
    verdict: Verdict | None
    message: str
    closed_at: str | None
    rule: SampleRule
    rates: ErrorRates
    model_name: str | None
    model_version: str | None
    model_sha256: str | None
    fields: tuple[SampleField, ...] = ()
    reviews: tuple[CellReview, ...] = ()

    @property
    def counted(self) -> list[SampleField]:
        """The fields whose cells count."""
        return [f for f in self.fields if f.status is FieldStatus.COUNTED]

    def differential(self) -> Differential:
        """The count as the model gave it."""
        counted = self.counted
        return count(
            len(counted),
            sum(f.n_cells for f in counted),
            sum(f.n_blasts for f in counted),
            self.rule,
            self.rates,
        )

    def reviewed_differential(self) -> Differential:
        """The count with every reviewed cell read as the reviewer read it.

        A reviewed cell replaces the model's call by the person's, so the classifier's
        error rates no longer apply to it; the correction still applies to the rest,
        which is why the reviewed count is a second reading beside the model's, not a
        replacement of it.
        """
        counted = self.counted
        blasts = sum(f.n_blasts for f in counted)
        for r in self.reviews:
            blasts += int(r.label is ReviewLabel.BLAST) - int(r.model_blast)
        return count(len(counted), sum(f.n_cells for f in counted), blasts, self.rule, self.rates)

    def to_json(self) -> dict[str, Any]:
        """The sample as plain data (the API's form)."""
        d = self.differential()
        rd = self.reviewed_differential()
        return {
            "id": self.id,
            "started_at": self.started_at,
            "state": self.state.value,
            "verdict": None if self.verdict is None else self.verdict.value,
            "message": self.message,
            "closed_at": self.closed_at,
            "model": {
                "name": self.model_name,
                "version": self.model_version,
                "sha256": self.model_sha256,
            },
            "rule": asdict(self.rule),
            "rates": asdict(self.rates),
            "n_fields": d.n_fields,
            "n_cells": d.n_cells,
            "n_blasts": d.n_blasts,
            "blast_percent": d.blast_percent,
            "interval": list(d.interval_percent),
            "reviewed": {
                "n_reviews": len(self.reviews),
                "n_blasts": rd.n_blasts,
                "blast_percent": rd.blast_percent,
                "interval": list(rd.interval_percent),
                "verdict": None if rd.verdict is None else rd.verdict.value,
                "message": rd.message,
            },
            "fields": [
                {**asdict(f), "status": f.status.value} for f in self.fields
            ],
            "reviews": [
                {**asdict(r), "label": r.label.value} for r in self.reviews
            ],
        }  # fmt: skip


@dataclass(frozen=True)
class SampleCell:
    """One white cell of a counted field, for the gallery and the review."""

    record_id: int
    cell_index: int
    box: tuple[float, float, float, float]
    p_blast: float | None
    model_blast: bool
    review: CellReview | None


def _rule_json(rule: SampleRule, rates: ErrorRates) -> str:
    return json.dumps({"rule": asdict(rule), "rates": asdict(rates)}, sort_keys=True)


def _sample_from(row: sqlite3.Row, fields: list[SampleField], reviews: list[CellReview]) -> Sample:
    spec = json.loads(row["rule"])
    return Sample(
        id=row["id"],
        started_at=row["started_at"],
        state=SampleState(row["state"]),
        verdict=None if row["verdict"] is None else Verdict(row["verdict"]),
        message=row["message"],
        closed_at=row["closed_at"],
        rule=SampleRule(**spec["rule"]),
        rates=ErrorRates(**spec["rates"]),
        model_name=row["model_name"],
        model_version=row["model_version"],
        model_sha256=row["model_sha256"],
        fields=tuple(fields),
        reviews=tuple(reviews),
    )


def _field_from(row: sqlite3.Row) -> SampleField:
    return SampleField(
        record_id=int(row["record_id"]),
        position=int(row["position"]),
        status=FieldStatus(row["status"]),
        n_cells=int(row["n_cells"]),
        n_blasts=int(row["n_blasts"]),
        repeats_record=row["repeats_record"],
        shared=row["shared"],
    )


def _review_from(row: sqlite3.Row) -> CellReview:
    return CellReview(
        record_id=int(row["record_id"]),
        cell_index=int(row["cell_index"]),
        label=ReviewLabel(row["label"]),
        model_blast=bool(row["model_blast"]),
        p_blast=row["p_blast"],
        reviewer=row["reviewer"],
        reviewed_at=row["reviewed_at"],
    )


_FIELD_COLUMNS = "record_id, position, status, n_cells, n_blasts, repeats_record, shared"
_REVIEW_COLUMNS = "record_id, cell_index, label, model_blast, p_blast, reviewer, reviewed_at"


def _load(db: sqlite3.Connection, sample_id: str) -> Sample | None:
    row = db.execute("SELECT * FROM samples WHERE id = ?", (sample_id,)).fetchone()
    if row is None:
        return None
    fields = db.execute(
        f"SELECT {_FIELD_COLUMNS} FROM sample_fields WHERE sample_id = ? ORDER BY position",
        (sample_id,),
    ).fetchall()
    reviews = db.execute(
        f"SELECT {_REVIEW_COLUMNS} FROM cell_reviews WHERE sample_id = ? "
        "ORDER BY record_id, cell_index",
        (sample_id,),
    ).fetchall()
    return _sample_from(row, [_field_from(f) for f in fields], [_review_from(r) for r in reviews])


def record_cells(record: Record) -> list[dict[str, Any]]:
    """The per-cell list of a record (empty for whole-field records or when not kept)."""
    cells = (record.cells or {}).get("cells")
    return [c for c in cells if isinstance(c, dict)] if isinstance(cells, list) else []


@dataclass(frozen=True)
class FieldResult:
    """What adding a photo to a sample did."""

    record_id: int
    field: SampleField
    sample: Sample

    @property
    def message(self) -> str:
        """What the technician does next, in words ("62 white cells so far: move to ...")."""
        f, s = self.field, self.sample
        so_far = f"{s.differential().n_cells} white cells so far"
        if f.status is FieldStatus.REPEAT:
            pos = next((g.position for g in s.fields if g.record_id == f.repeats_record), None)
            return (
                f"this field repeats field {pos}: move on, its cells were not counted again "
                f"({so_far})"
            )
        if f.status is FieldStatus.RETAKE:
            return f"this photo cannot be counted: retake it or move to another field ({so_far})"
        return s.message

    def to_json(self) -> dict[str, Any]:
        """The field and what it means, as plain data (a capture's reply carries it)."""
        repeats = next(
            (g.position for g in self.sample.fields if g.record_id == self.field.repeats_record),
            None,
        )
        return {
            **asdict(self.field),
            "status": self.field.status.value,
            "repeats_position": repeats,
            "message": self.message,
        }


class Samples:
    """Writes samples, fields and reviews through the record store (one writer thread)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, sample_id: str) -> Sample | None:
        """The sample as stored now."""
        return _load(self.store.reader.connection(), sample_id)

    def start(
        self,
        sample_id: str,
        rule: SampleRule,
        rates: ErrorRates,
        model: tuple[str, str, str] | None = None,
        *,
        now: float | None = None,
    ) -> Sample:
        """Start a new sample; SampleError if the id is bad or already used."""
        check_sample_id(sample_id)
        unix = time.time() if now is None else now
        name, version, sha = model or (None, None, None)
        first = count(0, 0, 0, rule, rates)
        with self.store.transaction() as db:
            if db.execute("SELECT 1 FROM samples WHERE id = ?", (sample_id,)).fetchone():
                raise SampleError(f"sample {sample_id!r} exists already: give a new id")
            db.execute(
                """INSERT INTO samples (id, started_at, started_unix, state, message, rule,
                model_name, model_version, model_sha256) VALUES (?,?,?,?,?,?,?,?,?)""",
                (
                    sample_id, _iso(unix), unix, SampleState.OPEN.value, first.message,
                    _rule_json(rule, rates), name, version, sha,
                ),
            )  # fmt: skip
            sample = _load(db, sample_id)
        assert sample is not None
        return sample

    def check_open(self, sample_id: str, model_sha256: str | None = None) -> Sample:
        """The sample, if it can take another field; SampleError saying why not."""
        sample = self.get(check_sample_id(sample_id))
        if sample is None:
            raise SampleError(f"no sample {sample_id!r}: start it first")
        if sample.state is not SampleState.OPEN:
            raise SampleError(
                f"sample {sample_id!r} is {sample.state.value}: start a new sample for more fields"
            )
        if model_sha256 and sample.model_sha256 and model_sha256 != sample.model_sha256:
            raise SampleError(
                f"sample {sample_id!r} was started with another model: start a new sample"
            )
        return sample

    def add_field(
        self,
        sample_id: str,
        rec: NewRecord,
        image: bytes | None,
        suffix: str = ".jpg",
        *,
        fingerprint: np.ndarray | None = None,
        max_overlap: float = 0.2,
    ) -> FieldResult:
        """Store a photo as the sample's next field, with its record, in one transaction.

        Its cells count unless it was a retake or repeats a counted field. Raises
        SampleError when the sample cannot take it (unknown, decided, closed).
        """
        cells = rec.cells or {}
        retake = rec.outcome == Verdict.RETAKE.value or not cells
        n_cells = 0 if retake else int(cells.get("n_classified") or 0)
        n_blasts = 0 if retake else int(cells.get("n_blasts") or 0)
        out: dict[str, Any] = {}

        def write_field(db: sqlite3.Connection, record_id: int) -> None:
            sample = _load(db, sample_id)
            if sample is None or sample.state is not SampleState.OPEN:
                raise SampleError(f"sample {sample_id!r} is not open")
            status, repeats, shared = FieldStatus.COUNTED, None, None
            if retake:
                status = FieldStatus.RETAKE
            elif fingerprint is not None:
                repeats, shared = _best_overlap(db, sample_id, fingerprint)
                if shared is not None and shared > max_overlap:
                    status = FieldStatus.REPEAT
                else:
                    repeats, shared = None, None
            position = len(sample.fields) + 1
            fp = None if fingerprint is None else np.ascontiguousarray(fingerprint, np.uint8)
            db.execute(
                f"""INSERT INTO sample_fields ({_FIELD_COLUMNS}, sample_id, fingerprint,
                fp_width, fp_height) VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
                (
                    record_id, position, status.value, n_cells, n_blasts, repeats, shared,
                    sample_id, None if fp is None else fp.tobytes(),
                    None if fp is None else fp.shape[1], None if fp is None else fp.shape[0],
                ),
            )  # fmt: skip
            field = SampleField(record_id, position, status, n_cells, n_blasts, repeats, shared)
            updated = _decide(db, replace(sample, fields=(*sample.fields, field)))
            out["field"], out["sample"] = field, updated

        record_id = self.store.add(
            replace(rec, sample_id=sample_id), image, suffix, then=write_field
        )
        return FieldResult(record_id, out["field"], out["sample"])

    def close(self, sample_id: str, *, now: float | None = None) -> Sample:
        """Close an open sample by hand (its verdict stays as counted: none if undecided)."""
        unix = time.time() if now is None else now
        with self.store.transaction() as db:
            sample = _load(db, check_sample_id(sample_id))
            if sample is None:
                raise SampleError(f"no sample {sample_id!r}")
            if sample.state is SampleState.CLOSED:
                return sample
            message = (
                sample.message
                if sample.state is SampleState.DECIDED
                else f"closed by hand after {sample.differential().n_cells} white cells: no verdict"
            )
            db.execute(
                "UPDATE samples SET state = ?, closed_at = ?, message = ? WHERE id = ?",
                (SampleState.CLOSED.value, _iso(unix), message, sample_id),
            )
            closed = _load(db, sample_id)
        assert closed is not None
        return closed

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
        """Store a person's reading of one cell of a counted field (a second review of
        the same cell replaces the first). SampleError when there is no such cell."""
        verdict, reviewer = check_review(label, reviewer)
        unix = time.time() if now is None else now
        with self.store.transaction() as db:
            sample = _load(db, check_sample_id(sample_id))
            if sample is None:
                raise SampleError(f"no sample {sample_id!r}")
            if not any(f.record_id == record_id for f in sample.counted):
                raise SampleError(f"record {record_id} is not a counted field of {sample_id!r}")
            record = self.store.reader.get(record_id)
            cells = [] if record is None else record_cells(record)
            if not 0 <= cell_index < len(cells):
                raise SampleError(f"record {record_id} has no cell {cell_index}")
            cell = cells[cell_index]
            review = CellReview(
                record_id, cell_index, verdict, bool(cell.get("blast")),
                cell.get("p_blast"), reviewer, _iso(unix),
            )  # fmt: skip
            db.execute(
                f"""INSERT OR REPLACE INTO cell_reviews ({_REVIEW_COLUMNS}, sample_id)
                VALUES (?,?,?,?,?,?,?,?)""",
                (
                    record_id, cell_index, verdict.value, int(review.model_blast),
                    review.p_blast, review.reviewer, review.reviewed_at, sample_id,
                ),
            )  # fmt: skip
        return review


def _best_overlap(
    db: sqlite3.Connection, sample_id: str, fingerprint: np.ndarray
) -> tuple[int | None, float | None]:
    """The counted field of the sample this fingerprint overlaps most, and by how much."""
    best: tuple[int | None, float | None] = (None, None)
    rows = db.execute(
        "SELECT record_id, fingerprint, fp_width, fp_height FROM sample_fields "
        "WHERE sample_id = ? AND status = ? AND fingerprint IS NOT NULL",
        (sample_id, FieldStatus.COUNTED.value),
    ).fetchall()
    for row in rows:
        stored = np.frombuffer(row["fingerprint"], np.uint8)
        if stored.size != row["fp_width"] * row["fp_height"]:
            continue
        shared = shared_fraction(fingerprint, stored.reshape(row["fp_height"], row["fp_width"]))
        if shared > 0 and (best[1] is None or shared > best[1]):
            best = (int(row["record_id"]), shared)
    return best


def _decide(db: sqlite3.Connection, sample: Sample) -> Sample:
    """Recompute the differential and store where the sample now stands."""
    d = sample.differential()
    state = SampleState.DECIDED if d.verdict is not None else SampleState.OPEN
    db.execute(
        "UPDATE samples SET state = ?, verdict = ?, message = ? WHERE id = ?",
        (state.value, None if d.verdict is None else d.verdict.value, d.message, sample.id),
    )
    return replace(sample, state=state, verdict=d.verdict, message=d.message)


class SampleReader:
    """Reads samples (the web threads, the CLI): read-only, like `RecordReader`."""

    def __init__(self, records: RecordReader) -> None:
        self.records = records

    def get(self, sample_id: str) -> Sample | None:
        """One sample with its fields and reviews; None if there is none."""
        return _load(self.records.connection(), sample_id)

    def page(self, limit: int, before: float | None = None) -> list[Sample]:
        """Up to `limit` samples started before `before` (unix time), newest first."""
        db = self.records.connection()
        rows = db.execute(
            "SELECT id FROM samples WHERE started_unix < ? ORDER BY started_unix DESC LIMIT ?",
            (float("inf") if before is None else before, limit),
        ).fetchall()
        return [s for s in (_load(db, r["id"]) for r in rows) if s is not None]

    def cells(self, sample: Sample) -> list[SampleCell]:
        """Every cell of the sample's counted fields, blasts first, most probable first."""
        reviews = {(r.record_id, r.cell_index): r for r in sample.reviews}
        out: list[SampleCell] = []
        for f in sample.counted:
            record = self.records.get(f.record_id)
            if record is None:
                continue
            for i, cell in enumerate(record_cells(record)):
                box = cell.get("box") or [0, 0, 0, 0]
                out.append(
                    SampleCell(
                        f.record_id, i, (box[0], box[1], box[2], box[3]),
                        cell.get("p_blast"), bool(cell.get("blast")), reviews.get((f.record_id, i)),
                    )
                )  # fmt: skip
        out.sort(key=lambda c: (not c.model_blast, -(c.p_blast or 0.0)))
        return out

    def reviewed(self) -> Iterator[tuple[Sample, SampleCell, Path | None]]:
        """Every reviewed cell with its sample and its photo's path (None once deleted)."""
        db = self.records.connection()
        ids = [r[0] for r in db.execute("SELECT DISTINCT sample_id FROM cell_reviews ORDER BY 1")]
        for sample_id in ids:
            sample = self.get(sample_id)
            if sample is None:
                continue
            for cell in self.cells(sample):
                if cell.review is None:
                    continue
                record = self.records.get(cell.record_id)
                yield sample, cell, None if record is None else self.records.image_file(record)
