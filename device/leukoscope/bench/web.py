"""`leukoscope bench-web`: /api/status latency under load while captures run back to back.

Starts the real daemon (replay camera over 5-megapixel synthetic stills, mock GPIO, the
given bundle, the status page on a free loopback port), then alternates captures without
and with `clients` concurrent clients: polling /api/status as the page does, watching the
live view, and polling back to back. It prints the latency percentiles and the capture
times side by side. Loopback only; it prints figures and is not a test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import cv2

from leukoscope.core.synthetic import make_smear
from leukoscope.web.auth import write_password_file

#: Targets from the status page's issue.
P95_TARGET_MS = 100.0
SLOWDOWN_TARGET = 1.20
#: How often the status page itself polls /api/status while a capture runs.
BROWSER_INTERVAL_S = 0.3
#: The live view fetches a frame this often; it may cost a capture at most 10%.
LIVE_VIEW_INTERVAL_S = 1.0
LIVE_VIEW_TARGET = 1.10
PASSWORD = "bench-password-not-secret"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_stills(folder: Path, count: int, size: tuple[int, int]) -> None:
    """Synthetic smear fields of `size` as JPEG files, as a camera would deliver them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        blasts = 4 if i % 2 else 0
        smear = make_smear(size[0], size[1], n_wbc=4, n_blasts=blasts, px_per_um=10.0, seed=i)
        bgr = cv2.cvtColor(smear.image, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"synthetic-{i:02d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])


def write_config(workdir: Path, bundle: Path, images: Path, port: int, **web: Any) -> Path:
    """A daemon config for a scratch folder: replay camera, mock GPIO, web on loopback."""
    web_table = {"host": "127.0.0.1", "port": port, "read_access": "open"} | web
    lines = [
        "[paths]",
        f"state_dir = {json.dumps(str(workdir / 'state'))}",
        f"bundle = {json.dumps(str(bundle))}",
        "[camera]",
        'backend = "replay"',
        "[camera.replay]",
        f"folder = {json.dumps(str(images))}",
        "[gpio]",
        'pin_factory = "mock"',
        "[indicator]",
        "result_hold_s = 0.5",
        "beep = false",
        "[retention]",
        "min_free_mb = 0",
        "[daemon]",
        "startup_fault_hold_s = 0",
        "[web]",
        *(f"{k} = {json.dumps(v)}" for k, v in web_table.items()),
    ]
    path = workdir / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class DaemonProcess:
    """`leukoscope run` in a subprocess, with its status page."""

    config: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    _log_file: Any = field(default=None, repr=False)

    @property
    def base(self) -> str:
        """The status page's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until /healthz says ready (RuntimeError with the log if not)."""
        self._log_file = self.log.open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leukoscope.cli.main", "run", "--config", str(self.config)],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the daemon did not become ready:\n{self.log.read_text()[-4000:]}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, and return the exit code (SIGKILL if it hangs)."""
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        elif self.proc is not None:
            code = self.proc.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code


@contextlib.contextmanager
def running_daemon(
    workdir: Path,
    bundle: Path,
    *,
    stills: int = 4,
    size: tuple[int, int] = (2592, 1944),
    password: str | None = PASSWORD,
    **web: Any,
) -> Iterator[DaemonProcess]:
    """A daemon on replay stills in `workdir`, stopped on exit."""
    images = workdir / "stills"
    write_stills(images, stills, size)
    port = free_port()
    pw_file = workdir / "state" / "web-password"
    if password is not None:
        write_password_file(pw_file, password)
    cfg = write_config(workdir, bundle, images, port, password_file=str(pw_file), **web)
    daemon = DaemonProcess(cfg, port, workdir / "daemon.log")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


class Session:
    """A logged-in HTTP client (cookie and CSRF token) on one keep-alive connection."""

    def __init__(self, base_port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", base_port, timeout=60)
        self.cookie = ""
        self.csrf = ""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        h = dict(headers or {})
        if self.cookie:
            h["Cookie"] = self.cookie
        self.conn.request(method, path, body=body, headers=h)
        resp = self.conn.getresponse()
        data = resp.read()
        cookie = resp.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return resp.status, data, resp

    def login(self, password: str) -> None:
        _, page, _ = self.request("GET", "/login")
        token = re.search(rb'name="csrf-token" content="([^"]+)"', page)
        if token is None:
            raise RuntimeError("no CSRF token on the login page")
        form = urlencode({"password": password, "csrf_token": token.group(1).decode()})
        status, _, _ = self.request(
            "POST",
            "/login",
            form.encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        if status != 303:
            raise RuntimeError(f"login failed ({status})")
        _, page, _ = self.request("GET", "/")
        token = re.search(rb'name="csrf-token" content="([^"]+)"', page)
        self.csrf = token.group(1).decode() if token else ""

    def status(self) -> dict[str, Any]:
        _, data, _ = self.request("GET", "/api/status")
        result: dict[str, Any] = json.loads(data)
        return result

    def capture(self, sample_id: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """POST /api/capture, then poll until the new result is published; return it."""
        body = json.dumps({"sample_id": sample_id} if sample_id else {}).encode()
        status, data, _ = self.request(
            "POST",
            "/api/capture",
            body,
            {"Content-Type": "application/json", "X-CSRF-Token": self.csrf},
        )
        if status != 202:
            raise RuntimeError(f"capture refused ({status}): {data!r}")
        seq = json.loads(data)["result_seq"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self.status()
            if snap["result_seq"] > seq and snap["phase"] != "busy":
                last: dict[str, Any] = snap["last_result"]
                return last
            time.sleep(0.02)
        raise RuntimeError("the capture did not finish in time")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _captures(session: Session, n: int) -> list[dict[str, float]]:
    """The daemon's stage timings (ms) of n back-to-back captures."""
    return [session.capture(f"bench-{i}")["timings_ms"] for i in range(n)]


def _stages(runs: list[dict[str, float]]) -> str:
    keys = [k for k in runs[0] if k != "trigger_to_indicator"]
    return "  ".join(f"{k} {statistics.median(r.get(k, 0.0) for r in runs):.1f}" for k in keys)


def _load(
    port: int,
    clients: int,
    interval: float,
    active: threading.Event,
    stop: threading.Event,
    latencies: list[float],
    errors: list[str],
    path: str = "/api/status",
) -> list[threading.Thread]:
    """`clients` threads polling `path` on keep-alive connections while `active`."""

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            if not active.wait(0.05):
                continue
            t0 = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except OSError as exc:
                errors.append(str(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            latencies.append((time.perf_counter() - t0) * 1000.0)
            if not ok:
                errors.append(f"status {resp.status}")
            if interval:
                stop.wait(interval)
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads


@dataclass
class Phase:
    """One load mode: paired captures without and with the load, and the load's latencies."""

    title: str
    path: str = "/api/status"
    target: float = SLOWDOWN_TARGET
    latency_target: float | None = P95_TARGET_MS
    quiet: list[dict[str, float]] = field(default_factory=list)
    loaded: list[dict[str, float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _phase(
    session: Session, port: int, clients: int, interval: float, captures: int, phase: Phase
) -> Phase:
    """Alternate captures without and with the load, so the machine's drift cancels out."""
    active, stop = threading.Event(), threading.Event()
    threads = _load(
        port, clients, interval, active, stop, phase.latencies, phase.errors, phase.path
    )
    active.set()
    time.sleep(1.0)  # every client connected and polling before the first timed capture
    for i in range(captures):
        active.clear()
        time.sleep(0.15)  # requests in flight finish
        phase.quiet.append(session.capture(f"quiet-{i}")["timings_ms"])
        active.set()
        time.sleep(0.15)  # the load is running again
        phase.loaded.append(session.capture(f"load-{i}")["timings_ms"])
    stop.set()
    active.set()
    for t in threads:
        t.join(10)
    return phase


def _report(phase: Phase) -> bool:
    quiet = [r["trigger_to_indicator"] for r in phase.quiet]
    loaded = [r["trigger_to_indicator"] for r in phase.loaded]
    lat = phase.latencies
    p50, p95, p99 = (_pct(lat, q) for q in (0.5, 0.95, 0.99))
    ratios = {
        "median": statistics.median(loaded) / statistics.median(quiet),
        "p95": _pct(loaded, 0.95) / _pct(quiet, 0.95),
        "slowest": max(loaded) / max(quiet),
    }
    print(f"{phase.title}: {len(lat)} requests, {len(phase.errors)} errors")
    print(
        f"  {phase.path} p50 {p50:.1f} ms  p95 {p95:.1f} ms  p99 {p99:.1f} ms"
        f"  max {max(lat):.1f} ms"
        + (f"   (target p95 < {phase.latency_target:.0f} ms)" if phase.latency_target else "")
    )
    for name, runs, times in (("without", phase.quiet, quiet), ("with", phase.loaded, loaded)):
        print(
            f"  capture {name} load: median {statistics.median(times):.1f} ms"
            f"  p95 {_pct(times, 0.95):.1f}  max {max(times):.1f}   stages: {_stages(runs)}"
        )
    print(
        "  slowdown: "
        + ", ".join(f"{k} x{v:.2f}" for k, v in ratios.items())
        + f"   (target: at most x{phase.target:.2f})"
    )
    fast = phase.latency_target is None or p95 < phase.latency_target
    ok = fast and ratios["slowest"] <= phase.target and not phase.errors
    print("  targets met" if ok else "  TARGETS MISSED")
    return ok


def main(
    bundle: Path,
    *,
    clients: int = 20,
    captures: int = 20,
    workdir: Path | None = None,
    interval: float = BROWSER_INTERVAL_S,
) -> int:
    """Run the benchmark and print the figures; 0 if the targets are met under the
    browser-like load (`interval` between each client's requests) and with live views
    open, else 1.

    Each phase alternates a capture without load and one with it (the clients pause in
    between), so other work on the machine affects both alike. A last phase with no
    pause between a client's requests (saturating) is printed for information.
    """
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-web-")))
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"starting the daemon (bundle {bundle}, 5 MP replay stills) ...", flush=True)
        daemon = stack.enter_context(running_daemon(workdir, bundle))
        session = Session(daemon.port)
        session.login(PASSWORD)
        _captures(session, 3)  # warm-up: first inference, file cache
        port = daemon.port
        browser = Phase(f"{clients} clients, each polling every {interval * 1000:.0f} ms")
        saturating = Phase(f"{clients} clients, back to back (saturating)")
        live = Phase(
            f"{clients} live views, a frame every {LIVE_VIEW_INTERVAL_S:.0f} s each",
            path="/api/preview.jpg",
            target=LIVE_VIEW_TARGET,
            latency_target=None,
        )
        _phase(session, port, clients, interval, captures, browser)
        _phase(session, port, clients, LIVE_VIEW_INTERVAL_S, captures, live)
        _phase(session, port, clients, 0.0, captures, saturating)
    print(
        f"{captures} captures with and {captures} without load per phase, alternating;"
        " trigger to indicator as the daemon measures it; 5 MP replay stills"
    )
    ok = _report(browser)
    ok = _report(live) and ok
    _report(saturating)
    return 0 if ok else 1
