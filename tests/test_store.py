"""The record store: durable records, atomic images, retention, and recovery after a crash."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from leukoscope.appliance import records
from leukoscope.appliance.records import (
    SCHEMA_VERSION,
    TMP_DIR,
    NewRecord,
    Record,
    RecordFilter,
    Store,
)
from leukoscope.core.errors import StoreError
from leukoscope.model.manifest import sha256_file


def saved(store: Store, record_id: int) -> Record:
    """A record as the reader gives it back (it must be there)."""
    record = store.reader.get(record_id)
    assert record is not None, record_id
    return record


def rec(**kw) -> NewRecord:
    base: dict[str, Any] = {
        "trigger": "test",
        "outcome": "no-leukemia-suspected",
        "p_leukemia": 0.1,
        "clock_trusted": True,
    }
    base.update(kw)
    return NewRecord(**base)


def test_record_and_image_round_trip(store: Store) -> None:
    rid = store.add(rec(sample_id="S-1", timings_ms={"inference": 3.5}), b"jpeg-bytes", ".jpg")
    row = saved(store, rid)
    assert row.sample_id == "S-1" and row.timings_ms == {"inference": 3.5}
    path = store.reader.image_file(row)
    assert path is not None and path.read_bytes() == b"jpeg-bytes"
    assert row.image_sha256 == sha256_file(path)
    assert list((store.images_dir / TMP_DIR).iterdir()) == []


def test_database_is_wal_with_full_sync(store: Store) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_retention_by_age_keeps_records(store: Store) -> None:
    old = store.add(rec(created_unix=time.time() - 40 * 86400), b"old", ".jpg")
    new = store.add(rec(), b"new", ".jpg")
    old_path = store.reader.image_file(saved(store, old))
    assert store.enforce_retention(30, 0, clock_trusted=True, not_before=0) == 1
    old_row, new_row = saved(store, old), saved(store, new)
    assert old_row.image_deleted and old_row.image_deleted_at
    assert old_path is not None and not old_path.exists()
    assert not new_row.image_deleted
    assert store.reader.image_file(new_row) is not None


def test_retention_by_free_space_deletes_oldest_first(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [store.add(rec(created_unix=1_700_000_000 + i), b"x" * 100, ".jpg") for i in range(5)]
    # A disk that has room again once three images are gone.
    import leukoscope.appliance.records as store_mod

    monkeypatch.setattr(
        store_mod, "free_bytes", lambda _p: 10_000 - 100 * sum(1 for _ in _images(store))
    )
    assert store.enforce_retention(36500, 9_800, clock_trusted=True) == 3
    deleted = [bool(saved(store, i).image_deleted) for i in ids]
    assert deleted[:3] == [True, True, True] and deleted[-1] is False
    assert deleted == sorted(deleted, reverse=True)  # never a newer one before an older one


def _images(store: Store):
    return (p for p in store.images_dir.rglob("*.jpg") if TMP_DIR not in p.parts)


def test_recover_removes_partial_and_orphan_images(store: Store) -> None:
    keep = store.add(rec(), b"kept", ".jpg")
    (store.images_dir / TMP_DIR / "half.jpg.part").write_bytes(b"half")
    orphan = store.images_dir / "2026" / "orphan.jpg"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"no record")
    lost = store.add(rec(), b"lost", ".jpg")
    lost_path = store.reader.image_file(saved(store, lost))
    assert lost_path is not None
    lost_path.unlink()
    store.recover()
    assert list((store.images_dir / TMP_DIR).iterdir()) == []
    assert not orphan.exists()
    assert store.reader.image_file(saved(store, keep)) is not None
    assert saved(store, lost).image_deleted is True


def test_failed_image_write_leaves_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: memoryview) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StoreError, match="No space left"):
        store.add(rec(), b"x" * 1000, ".jpg")
    monkeypatch.undo()
    assert store.reader.page(20).items == []
    assert list(_images(store)) == [] and list((store.images_dir / TMP_DIR).iterdir()) == []
    assert store.last_failed_bytes == 1000


def test_failed_record_write_removes_its_image(store: Store, tmp_path: Path) -> None:
    store.add(rec(), b"first", ".jpg")
    # Another connection holds the write lock: the insert fails after the image is written.
    other = sqlite3.connect(tmp_path / "db.sqlite3", timeout=0)
    other.execute("BEGIN IMMEDIATE")
    store.db.execute("PRAGMA busy_timeout=50")
    try:
        with pytest.raises(StoreError, match="cannot write the record"):
            store.add(rec(), b"second", ".jpg")
    finally:
        other.rollback()
        other.close()
    assert len(list(_images(store))) == 1 and len(store.reader.page(20).items) == 1


def test_close_is_idempotent(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite3", tmp_path / "images")
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.reader.page(20)


def test_recover_leaves_images_alone_when_the_database_was_replaced(tmp_path: Path) -> None:
    first = Store(tmp_path / "db.sqlite3", tmp_path / "images")
    for _ in range(8):
        first.add(rec(), b"precious", ".jpg")
    first.close()
    (tmp_path / "db.sqlite3").rename(tmp_path / "moved.sqlite3")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"db.sqlite3{suffix}").unlink(missing_ok=True)
    fresh = Store(tmp_path / "db.sqlite3", tmp_path / "images")
    fresh.recover()
    assert len(list(_images(fresh))) == 8
    fresh.close()


def test_recover_leaves_records_alone_when_no_image_is_there(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite3", tmp_path / "images")
    ids = [s.add(rec(), b"img", ".jpg") for _ in range(8)]
    s.close()
    (tmp_path / "images").rename(tmp_path / "unmounted")
    s = Store(tmp_path / "db.sqlite3", tmp_path / "images")
    s.recover()
    assert not any(saved(s, i).image_deleted for i in ids)
    s.close()


class _PowerCutError(Exception):
    """The power failing at one point of a store call."""


def test_retention_of_every_photo_cut_by_a_crash_leaves_records_recovery_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retention deleting every photo left (more than a crash can explain) dies after its
    # first unlinks, before it marks them: the next start must still mark what is gone.
    s = Store(tmp_path / "db.sqlite3", tmp_path / "images")
    ids = [s.add(rec(created_unix=time.time() - 40 * 86400), b"old", ".jpg") for _ in range(8)]

    def cut(_folder: Path) -> None:
        raise _PowerCutError

    monkeypatch.setattr(records, "fsync_dir", cut)
    with pytest.raises(_PowerCutError):
        s.enforce_retention(30, 0, clock_trusted=True, not_before=0)
    monkeypatch.undo()
    s.close()
    s = Store(tmp_path / "db.sqlite3", tmp_path / "images")
    s.recover()
    for i in ids:
        row = saved(s, i)
        assert row.image_deleted or s.reader.image_file(row) is not None, i
    assert s.enforce_retention(30, 0, clock_trusted=True, not_before=0) > 0
    assert all(saved(s, i).image_deleted for i in ids)
    s.close()


# --- the per-cell result (issue 8) ------------------------------------------------------------


def cell_report(n: int = 2) -> dict[str, Any]:
    """A CellReport-shaped object, as `Analysis.cells.to_json()` gives it."""
    cells = [
        {
            "x": 10.5 + 20 * i,
            "y": 30.0,
            "box": [i * 20, 20, i * 20 + 21, 41],
            "p_blast": 0.9 if i % 2 else 0.1,
            "blast": bool(i % 2),
            "clump": False,
        }
        for i in range(n)
    ]
    return {
        "px_per_um": 5.87,
        "scale_source": "red-cells",
        "image_size": [640, 480],
        "n_found": n,
        "n_classified": n,
        "n_blasts": n // 2,
        "top_k_mean": 0.61,
        "density": 1.12,
        "blast_fraction": 0.5,
        "score": 0.65,
        "cell_cut": 0.5,
        "cells": cells,
    }


def test_cells_round_trip_with_the_record(store: Store) -> None:
    report = cell_report(3)
    rid = store.add(rec(cells=report), b"img", ".jpg")
    whole = store.add(rec(), b"img2", ".jpg")
    assert saved(store, rid).cells == report
    assert saved(store, whole).cells is None
    # a listing leaves the per-cell list out and keeps the counts
    listed = {k: v for k, v in report.items() if k != "cells"}
    assert [r.cells for r in store.reader.page(20).items] == [None, listed]


def test_cells_with_nan_or_numpy_numbers_are_stored_as_plain_json(store: Store) -> None:
    import numpy as np

    report = cell_report(2)
    report["score"] = float("nan")
    report["density"] = np.float32(1.5)
    report["cells"][0]["p_blast"] = float("inf")
    report["cells"][1]["box"] = np.array([1, 2, 3, 4])
    rid = store.add(rec(cells=report), None)
    text = store.db.execute("SELECT cells FROM results WHERE id = ?", (rid,)).fetchone()[0]
    assert "NaN" not in text and "Infinity" not in text
    got = saved(store, rid).cells or {}
    assert got["score"] is None and got["density"] == 1.5
    assert got["cells"][0]["p_blast"] is None and got["cells"][1]["box"] == [1, 2, 3, 4]


def test_an_oversized_cell_list_keeps_the_counts(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import leukoscope.appliance.records as store_mod

    monkeypatch.setattr(store_mod, "MAX_CELLS_JSON_BYTES", len(json.dumps(cell_report(10))))
    small = store.add(rec(cells=cell_report(5)), None)
    big = store.add(rec(cells=cell_report(400)), None)
    assert len((saved(store, small).cells or {})["cells"]) == 5
    got = saved(store, big).cells or {}
    assert got["cells"] == [] and got["cells_omitted"] == 400
    assert got["n_found"] == 400 and got["n_blasts"] == 200 and got["score"] == 0.65


def test_the_most_cells_a_bundle_classifies_are_kept_and_fit_a_control_reply(
    store: Store,
) -> None:
    from leukoscope.analysis.cells import CellSettings
    from leukoscope.appliance.control import MAX_REPLY_BYTES

    most = 4096
    with pytest.raises(ValueError):
        CellSettings(max_cells=most + 1)  # a bundle classifies no more than this
    report = cell_report(most)
    for c in report["cells"]:  # the widest numbers a 5 MP photo gives
        c.update(x=2591.5, y=1943.5, box=[2520, 1872, 2592, 1944], p_blast=0.1234)
    rid = store.add(rec(cells=report), None)
    row = saved(store, rid)
    assert row.cells == report
    assert len(json.dumps({"ok": True, "result": row.to_json()})) < MAX_REPLY_BYTES


def test_cells_that_are_not_an_object_are_dropped_but_the_record_is_kept(store: Store) -> None:
    rid = store.add(rec(cells=["not", "an", "object"]), None)
    other = store.add(rec(cells={"bad": object()}), None)
    assert saved(store, rid).outcome == "no-leukemia-suspected"
    assert saved(store, rid).cells is None and saved(store, other).cells is None


#: The first schema, as databases written before issue 8 have it.
SCHEMA_V1 = """
CREATE TABLE results (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL, created_unix REAL NOT NULL,
    trigger TEXT NOT NULL, sample_id TEXT, outcome TEXT NOT NULL, p_leukemia REAL,
    probabilities TEXT, retake_reasons TEXT NOT NULL, quality TEXT, timings_ms TEXT NOT NULL,
    error TEXT, model_name TEXT, model_version TEXT, model_sha256 TEXT, image_path TEXT,
    image_sha256 TEXT, image_bytes INTEGER, image_deleted INTEGER NOT NULL DEFAULT 0,
    image_deleted_at TEXT
);
CREATE INDEX results_created ON results (created_unix);
CREATE INDEX results_image ON results (image_deleted, created_unix);
PRAGMA user_version=1;
"""


def test_an_old_database_opens_keeps_its_records_and_gains_cells(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    image = tmp_path / "images" / "2025" / "01" / "02" / "old.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"old photo")
    old = sqlite3.connect(db)
    old.executescript(SCHEMA_V1)
    old.execute(
        "INSERT INTO results (created_at, created_unix, trigger, sample_id, outcome, p_leukemia,"
        " retake_reasons, timings_ms, image_path) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            "2025-01-02T00:00:00.000+00:00",
            1735776000.0,
            "button",
            "OLD-1",
            "leukemia-suspected",
            0.8,
            "[]",
            '{"inference": 3.0}',
            "2025/01/02/old.jpg",
        ),
    )
    old.commit()
    old.close()

    s = Store(db, tmp_path / "images")
    try:
        s.recover()  # the old record's image is still its own
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        tables = {r[0] for r in s.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"samples", "sample_fields", "cell_reviews"} <= tables
        [row] = s.reader.page(20).items
        assert row.sample_id == "OLD-1" and row.p_leukemia == 0.8
        assert row.cells is None and not row.image_deleted
        assert s.reader.image_file(row) == image and image.read_bytes() == b"old photo"
        new = s.add(rec(cells=cell_report(1)), b"new", ".jpg")
        assert saved(s, new).cells == cell_report(1)
    finally:
        s.close()
    again = Store(db, tmp_path / "images")  # a second open migrates nothing
    try:
        assert [r.sample_id for r in again.reader.page(20).items] == [None, "OLD-1"]
    finally:
        again.close()


def test_a_database_from_a_newer_build_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    Store(db, tmp_path / "images").close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(db, tmp_path / "images")
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()


# --- reading records back: the one reader the daemon, the web and the CLI use ----------------


def _unix(day: int, hour: int = 12) -> float:
    return datetime(2026, 5, day, hour, tzinfo=UTC).timestamp()


def test_a_record_reads_back_in_the_tables_column_order(store: Store) -> None:
    rid = store.add(rec(probabilities={"normal": 0.9, "leukemia": 0.1}), b"img", ".jpg")
    columns = [row[1] for row in store.db.execute("PRAGMA table_info(results)")]
    plain = saved(store, rid).to_json()
    assert list(plain) == columns  # the API's JSON keeps its keys and their order
    assert plain["probabilities"] == {"normal": 0.9, "leukemia": 0.1}
    assert plain["image_deleted"] is False and plain["retake_reasons"] == []


def test_listing_pages_newest_first_with_filters(store: Store) -> None:
    outcomes = ["retake", "leukemia-suspected", "leukemia-suspected", "fault", "retake"]
    days = [(1, 10), (2, 0), (2, 23), (3, 0), (3, 12)]
    ids = [
        store.add(rec(outcome=o, created_unix=_unix(d, h)), None)
        for o, (d, h) in zip(outcomes, days, strict=True)
    ]
    seen: list[int] = []
    before = None
    while True:
        page = store.reader.page(2, before)
        seen += [r.id for r in page.items]
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == ids[::-1]
    assert store.reader.page(5).next_before is None  # exactly one full page: no cursor

    def listed(flt: RecordFilter) -> list[int]:
        return [r.id for r in store.reader.page(200, None, flt).items]

    assert listed(RecordFilter(outcome="leukemia-suspected")) == [ids[2], ids[1]]
    may2 = date(2026, 5, 2)
    assert listed(RecordFilter(date_from=may2, date_to=may2)) == [ids[2], ids[1]]  # UTC days
    assert listed(RecordFilter(outcome="retake", date_from=date(2026, 5, 2))) == [ids[4]]
    assert listed(RecordFilter(date_to=date(2026, 4, 30))) == []


def test_the_export_reads_every_matching_record_a_page_at_a_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "EXPORT_PAGE", 3)
    ids = [store.add(rec(cells=cell_report(2)), None) for _ in range(7)]
    store.add(rec(outcome="fault"), None)
    exported = list(store.reader.export(RecordFilter(outcome="no-leukemia-suspected")))
    assert [r.id for r in exported] == ids[::-1]
    assert all(r.cells is not None and "cells" not in r.cells for r in exported)
    assert (exported[0].cells or {})["n_found"] == 2


def test_an_image_path_outside_the_images_folder_is_never_given(store: Store) -> None:
    row = saved(store, store.add(rec(), b"img", ".jpg"))
    inside = store.reader.image_file(row)
    assert inside is not None and inside.is_relative_to(store.images_dir.resolve())
    for evil in ("../db.sqlite3", "/etc/passwd", "2026/../../db.sqlite3"):
        assert store.reader.image_file(replace(row, image_path=evil)) is None
    assert store.reader.image_file(replace(row, image_deleted=True)) is None
    assert store.reader.image_file(replace(row, image_path=None)) is None


def test_counts_and_recent_timings_for_the_metrics(store: Store) -> None:
    for i, outcome in enumerate(["retake", "fault", "retake", "leukemia-suspected"]):
        store.add(rec(outcome=outcome, timings_ms={"inference": float(i)}), None)
    assert store.reader.count() == 4
    assert store.reader.counts_by_outcome() == {"retake": 2, "fault": 1, "leukemia-suspected": 1}
    assert store.reader.recent_timings(2) == [{"inference": 3.0}, {"inference": 2.0}]


def test_a_json_column_that_does_not_decode_reads_as_empty(store: Store, tmp_path: Path) -> None:
    rid = store.add(rec(cells=cell_report(1)), None)
    other = sqlite3.connect(tmp_path / "db.sqlite3")
    other.execute(
        "UPDATE results SET cells = '{broken', timings_ms = '[1]', quality = 'x' WHERE id = ?",
        (rid,),
    )
    other.commit()
    other.close()
    row = saved(store, rid)
    assert row.cells is None and row.timings_ms == {} and row.quality is None
    [listed] = store.reader.page(10).items
    assert listed.id == rid and listed.cells is None


def test_the_reader_is_read_only(store: Store) -> None:
    store.add(rec(), None)
    with pytest.raises(StoreError):
        store.reader._query("DELETE FROM results")
    assert store.reader.count() == 1
