"""A power cut in the middle of a sample: SIGKILL the real daemon while a field is being
taken, start it again, and the sample continues with nothing lost or counted twice.

The real `leukoscope run` process with the shipped cells bundle, the replay camera and
MockFactory pins. The replay camera starts again at its first photo after the restart,
so the fields already counted come round again: they must be found as repeats.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from leukoscope.appliance.control import ControlError
from leukoscope.core.synthetic import make_smear
from tests.conftest import SHIPPED_BUNDLE
from tests.daemon_helpers import DaemonProcess, daemon_config, wait_until, write_rgb
from tests.test_faults import check_store

pytestmark = pytest.mark.slow

#: The sample stays open through the test: it needs more cells than the photos hold.
RULE = {"min_cells": 1000, "max_cells": 2000, "max_fields": 100}


def counted(state: Path, sample_id: str) -> list[tuple[int, str, int]]:
    """(position, image sha256, n_cells) of the sample's counted fields, from the database."""
    db = sqlite3.connect(f"file:{state / 'records.sqlite3'}?mode=ro", uri=True)
    try:
        fields = db.execute(
            "SELECT f.position, r.image_sha256, f.n_cells, f.status FROM sample_fields f "
            "JOIN results r ON r.id = f.record_id WHERE f.sample_id = ? ORDER BY f.position",
            (sample_id,),
        ).fetchall()
        records = db.execute(
            "SELECT count(*) FROM results WHERE sample_id = ?", (sample_id,)
        ).fetchone()[0]
    finally:
        db.close()
    # Every photo taken for the sample is one field, and every field one photo.
    assert records == len(fields)
    assert [f[0] for f in fields] == list(range(1, len(fields) + 1))
    return [(f[0], f[1], f[2]) for f in fields if f[3] == "counted"]


def test_a_killed_daemon_continues_its_sample(tmp_path: Path) -> None:
    replay = tmp_path / "replay"
    photos = [
        write_rgb(replay / f"{i:02d}.png", make_smear(800, 600, n_wbc=6, seed=70 + i).image)
        for i in range(4)
    ]
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in photos}
    config = daemon_config(
        tmp_path, SHIPPED_BUNDLE, replay, quality={"enabled": False}, sample=RULE
    )
    state = tmp_path / "state"

    daemon = DaemonProcess(config)
    try:
        daemon.wait_phase("ready", 60)
        first = daemon.capture("P-KILL")  # a new id starts the sample
        second = daemon.capture("P-KILL")
        assert [first["field"]["status"], second["field"]["status"]] == ["counted", "counted"]
        # The third photo is being taken when the power goes.
        replies: list[object] = []

        def third() -> None:
            try:
                replies.append(daemon.request({"cmd": "capture", "sample_id": "P-KILL"}))
            except ControlError as exc:
                replies.append(exc)

        worker = threading.Thread(target=third)
        worker.start()
        wait_until(lambda: (daemon.status() or {}).get("phase") == "busy", 30, "busy")
    finally:
        daemon.kill()
    worker.join(10)
    check_store(state)
    before = counted(state, "P-KILL")
    assert len(before) in (2, 3)  # the third field was written whole, or not at all

    daemon = DaemonProcess(config)
    try:
        daemon.wait_phase("ready", 60)
        shown = daemon.request({"cmd": "sample-show", "sample_id": "P-KILL"})
        assert shown["ok"] and shown["sample"]["state"] == "open"
        assert shown["sample"]["n_fields"] == len(before)
        # The camera starts over: the photos counted before the cut come round again.
        again = [daemon.capture("P-KILL") for _ in range(4)]
        assert [r["field"]["status"] for r in again[:2]] == ["repeat", "repeat"]
        assert again[3]["field"]["status"] == "counted"
        # A button press after the restart still adds to the sample it was counting.
        reply = daemon.request({"cmd": "press-button", "wait_s": 30}, timeout=40)
        assert reply["ok"] and reply["state"]["last_result"]["sample_id"] == "P-KILL"
        final = daemon.request({"cmd": "sample-show", "sample_id": "P-KILL"})["sample"]
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    check_store(state)
    after = counted(state, "P-KILL")
    # Each photo counted exactly once, whatever the cut interrupted.
    assert sorted(sha for _, sha, _ in after) == sorted(digests)
    assert final["n_fields"] == 4
    assert final["n_cells"] == sum(n for _, _, n in after)
    assert final["n_cells"] == first["sample"]["n_cells"] + sum(n for pos, _, n in after if pos > 1)
