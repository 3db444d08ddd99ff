"""The real daemon speaks systemd's notify protocol as the unit expects (Type=notify, WatchdogSec=).

A fake $NOTIFY_SOCKET (a datagram socket this test binds) stands in for systemd. The work
loop is made to hang the way a stuck camera would: the replay camera's simulated exposure
holds a capture (and so the loop) for several watchdog intervals.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WATCHDOG_USEC = 1_000_000  # systemd's WatchdogSec=1s: the daemon must ping every 0.5 s
HANG_S = 4.0  # the simulated exposure: the work loop is stuck this long


class FakeSystemd:
    """Collects sd_notify datagrams with their arrival times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            now = time.monotonic()
            with self._lock:
                self.messages.extend((now, line) for line in data.decode().splitlines())

    def times(self, line: str) -> list[float]:
        with self._lock:
            return [t for t, msg in self.messages if msg == line]

    def wait_for(self, line: str, timeout: float, after: float = 0.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [t for t in self.times(line) if t >= after]
            if hits:
                return hits[0]
            time.sleep(0.05)
        with self._lock:
            seen = [msg for _, msg in self.messages]
        raise AssertionError(f"no {line} within {timeout} s; got {seen}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def control(path: Path, payload: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(json.dumps(payload).encode() + b"\n")
        with sock.makefile("rb") as f:
            return json.loads(f.readline())


@pytest.fixture
def daemon_config(tmp_path: Path, session_bundle: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(images / "a.png")
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[paths]
state_dir = "{tmp_path / "state"}"
bundle = "{session_bundle}"
control_socket = "{tmp_path / "control.sock"}"

[camera]
backend = "replay"
capture_timeout_s = {HANG_S * 3}

[camera.replay]
folder = "{images}"
exposure_ms = {HANG_S * 1000}

[gpio]
pin_factory = "mock"

[daemon]
startup_fault_hold_s = 0
"""
    )
    return config


@pytest.mark.slow
def test_daemon_notifies_ready_watchdog_and_stopping(tmp_path: Path, daemon_config: Path) -> None:
    systemd = FakeSystemd(tmp_path / "notify.sock")
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(systemd.path),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
    }
    env.pop("WATCHDOG_PID", None)
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "leukoscope.cli.main", "run", "--config", str(daemon_config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # READY=1 once camera, model and store are up; then a steady heartbeat.
        ready = systemd.wait_for("READY=1", timeout=90)
        time.sleep(2.5)
        beats = [t for t in systemd.times("WATCHDOG=1") if t >= ready]
        assert len(beats) >= 4, f"only {len(beats)} WATCHDOG=1 in 2.5 s after READY=1"
        gaps = np.diff([ready, *beats])
        assert gaps.max() < WATCHDOG_USEC / 1e6, f"heartbeat gaps {gaps}"

        # Hang the work loop: a capture whose exposure lasts HANG_S.
        assert control(tmp_path / "control.sock", {"cmd": "press-button"})["ok"] is True
        hung_from = time.monotonic()
        time.sleep(HANG_S - 0.5)
        during = [t for t in systemd.times("WATCHDOG=1") if hung_from + 0.6 < t < hung_from + 3.4]
        assert during == [], "WATCHDOG=1 sent while the work loop was stuck in a capture"
        # The loop comes back, and so does the heartbeat.
        systemd.wait_for("WATCHDOG=1", timeout=HANG_S + 3, after=hung_from + HANG_S - 0.5)

        proc.send_signal(signal.SIGTERM)
        systemd.wait_for("STOPPING=1", timeout=15)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        systemd.close()
        print((tmp_path / "daemon.log").read_text()[-3000:])
