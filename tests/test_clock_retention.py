"""Issue 17: a Pi without a real-time clock, a listing to the last day there is, and a
card something else has filled. Retention judges age by sequence under a trusted clock,
never by a stamp that cannot be right, and frees space without writing first."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import pytest

from leukoscope.appliance.records import NewRecord, RecordFilter, Store
from leukoscope.config import load_config
from leukoscope.core.clock import BUILD_EPOCH, TimeSetMark, clock_status, plausible
from tests.daemon_helpers import daemon_config, daemon_in_process, good_field, write_rgb
from tests.test_samples_daemon import capture, sample_bundle

DAY = 86400.0
NOW = BUILD_EPOCH + 400 * DAY  # a clinic's "now", well after this build


def add(store: Store, created: float, trusted: bool) -> int:
    rec = NewRecord("test", "retake", created_unix=created, clock_trusted=trusted)
    return store.add(rec, b"jpeg", ".jpg")


def kept(store: Store, rid: int) -> bool:
    record = store.reader.get(rid)
    assert record is not None
    return not record.image_deleted


def test_the_last_and_first_days_there_are_list_without_error(store: Store) -> None:
    rid = add(store, NOW, True)
    for flt in (
        RecordFilter(date_to=date(9999, 12, 31)),
        RecordFilter(date_from=date(1, 1, 1), date_to=date(9999, 12, 31)),
        RecordFilter(date_from=date(9999, 12, 31)),
    ):
        ids = [r.id for r in store.reader.page(20, flt=flt).items]
        assert ids == ([] if flt.date_from == date(9999, 12, 31) else [rid])
    assert [r.id for r in store.reader.export(RecordFilter(date_to=date.max))] == [rid]


def test_records_carry_the_clock_flag_and_order_by_sequence(store: Store) -> None:
    late = add(store, NOW + 20 * 365 * DAY, False)
    early = add(store, 0.0, False)
    good = add(store, NOW, True)
    assert early > late  # the id is the sequence, whatever the clock said
    got = {r.id: r.clock_trusted for r in store.reader.page(20).items}
    assert got == {late: False, early: False, good: True}


def test_nothing_is_deleted_by_age_while_the_clock_is_untrusted(store: Store) -> None:
    old = add(store, NOW - 100 * DAY, True)
    assert store.enforce_retention(30, 0, clock_trusted=False, now=NOW) == 0
    assert kept(store, old)
    assert store.enforce_retention(30, 0, clock_trusted=True, now=NOW) == 1
    assert not kept(store, old)


def test_a_1970_record_keeps_its_image_until_a_later_trusted_one_is_old(store: Store) -> None:
    stale = add(store, 0.0, False)  # a Pi booted without network or fake-hwclock
    assert store.enforce_retention(30, 0, clock_trusted=True, now=NOW) == 0
    assert kept(store, stale), "1970 is not 56 years old: the stamp cannot be right"
    fresh = add(store, NOW - 1 * DAY, True)
    assert store.enforce_retention(30, 0, clock_trusted=True, now=NOW) == 0
    # 40 days later the record made after it (by sequence) is over 30 days old: so is it.
    assert store.enforce_retention(30, 0, clock_trusted=True, now=NOW + 40 * DAY) == 2
    assert not kept(store, stale) and not kept(store, fresh)


def test_a_record_stamped_20_years_ahead_does_not_keep_its_image_forever(store: Store) -> None:
    ahead = add(store, NOW + 20 * 365 * DAY, False)
    later = add(store, NOW, True)
    newest = add(store, NOW + 35 * DAY, True)
    assert store.enforce_retention(30, 0, clock_trusted=True, now=NOW + 40 * DAY) == 2
    assert not kept(store, ahead) and not kept(store, later) and kept(store, newest)


def test_a_trusted_stamp_before_the_build_or_in_the_future_bounds_nothing(store: Store) -> None:
    before_build = add(store, BUILD_EPOCH - 10 * DAY, True)
    assert store.enforce_retention(30, 0, clock_trusted=True, now=NOW) == 0
    assert kept(store, before_build)
    assert not plausible(BUILD_EPOCH - 1, now=NOW) and not plausible(NOW + 2 * DAY, now=NOW)
    assert plausible(NOW - DAY, now=NOW)


def test_the_clock_is_trusted_when_synchronised_or_set_by_hand(tmp_path: Path) -> None:
    mark = TimeSetMark(tmp_path / "clock-set")
    assert not clock_status(mark, now=NOW, synchronised=False).trusted
    assert clock_status(mark, now=NOW, synchronised=True).trusted
    mark.set()
    assert clock_status(mark, now=NOW, synchronised=False).reason == "set by hand on this boot"
    (tmp_path / "clock-set").write_text("another-boot\n")
    assert not clock_status(mark, now=NOW, synchronised=False).trusted
    stale = clock_status(mark, now=0.0, synchronised=True)
    assert not stale.trusted and "before this build" in stale.reason


FULL_DISK = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from leukoscope.appliance.records import NewRecord, Store, free_bytes
    from leukoscope.core.errors import StoreError

    root = Path(sys.argv[1])
    store = Store(root / "db.sqlite3", root / "images", reserve_bytes=256 * 1024)
    assert store.reserve_path.exists(), "the reserve is kept while there is room"
    ids = []
    for i in range(12):
        rec = NewRecord("test", "retake", created_unix=time.time() - 3600 + i, clock_trusted=True)
        ids.append(store.add(rec, os.urandom(150_000), ".jpg"))
    # Something else fills the card to the last block.
    fd = os.open(root / "filler", os.O_WRONLY | os.O_CREAT)
    for chunk in (65536, 4096, 512, 1):
        try:
            while True:
                os.write(fd, bytes(chunk))
        except OSError:
            pass
    os.close(fd)
    print("free before", free_bytes(root))
    deleted = store.enforce_retention(30, 3_000_000, clock_trusted=True)
    print("deleted", deleted, "free after", free_bytes(root))
    assert deleted == 12, deleted
    rows = [store.reader.get(i) for i in ids]
    assert all(r is not None and r.image_deleted for r in rows)
    assert not store.reserve_path.exists(), "nothing left to delete: the reserve went too"
    assert store.integrity_ok()
    store.add(NewRecord("test", "retake", clock_trusted=True), None)  # the store writes again
    store.close()
    print("ok")
    """
)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root for a tmpfs in a private mount namespace (unshare -m)",
)
def test_retention_frees_a_card_that_something_else_filled(tmp_path: Path) -> None:
    root = tmp_path / "card"
    root.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(FULL_DISK)
    # A 4 MB card of its own, in a mount namespace only this child sees.
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'mount -t tmpfs -o size=4m tmpfs "{root}" && exec "$0" "{script}" "{root}"',
         sys.executable],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr


def test_the_daemon_stamps_records_with_the_clock_and_a_person_can_confirm_it(
    tmp_path: Path,
) -> None:
    write_rgb(tmp_path / "replay" / "00.png", good_field(0))
    cfg = load_config(
        daemon_config(
            tmp_path, tmp_path / "unused", tmp_path / "replay", quality={"enabled": False}
        )
    )
    with daemon_in_process(cfg, sample_bundle()) as daemon:
        synced = daemon._check_clock().trusted
        first = capture(daemon)
        assert first["clock_trusted"] is synced
        assert daemon.state.snapshot()["clock"]["trusted"] is synced
        off = daemon.confirm_clock(time.time() - 600)
        assert off["ok"] is False and "sudo date -s @" in off["error"]
        assert daemon.confirm_clock(time.time())["trusted"] is True
        assert capture(daemon)["clock_trusted"] is True
        assert daemon.state.snapshot()["clock"]["trusted"] is True
