"""Faults the appliance must survive: camera lost and back, bad model, full disk, SIGKILL."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from leukoscope.app import EXIT_UNAVAILABLE
from leukoscope.appliance.control import ControlError
from leukoscope.appliance.records import TMP_DIR
from leukoscope.model.manifest import sha256_file
from tests.daemon_helpers import DaemonProcess, daemon_config, good_field, wait_until, write_rgb

pytestmark = pytest.mark.slow


def good_replay(folder: Path, n: int = 3) -> Path:
    for i in range(n):
        write_rgb(folder / f"{i:02d}-good.png", good_field(i))
    return folder


def check_store(state: Path) -> int:
    """The invariants after any crash; returns the number of records."""
    db = sqlite3.connect(f"file:{state / 'records.sqlite3'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute(
            "SELECT image_path, image_sha256 FROM results "
            "WHERE image_path IS NOT NULL AND image_deleted = 0"
        ).fetchall()
        n = db.execute("SELECT count(*) FROM results").fetchone()[0]
    finally:
        db.close()
    images = state / "images"
    for rel, digest in rows:
        assert (images / rel).is_file(), f"record points to missing image {rel}"
        assert sha256_file(images / rel) == digest, f"image {rel} is not what was recorded"
    on_disk = {
        p.relative_to(images).as_posix()
        for p in images.rglob("*")
        if p.is_file() and TMP_DIR not in p.parts
    }
    assert on_disk == {rel for rel, _ in rows}, "images on disk that no record knows"
    assert list((images / TMP_DIR).iterdir()) == [], "half-written image left behind"
    return int(n)


def test_camera_disappears_and_returns_without_restart(
    tmp_path: Path, session_bundle: Path
) -> None:
    replay = good_replay(tmp_path / "replay")
    proc = DaemonProcess(daemon_config(tmp_path, session_bundle, replay))
    try:
        proc.wait_phase("ready")
        pid = proc.proc.pid
        replay.rename(tmp_path / "unplugged")
        st = proc.wait_phase("fault", timeout=10)
        assert "camera" in st["faults"] and st["indicator"] == "fault-camera"
        refused = proc.request({"cmd": "capture"})
        assert not refused["ok"] and "not ready" in refused["error"]
        (tmp_path / "unplugged").rename(replay)
        st = proc.wait_phase("ready", timeout=10)
        assert st["faults"] == {} and st["indicator"] == "ready"
        assert proc.capture()["outcome"] != "fault"
        assert proc.proc.pid == pid and proc.proc.poll() is None
        assert "camera recovered" in proc.log
    finally:
        assert proc.stop() == 0


def test_invalid_bundle_at_start_shows_fault_and_exits_for_a_restart(
    tmp_path: Path, bundle_copy: Path
) -> None:
    model = bundle_copy / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    cfg = daemon_config(tmp_path, bundle_copy, good_replay(tmp_path / "replay"))
    proc = DaemonProcess(cfg)
    rc = proc.proc.wait(60)
    proc._reader.join(5)
    assert rc == EXIT_UNAVAILABLE != 0
    assert "cannot start: model bundle" in proc.log and "sha256 mismatch" in proc.log
    assert "-> fault-model" in proc.log


def test_sighup_reloads_and_keeps_the_old_bundle_on_failure(
    tmp_path: Path, bundle_copy: Path
) -> None:
    proc = DaemonProcess(daemon_config(tmp_path, bundle_copy, good_replay(tmp_path / "replay")))
    try:
        before = proc.wait_phase("ready")["model"]
        manifest = bundle_copy / "manifest.json"
        good = manifest.read_text()
        manifest.write_text("{ not json")
        proc.proc.send_signal(signal.SIGHUP)
        st = wait_until(lambda: (s := proc.status()) and s["model_error"] and s, 20, "reload")
        assert "reload failed" in st["model_error"] and st["model"] == before
        assert proc.capture()["model_sha256"] == before["sha256"]
        manifest.write_text(good)
        proc.proc.send_signal(signal.SIGHUP)
        st = wait_until(lambda: (s := proc.status()) and s["reloads"] == 1 and s, 20, "reload")
        assert st["model_error"] is None and st["phase"] == "ready"
    finally:
        assert proc.stop() == 0


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs: a disk that really fills up (needs root, as in CI's container)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs to fill ({exc}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_a_fault_and_nothing_is_corrupted(
    tmp_path: Path, session_bundle: Path, small_disk: Path
) -> None:
    replay = good_replay(tmp_path / "replay")
    cfg = daemon_config(tmp_path, session_bundle, replay, retention={"min_free_mb": 0})
    text = cfg.read_text().replace(str(tmp_path / "state"), str(small_disk / "state"))
    cfg.write_text(text)
    proc = DaemonProcess(cfg)
    filler = small_disk / "filler"
    try:
        proc.wait_phase("ready")
        proc.capture()
        # Leave less room than one more image needs.
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 200_000))
        result = proc.request({"cmd": "capture"}, timeout=60)["result"]
        assert result["saved"] is False and "space" in result["error"]
        st = proc.wait_phase("fault")
        # Its own pattern and reason: not a broken card, a full one.
        assert "disk-full" in st["faults"] and st["indicator"] == "fault-disk-full"
        refused = proc.request({"cmd": "capture"})
        assert not refused["ok"] and "disk-full" in refused["error"]
        assert proc.proc.poll() is None
        check_store(small_disk / "state")
        filler.unlink()
        proc.wait_phase("ready", timeout=10)
        assert proc.capture()["saved"] is True
    finally:
        assert proc.stop() == 0
    assert check_store(small_disk / "state") == 2


def test_sigkill_during_captures_never_corrupts(tmp_path: Path, session_bundle: Path) -> None:
    replay = good_replay(tmp_path / "replay", n=4)
    cfg = daemon_config(tmp_path, session_bundle, replay)
    rng = random.Random(4)
    total = 0
    for round_ in range(8):
        proc = DaemonProcess(cfg)
        proc.wait_phase("ready")
        if round_:
            total = check_store(tmp_path / "state")  # after each restart
        stop = threading.Event()

        def hammer(p: DaemonProcess = proc, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                try:
                    p.request({"cmd": "capture"}, timeout=10)
                except (ControlError, OSError, ValueError):
                    return

        workers = [threading.Thread(target=hammer) for _ in range(2)]
        for w in workers:
            w.start()

        # Kill at a random point, once some captures went through.
        def captured(p: Any = proc) -> bool:
            return bool((p.status() or {}).get("result_seq", 0) >= 1)

        wait_until(captured, 30, "a capture")
        threading.Event().wait(rng.uniform(0.0, 0.3))
        proc.proc.send_signal(signal.SIGKILL)
        proc.kill()
        stop.set()
        for w in workers:
            w.join(15)
    proc = DaemonProcess(cfg)
    try:
        proc.wait_phase("ready")
        final = check_store(tmp_path / "state")
        assert final >= total and final >= 8
    finally:
        assert proc.stop() == 0
    shutil.rmtree(tmp_path / "state", ignore_errors=True)


def test_ready_only_once_the_camera_is_there(tmp_path: Path, session_bundle: Path) -> None:
    """No READY=1 while the camera is missing at start; it follows when the camera comes."""
    import socket

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.2)
    received: list[str] = []

    def drain() -> list[str]:
        try:
            while True:
                received.extend(notify.recv(4096).decode().splitlines())
        except TimeoutError:
            return received

    replay = tmp_path / "replay"
    cfg = daemon_config(tmp_path, session_bundle, replay)
    proc = DaemonProcess(cfg, env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
    try:
        st = proc.wait_phase("fault")
        assert "camera" in st["faults"] and st["indicator"] == "fault-camera"
        assert "READY=1" not in drain()
        good_replay(replay)
        proc.wait_phase("ready", timeout=10)
        wait_until(lambda: "READY=1" in drain(), 10, "READY=1")
        assert proc.stop() == 0
        assert "STOPPING=1" in drain()
    finally:
        proc.stop()
        notify.close()
