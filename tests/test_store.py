"""The record store: durable records, atomic images, retention, and recovery after a crash."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from leukoscope.bundle import sha256_file
from leukoscope.errors import StoreError
from leukoscope.store import TMP_DIR, NewRecord, Store


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "db.sqlite3", tmp_path / "images")
    try:
        yield s
    finally:
        s.close()


def rec(**kw) -> NewRecord:
    base: dict[str, Any] = {
        "trigger": "test",
        "outcome": "no-leukemia-suspected",
        "p_leukemia": 0.1,
    }
    base.update(kw)
    return NewRecord(**base)


def test_record_and_image_round_trip(store: Store) -> None:
    rid = store.add(rec(sample_id="S-1", timings_ms={"inference": 3.5}), b"jpeg-bytes", ".jpg")
    row = store.get(rid)
    assert row is not None
    assert row["sample_id"] == "S-1" and row["timings_ms"] == {"inference": 3.5}
    path = store.image_file(row)
    assert path is not None and path.read_bytes() == b"jpeg-bytes"
    assert row["image_sha256"] == sha256_file(path)
    assert list((store.images_dir / TMP_DIR).iterdir()) == []


def test_database_is_wal_with_full_sync(store: Store) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_retention_by_age_keeps_records(store: Store) -> None:
    old = store.add(rec(created_unix=time.time() - 40 * 86400), b"old", ".jpg")
    new = store.add(rec(), b"new", ".jpg")
    old_path = store.image_file(store.get(old) or {})
    assert store.enforce_retention(max_age_days=30, min_free_bytes=0) == 1
    old_row, new_row = store.get(old), store.get(new)
    assert old_row is not None and old_row["image_deleted"] and old_row["image_deleted_at"]
    assert old_path is not None and not old_path.exists()
    assert new_row is not None and not new_row["image_deleted"]
    assert store.image_file(new_row) is not None


def test_retention_by_free_space_deletes_oldest_first(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [store.add(rec(created_unix=1_700_000_000 + i), b"x" * 100, ".jpg") for i in range(5)]
    # A disk that has room again once three images are gone.
    import leukoscope.store as store_mod

    monkeypatch.setattr(
        store_mod, "free_bytes", lambda _p: 10_000 - 100 * sum(1 for _ in _images(store))
    )
    assert store.enforce_retention(max_age_days=36500, min_free_bytes=9_800) == 3
    deleted = [bool((store.get(i) or {})["image_deleted"]) for i in ids]
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
    lost_path = store.image_file(store.get(lost) or {})
    assert lost_path is not None
    lost_path.unlink()
    store.recover()
    assert list((store.images_dir / TMP_DIR).iterdir()) == []
    assert not orphan.exists()
    assert store.image_file(store.get(keep) or {}) is not None
    assert (store.get(lost) or {})["image_deleted"] is True


def test_failed_image_write_leaves_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: memoryview) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StoreError, match="No space left"):
        store.add(rec(), b"x" * 1000, ".jpg")
    monkeypatch.undo()
    assert store.recent() == []
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
    assert len(list(_images(store))) == 1 and len(store.recent()) == 1


def test_close_is_idempotent(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite3", tmp_path / "images")
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.recent()


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
    assert not any((s.get(i) or {})["image_deleted"] for i in ids)
    s.close()
