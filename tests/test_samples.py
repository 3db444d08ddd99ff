"""Samples in the record store: fields counted once, decided by the rule, reviewed, durable."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.differential import ErrorRates, SampleRule
from leukoscope.analysis.overlap import fingerprint
from leukoscope.appliance.records import NewRecord, Store
from leukoscope.appliance.samples import (
    FieldStatus,
    ReviewLabel,
    SampleError,
    SampleReader,
    Samples,
    SampleState,
    check_sample_id,
)
from leukoscope.core.synthetic import make_smear

RULE = SampleRule(threshold=0.05, min_cells=100, max_cells=400, max_fields=30)
RATES = ErrorRates(sensitivity=0.9, specificity=0.97)
MODEL = ("cells-test", "1", "ab" * 32)


def cells_json(n: int, blasts: int) -> dict[str, Any]:
    cells = [
        {"x": 10.0 * i, "y": 5.0, "box": [10.0 * i, 0.0, 10.0 * i + 8, 10.0],
         "p_blast": 0.9 if i < blasts else 0.1, "blast": i < blasts, "clump": False}
        for i in range(n)
    ]  # fmt: skip
    return {"n_found": n, "n_classified": n, "n_blasts": blasts, "score": 0.5, "cells": cells}


def field_record(n: int, blasts: int, outcome: str = "indeterminate") -> NewRecord:
    return NewRecord(
        trigger="control",
        outcome=outcome,
        cells=None if outcome == "retake" else cells_json(n, blasts),
        model_sha256=MODEL[2],
    )


@pytest.fixture(scope="module")
def fields() -> list[np.ndarray]:
    """Fingerprints of distinct synthetic fields."""
    return [fingerprint(make_smear(640, 480, seed=s, px_per_um=2.0).image) for s in range(12)]


def test_sample_ids_are_checked() -> None:
    assert check_sample_id("P-2026/0042 a") == "P-2026/0042 a"
    for bad in ("", " lead", "x" * 65, "a\nb", "<script>", "x" * 10_000, 42, None):
        with pytest.raises(SampleError, match="bad sample id"):
            check_sample_id(bad)


def test_fields_add_up_until_the_rule_decides(store: Store, fields: list[np.ndarray]) -> None:
    samples = Samples(store)
    s = samples.start("P1", RULE, RATES, MODEL)
    assert s.state is SampleState.OPEN and s.model_sha256 == MODEL[2]
    got = samples.add_field("P1", field_record(40, 0), b"jpeg", fingerprint=fields[0])
    assert got.field.status is FieldStatus.COUNTED and got.field.position == 1
    assert got.sample.state is SampleState.OPEN
    assert "40 white cells so far" in got.sample.message
    assert store.reader.get(got.record_id).sample_id == "P1"  # type: ignore[union-attr]
    samples.add_field("P1", field_record(40, 1), b"jpeg", fingerprint=fields[1])
    last = samples.add_field("P1", field_record(40, 0), b"jpeg", fingerprint=fields[2])
    assert last.sample.state is SampleState.DECIDED
    assert last.sample.verdict is Verdict.NO_LEUKEMIA_SUSPECTED
    d = last.sample.differential()
    assert (d.n_fields, d.n_cells, d.n_blasts) == (3, 120, 1)
    with pytest.raises(SampleError, match="is decided: start a new sample"):
        samples.check_open("P1")
    with pytest.raises(SampleError, match="not open"):
        samples.add_field("P1", field_record(10, 0), b"jpeg", fingerprint=fields[3])
    assert store.reader.count() == 3  # the refused field left no record behind


def test_the_same_field_twice_is_not_counted_twice(store: Store, fields: list[np.ndarray]) -> None:
    samples = Samples(store)
    samples.start("P2", RULE, RATES, MODEL)
    first = samples.add_field("P2", field_record(30, 10), b"a", fingerprint=fields[0])
    again = samples.add_field("P2", field_record(30, 10), b"b", fingerprint=fields[0].copy())
    assert again.field.status is FieldStatus.REPEAT
    assert again.field.repeats_record == first.record_id and again.field.shared == 1.0
    d = again.sample.differential()
    assert (d.n_fields, d.n_cells, d.n_blasts) == (1, 30, 10)
    other = samples.add_field("P2", field_record(30, 10), b"c", fingerprint=fields[1])
    assert other.field.status is FieldStatus.COUNTED


def test_a_retake_field_is_kept_but_counts_nothing(store: Store, fields: list[np.ndarray]) -> None:
    samples = Samples(store)
    samples.start("P3", RULE, RATES, MODEL)
    got = samples.add_field("P3", field_record(0, 0, "retake"), b"x", fingerprint=fields[0])
    assert got.field.status is FieldStatus.RETAKE
    assert got.sample.differential().n_cells == 0 and got.sample.state is SampleState.OPEN
    # A retake's fingerprint never makes a later good photo of that field a repeat.
    good = samples.add_field("P3", field_record(20, 0), b"y", fingerprint=fields[0])
    assert good.field.status is FieldStatus.COUNTED


def test_a_sample_that_reaches_its_maximum_is_indeterminate(
    store: Store, fields: list[np.ndarray]
) -> None:
    samples = Samples(store)
    rule = SampleRule(threshold=0.05, min_cells=50, max_cells=1000, max_fields=3)
    samples.start("P4", rule, ErrorRates(0.95, 0.99), MODEL)
    for i in range(3):  # 5 % observed: the interval straddles the threshold
        last = samples.add_field("P4", field_record(20, 1), b"z", fingerprint=fields[i])
    assert last.sample.state is SampleState.DECIDED
    assert last.sample.verdict is Verdict.INDETERMINATE
    assert "3 fields read (60 white cells)" in last.sample.message


def test_unknown_used_and_closed_samples_are_refused(
    store: Store, fields: list[np.ndarray]
) -> None:
    samples = Samples(store)
    with pytest.raises(SampleError, match="no sample 'NOPE'"):
        samples.check_open("NOPE")
    samples.start("P5", RULE, RATES, MODEL)
    with pytest.raises(SampleError, match="exists already"):
        samples.start("P5", RULE, RATES, MODEL)
    with pytest.raises(SampleError, match="another model"):
        samples.check_open("P5", model_sha256="cd" * 32)
    closed = samples.close("P5")
    assert closed.state is SampleState.CLOSED and "no verdict" in closed.message
    assert samples.close("P5").closed_at == closed.closed_at  # idempotent
    with pytest.raises(SampleError, match="is closed"):
        samples.check_open("P5")


def test_reviews_give_a_second_reading_beside_the_models(
    store: Store, fields: list[np.ndarray]
) -> None:
    samples = Samples(store)
    samples.start("P6", RULE, PERFECT_RATES, MODEL)
    got = samples.add_field("P6", field_record(10, 2), b"a", fingerprint=fields[0])
    rid = got.record_id
    r = samples.review("P6", rid, 0, "not-blast", "Dr. Ada", now=1_700_000_000)
    assert r.label is ReviewLabel.NOT_BLAST and r.model_blast and r.p_blast == 0.9
    samples.review("P6", rid, 5, "blast", "Dr. Ada")
    samples.review("P6", rid, 1, "not-blast", "Tech Bo")
    samples.review("P6", rid, 1, "blast", "Tech Bo")  # a second look replaces the first
    s = samples.get("P6")
    assert s is not None and len(s.reviews) == 3
    assert s.differential().n_blasts == 2
    assert s.reviewed_differential().n_blasts == 2 - 1 + 1  # cell 0 out, cell 5 in
    assert s.to_json()["reviewed"]["n_reviews"] == 3


PERFECT_RATES = ErrorRates(1.0, 1.0)


@pytest.mark.parametrize(
    ("sample", "cell", "label", "reviewer", "message"),
    [
        ("NOPE", 0, "blast", "A", "no sample"),
        ("P7", 99, "blast", "A", "has no cell 99"),
        ("P7", 0, "maybe", "A", "bad label"),
        ("P7", 0, "blast", "", "reviewer's name"),
        ("P7", 0, "blast", "x" * 200, "reviewer's name"),
    ],
)
def test_bad_reviews_are_refused_and_store_nothing(
    store: Store, fields: list[np.ndarray], sample: str, cell: int, label: str, reviewer: str,
    message: str,
) -> None:  # fmt: skip
    samples = Samples(store)
    samples.start("P7", RULE, RATES, MODEL)
    rid = samples.add_field("P7", field_record(3, 1), b"a", fingerprint=fields[0]).record_id
    with pytest.raises(SampleError, match=message):
        samples.review(sample, rid, cell, label, reviewer)
    with pytest.raises(SampleError, match="not a counted field"):
        samples.review("P7", rid + 100, 0, "blast", "A")
    assert samples.get("P7").reviews == ()  # type: ignore[union-attr]


def test_the_reader_lists_samples_and_their_cells_blasts_first(
    store: Store, fields: list[np.ndarray]
) -> None:
    samples = Samples(store)
    samples.start("A", RULE, RATES, MODEL, now=1000.0)
    samples.start("B", RULE, RATES, MODEL, now=2000.0)
    rid = samples.add_field("B", field_record(4, 2), b"img", fingerprint=fields[0]).record_id
    samples.review("B", rid, 3, "blast", "Ada")
    reader = SampleReader(store.reader)
    assert [s.id for s in reader.page(10)] == ["B", "A"]
    assert [s.id for s in reader.page(10, before=2000.0)] == ["A"]
    b = reader.get("B")
    assert b is not None
    cells = reader.cells(b)
    assert [(c.cell_index, c.model_blast) for c in cells][:2] == [(0, True), (1, True)]
    assert [c.cell_index for c in cells if c.review] == [3]
    [(sample, cell, path)] = list(reader.reviewed())
    assert sample.id == "B" and cell.cell_index == 3
    assert path is not None and path.read_bytes() == b"img"


def _add_fields_forever(db: Path, images: Path, fps: list[np.ndarray], ready: Any) -> None:
    store = Store(db, images)
    samples = Samples(store)
    i = 0
    while True:
        samples.add_field("KILL", field_record(5, 1), b"x" * 20_000, fingerprint=fps[i % 6])
        i += 1
        if i == 3:
            ready.set()


def test_a_killed_writer_leaves_every_field_with_its_record(
    tmp_path: Path, fields: list[np.ndarray]
) -> None:
    """SIGKILL at a random moment: fields and records stay one to one."""
    db, images = tmp_path / "db.sqlite3", tmp_path / "images"
    with Store(db, images) as store:
        Samples(store).start("KILL", SampleRule(min_cells=10**4, max_cells=10**5,
                                                max_fields=10**4), RATES, MODEL)  # fmt: skip
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_add_fields_forever, args=(db, images, fields, ready))
    proc.start()
    assert ready.wait(30)
    os.kill(proc.pid or 0, signal.SIGKILL)
    proc.join()
    with Store(db, images) as store:
        store.recover()
        sample = Samples(store).get("KILL")
        assert sample is not None
        assert len(sample.fields) == store.reader.count() >= 3
        assert [f.position for f in sample.fields] == list(range(1, len(sample.fields) + 1))
        assert store.integrity_ok()
