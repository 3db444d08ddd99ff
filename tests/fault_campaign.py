"""The fault campaign (issue 17): kill, HTTP-fuzz and image-fuzz runs against a real daemon.

    python -m tests.fault_campaign [--short] [--bundle DIR] [--report FILE] [--seed N]

Everything runs on 127.0.0.1 in a temporary folder: the real `leukoscope run` (replay
camera, gpiozero's MockFactory, the given bundle, the status page on a free port) and the
real `leukoscope model install` / `leukoscope classify` commands. The runs:

- kill-daemon: SIGKILL the daemon at a random moment while two clients capture (one for a
  sample), restart it, and check that every acknowledged record (the capture's reply
  carried it) and every acknowledged sample field is still there, and that SQLite and the
  images are intact (`PRAGMA integrity_check`, every image's sha256, no orphans);
- kill-model-install: SIGKILL `leukoscope model install --activate` at a random moment;
  the active model must load completely (hashes and golden outputs), and be the last one
  whose install finished;
- http-fuzz: malformed and hostile requests at every route over raw sockets: odd methods,
  paths and query values, huge and non-ASCII headers, foreign CSRF tokens, bad JSON,
  oversized bodies, random bytes;
- image-fuzz-replay / image-fuzz-classify: odd image files (truncated, empty, huge
  dimensions in the header, wrong extension, random bytes, 1x1, 16-bit, grey, CMYK,
  bit-flipped JPEGs) through the replay camera and through `leukoscope classify`.

It prints the table (run, tried, lost, corrupt, 5xx, crashes), writes it with the examples
of what failed to the report, and exits 1 if any column but `tried` is not zero. A crash is
a daemon that died or could not start again, a command that did not end with a status of
its own, or a Python traceback in any log. `make fault` runs the full campaign (about ten
minutes on a 2-core machine); `tests/test_fault_campaign.py` runs `--short` in `make test`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from leukoscope.appliance.control import ControlError, request
from leukoscope.bench.web import (
    PASSWORD,
    DaemonProcess,
    Session,
    free_port,
    write_config,
    write_stills,
)
from leukoscope.config import WebConfig, load_config
from leukoscope.core.errors import BundleError
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import MANIFEST
from leukoscope.model.store import ACTIVE
from leukoscope.web import create_app
from leukoscope.web.auth import write_password_file
from leukoscope.web.fake import FakeSource
from tests.daemon_helpers import good_field
from tests.daemon_helpers import write_config as write_sections
from tests.test_faults import check_store
from tests.test_modelstore import make_variant

REPO = Path(__file__).resolve().parent.parent
TRACEBACK = "Traceback (most recent call last)"
#: A 503 with its reason is the designed answer of these while the camera has no frame
#: (a corrupt replay file is next) or the daemon is busy: listed, not counted as 5xx.
UNAVAILABLE_BY_DESIGN = ("/healthz", "/api/preview.jpg")


def routes() -> list[str]:
    """Every route of the status page and API, from the app's own URL map (converters
    dropped: `<sample:sample_id>` is `<sample_id>`), for `_fill` to fill with odd values."""
    with tempfile.TemporaryDirectory() as tmp:
        password = Path(tmp) / "web-password"
        write_password_file(password, PASSWORD)
        app = create_app(FakeSource(Path(tmp) / "images"), WebConfig(password_file=password))
        rules = {re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", r.rule) for r in app.url_map.iter_rules()}
    return sorted(rules)


@dataclass
class Row:
    """One run's line of the table, with examples of what went wrong."""

    run: str
    tried: int = 0
    lost: int = 0
    corrupt: int = 0
    http_5xx: int = 0
    crashes: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Acknowledged things checked after the kills (records and fields, finished installs).
    checked: int = 0
    #: 503s with a reason from UNAVAILABLE_BY_DESIGN, not counted as 5xx.
    unavailable: int = 0

    def note(self, text: str) -> None:
        if len(self.notes) < 10:
            self.notes.append(text)

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.corrupt or self.http_5xx or self.crashes)


@dataclass(frozen=True)
class Sizes:
    """How many of each: the full campaign or the short one in `make test`."""

    daemon_kills: int
    install_kills: int
    http_requests: int
    bitflips: int
    #: At most this many odd files through the replay camera (classify takes them all).
    replay_files: int
    #: A kill comes this long (uniformly, seconds) after the clients start capturing.
    kill_window_s: tuple[float, float]

    @classmethod
    def of(cls, short: bool) -> Sizes:
        if short:
            return cls(2, 3, 150, bitflips=2, replay_files=16, kill_window_s=(0.4, 1.2))
        return cls(40, 40, 2500, bitflips=30, replay_files=1000, kill_window_s=(0.2, 4.0))


def _log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# -- kill runs ------------------------------------------------------------------------------


def _stored(state: Path) -> tuple[set[int], set[int]]:
    """The record ids and the record ids of sample fields in the store now."""
    db = sqlite3.connect(f"file:{state / 'records.sqlite3'}?mode=ro", uri=True)
    try:
        records = {int(r[0]) for r in db.execute("SELECT id FROM results")}
        fields = {int(r[0]) for r in db.execute("SELECT record_id FROM sample_fields")}
    finally:
        db.close()
    return records, fields


def _check_after_crash(state: Path, acked: set[int], acked_fields: set[int], row: Row) -> None:
    """Count what a restart lost or found corrupt."""
    try:
        check_store(state)
    except (AssertionError, sqlite3.DatabaseError) as exc:
        row.corrupt += 1
        row.note(f"store after a kill: {exc}")
        return
    records, fields = _stored(state)
    for what, wanted, have in (("record", acked, records), ("field", acked_fields, fields)):
        missing = wanted - have
        if missing:
            row.lost += len(missing)
            row.note(f"acknowledged {what}s lost: {sorted(missing)[:10]}")


def kill_daemon_run(
    work: Path, bundle: Path, kills: int, window: tuple[float, float], rng: random.Random
) -> Row:
    """SIGKILL the daemon during captures `kills` times; nothing acknowledged may be lost."""
    row = Row("kill-daemon")
    stills = work / "stills"
    write_stills(stills, 4, (800, 600))
    state = work / "state"
    acked: set[int] = set()
    acked_fields: set[int] = set()
    lock = threading.Lock()
    for round_ in range(kills + 1):
        port = free_port()
        cfg = write_config(work, bundle, stills, port)
        socket_path = load_config(cfg).paths.control_socket
        log = work / f"daemon-{round_}.log"
        daemon = DaemonProcess(cfg, port, log)
        try:
            daemon.start()
        except RuntimeError as exc:
            row.crashes += 1
            row.note(f"restart {round_} failed: {str(exc)[-300:]}")
            break
        if round_:
            _check_after_crash(state, acked, acked_fields, row)
        if round_ == kills:
            if daemon.stop() != 0:
                row.crashes += 1
                row.note("the last daemon did not stop cleanly")
        else:
            row.tried += 1
            stop = threading.Event()

            def capture(
                sample: str | None, stop: threading.Event = stop, socket_path: Path = socket_path
            ) -> None:
                n = 0
                while not stop.is_set():
                    sid = f"{sample}-{n // 8}" if sample else None  # a new sample now and then
                    try:
                        reply = request(socket_path, {"cmd": "capture", "sample_id": sid}, 10)
                    except (ControlError, OSError, ValueError):
                        return
                    result = reply.get("result") or {}
                    if reply.get("ok") and result.get("saved"):
                        n += 1
                        with lock:
                            acked.add(int(result["id"]))
                            if result.get("field"):
                                acked_fields.add(int(result["id"]))
                    elif "busy" in str(reply.get("error")):
                        time.sleep(0.02)  # the other client's capture is running
                    elif not reply.get("ok"):
                        n = (n // 8 + 1) * 8  # the sample takes no more fields: a new one

            workers = [
                threading.Thread(target=capture, args=(None,)),
                threading.Thread(target=capture, args=(f"K{round_}",)),
            ]
            for w in workers:
                w.start()
            time.sleep(rng.uniform(*window))  # a random moment, mostly mid-capture
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait()
            daemon.stop()
            stop.set()
            for w in workers:
                w.join(15)
        if TRACEBACK in _log_text(log):
            row.crashes += 1
            row.note(f"traceback in {log.name}")
    row.checked = len(acked) + len(acked_fields)
    row.note(f"{len(acked)} acknowledged records, {len(acked_fields)} sample fields checked")
    return row


def _version(bundle: Path) -> str:
    return str(json.loads((bundle / MANIFEST).read_text())["version"])


def _leukoscope(*args: str) -> list[str]:
    return [sys.executable, "-m", "leukoscope.cli.main", *args]


def kill_install_run(work: Path, bundle: Path, kills: int, rng: random.Random) -> Row:
    """SIGKILL `model install` at random moments; the active model must stay whole."""
    row = Row("kill-model-install")
    variants = [make_variant(bundle, work / f"v{i}", f"9.0.{i}", pad=16 * i) for i in range(1, 4)]
    cfg = write_sections(
        work / "config.toml",
        {
            "paths": {"state_dir": work / "state", "bundle": work / "state/models/active"},
            "camera": {"backend": "replay"},
            "camera.replay": {"folder": work / "none"},
            "gpio": {"pin_factory": "mock"},
            "model": {"keep": 2, "reload": "none", "require_signature": False},
        },
    )
    store = work / "state" / "models"

    def install(variant: Path, kill_after: float | None) -> int | None:
        with (work / "install.log").open("a") as log:
            proc = subprocess.Popen(
                _leukoscope("model", "install", str(variant), "--config", str(cfg), "--activate"),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=work,
            )
            if kill_after is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(kill_after)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
            return proc.wait(120)

    started = time.monotonic()
    if install(variants[0], None) != 0:
        row.crashes += 1
        row.note(f"the first install failed: {_log_text(work / 'install.log')[-500:]}")
        return row
    full = time.monotonic() - started
    active_version = _version(variants[0])
    for i in range(kills):
        variant = variants[(i + 1) % len(variants)]
        rc = install(variant, rng.uniform(0.0, full * 1.1))
        row.tried += 1
        if rc not in (0, -signal.SIGKILL):
            row.crashes += 1
            row.note(f"install of {variant.name} ended with status {rc}")
        try:
            active = load_bundle(store / ACTIVE)
        except (BundleError, OSError) as exc:
            row.corrupt += 1
            row.note(f"after kill {i}: the active model does not load: {exc}")
            continue
        # Old or new, never anything else; new for certain once the install said so.
        allowed = {_version(variant)} if rc == 0 else {active_version, _version(variant)}
        row.checked += rc == 0
        if active.manifest.version not in allowed:
            row.lost += 1
            row.note(f"after kill {i}: active is {active.manifest.version}, not {allowed}")
        active_version = active.manifest.version
    row.note(f"{row.checked} of {row.tried} installs finished before their kill")
    if TRACEBACK in _log_text(work / "install.log"):
        row.crashes += 1
        row.note("traceback in install.log")
    return row


# -- HTTP fuzz ------------------------------------------------------------------------------

ODD_IDS = ("1", "0", "-1", "99999999999999999999999", "abc", "1.5", "%00", "%2e%2e%2f%2e%2e",
           "%C3%A9", "%ff", "1e9", "a" * 300)  # fmt: skip
ODD_SAMPLES = ("S-1", "FUZZ-1", "x" * 80, "..", "%2e%2e", "%C3%A9", "a%2fb", "S%00")
ODD_VALUES = ("", "0", "-1", "201", "abc", "1e400", "99999999999999999999", "9999-12-31",
              "0000-01-01", "2026-02-30", "99999-01-01", "%C3%A9", "%ff%fe", "%00", "x" * 5000,
              "nan", "inf", "retake", "1970-01-01")  # fmt: skip
QUERY_KEYS = ("limit", "cursor", "verdict", "date_from", "date_to", "sample_id", "q", "%C3%A9")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND",
           "get", "CONNECT", "X" * 300)  # fmt: skip
BODIES: tuple[bytes, ...] = (
    b"",
    b"{",
    b"null",
    b"[]",
    b'{"sample_id": null}',
    b'{"sample_id": "\xc3\xa9\xc3\xa9"}',
    b'{"sample_id": ["a"]}',
    b'{"label": "blast", "reviewer": "' + b"r" * 5000 + b'"}',
    b'{"label": 1, "reviewer": {}}',
    b'{"unix": "now"}',
    b'{"unix": 1e400}',
    b'{"unix": -1e308}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
    b"\xff\xfe\x00garbage",
    b"password=%ff&csrf_token=%C3%A9",
    b"csrf_token=" + b"\xe9" * 40,
)
CONTENT_TYPES = (
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "text/plain; charset=utf-99",
    "\u00e9/\u00e9",
)
BAD_LINES = (
    b"GET / HTTP/9.9",
    b"GET",
    b"\x00\x01 / HTTP/1.1",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1",
    b"GET / HTTP/1.1\r\nHost",
    b"GET http://x/ HTTP/1.1",
    b"GET /api/results?" + b"limit=1&" * 20000 + b" HTTP/1.1",
)


ODD_FILES = ("style.css", "..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/x", "a" * 300, "%C3%A9.js")


def _fill(route: str, rng: random.Random) -> str:
    """The route with each `<name>` replaced by an odd value (any unknown name: an odd id)."""
    odd = {"sample_id": ODD_SAMPLES, "filename": ODD_FILES}
    return re.sub(r"<(\w+)>", lambda m: rng.choice(odd.get(m.group(1), ODD_IDS)), route)


def _query(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return ""
    pairs = [f"{rng.choice(QUERY_KEYS)}={rng.choice(ODD_VALUES)}" for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.2:
        pairs.append(pairs[0])  # a parameter given twice
    return "?" + "&".join(pairs)


def _raw(port: int, data: bytes, timeout: float = 15.0) -> int | None:
    """Send bytes, return the response's status (None if the server only closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        with contextlib.suppress(OSError):
            s.sendall(data)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_WR)
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in head and len(head) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
    parts = head.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def _http_request(
    rng: random.Random, paths: list[str], cookie: str, csrf: str
) -> tuple[str, bytes]:
    """One hostile request: what it is in words, and its bytes."""
    kind = rng.random()
    if kind < 0.04:
        return "random bytes", rng.randbytes(rng.randint(1, 4000))
    if kind < 0.08:
        line = rng.choice(BAD_LINES)
        return "bad request line", line + b"\r\n\r\n"
    method = rng.choice(METHODS) if rng.random() < 0.4 else rng.choice(("GET", "POST"))
    target = _fill(rng.choice(paths), rng) + _query(rng)
    headers: list[tuple[str, bytes]] = [("Host", b"127.0.0.1")]
    if rng.random() < 0.6 and cookie:
        headers.append(("Cookie", cookie.encode()))
    elif rng.random() < 0.3:
        headers.append(("Cookie", b"session=" + rng.randbytes(40).hex().encode() + b"\xe9"))
    token = rng.random()
    if token < 0.4 and csrf:
        headers.append(("X-CSRF-Token", csrf.encode()))
    elif token < 0.6:
        headers.append(("X-CSRF-Token", rng.choice(("\u00e9" * 43, "\u2603", "")).encode()))
    elif token < 0.7:
        headers.append(("X-CSRF-Token", b"caf\xe9\xff"))
    if rng.random() < 0.05:
        headers.append(("X-Huge", b"h" * rng.choice((8_000, 70_000, 300_000))))
    if rng.random() < 0.03:
        headers += [(f"X-Many-{i}", b"1") for i in range(2000)]
    if rng.random() < 0.05:
        headers.append(("X-Latin", bytes(range(128, 256))))
    body = rng.choice(BODIES) if method not in ("GET", "HEAD") or rng.random() < 0.1 else b""
    if rng.random() < 0.03:
        body = b"x" * rng.choice((2 << 20, 12 << 20))  # oversized
    if body and rng.random() < 0.8:
        headers.append(("Content-Type", rng.choice(CONTENT_TYPES).encode()))
    length = str(len(body)).encode()
    if rng.random() < 0.05:
        length = rng.choice((b"-1", b"abc", b"99999999999999999999", b"1, 2"))
    headers.append(("Content-Length", length))
    headers.append(("Connection", b"close"))
    head = f"{method} {target} HTTP/1.1\r\n".encode("utf-8", "replace")
    head += b"".join(k.encode() + b": " + v + b"\r\n" for k, v in headers)
    what = f"{method} {target[:120]}" + (f" ({len(body)} B body)" if body else "")
    return what, head + b"\r\n" + body


def _healthy(port: int) -> bool:
    """The page still answers (200 ready, or 503 with a reason while busy)."""
    status = None
    deadline = time.monotonic() + 10
    while status not in (200, 503) and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status = _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5)
        if status not in (200, 503):
            time.sleep(0.2)
    return status in (200, 503)


@contextlib.contextmanager
def _web_daemon(work: Path, bundle: Path, images: Path) -> Iterator[DaemonProcess]:
    """The daemon with its status page, a password set, on the replay `images`."""
    port = free_port()
    pw = work / "state" / "web-password"
    write_password_file(pw, PASSWORD)
    cfg = write_config(work, bundle, images, port, password_file=str(pw))
    daemon = DaemonProcess(cfg, port, work / "daemon.log")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def http_fuzz_run(work: Path, bundle: Path, n: int, rng: random.Random) -> Row:
    """`n` hostile requests at every route; no 5xx, and the daemon stays up."""
    row = Row("http-fuzz")
    stills = work / "stills"
    write_stills(stills, 2, (800, 600))
    with _web_daemon(work, bundle, stills) as daemon:
        session = Session(daemon.port)
        session.login(PASSWORD)
        session.capture("FUZZ-1")  # something to list, show and review
        paths = routes()
        row.note(f"{len(paths)} routes: {', '.join(paths)}")
        for i in range(n):
            what, data = _http_request(rng, paths, session.cookie, session.csrf)
            row.tried += 1
            try:
                status = _raw(daemon.port, data)
            except OSError as exc:
                status = None
                if not _healthy(daemon.port):
                    row.crashes += 1
                    row.note(f"{what}: the page stopped answering ({exc})")
                    break
            if status is not None and status >= 500:
                path = what.split(" ", 2)[1].split("?")[0] if " " in what else ""
                if status == 503 and path in UNAVAILABLE_BY_DESIGN:
                    row.unavailable += 1
                else:
                    row.http_5xx += 1
                    row.note(f"{status} for {what}")
            if i % 100 == 99 and not _healthy(daemon.port):
                row.crashes += 1
                row.note(f"the page stopped answering after {what}")
                break
        assert daemon.proc is not None
        if daemon.proc.poll() is not None:
            row.crashes += 1
            row.note(f"the daemon died ({daemon.proc.returncode})")
    if TRACEBACK in _log_text(daemon.log):
        row.crashes += 1
        row.note("traceback in the daemon's log")
    return row


# -- image fuzz -----------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def odd_images(folder: Path, rng: random.Random, bitflips: int) -> list[Path]:
    """Odd image files: truncated, empty, lying headers, wrong extensions, odd pixel types."""
    folder.mkdir(parents=True, exist_ok=True)
    good = cv2.cvtColor(good_field(3), cv2.COLOR_RGB2BGR)
    jpeg = cv2.imencode(".jpg", good)[1].tobytes()
    png = cv2.imencode(".png", good)[1].tobytes()
    files: dict[str, bytes] = {
        "zero-bytes.jpg": b"",
        "zero-bytes.png": b"",
        "truncated-third.jpg": jpeg[: len(jpeg) // 3],
        "truncated-header.jpg": jpeg[:20],
        "truncated-half.png": png[: len(png) // 2],
        "truncated-signature.png": png[:8],
        "random.jpg": rng.randbytes(5000),
        "random.png": rng.randbytes(5000),
        "random.tif": rng.randbytes(5000),
        "random.bmp": rng.randbytes(5000),
        "png-named.jpg": png,
        "jpeg-named.png": jpeg,
        "text-named.jpg": b"this is not an image\n",
        "html-named.png": b"<html><body>no</body></html>",
        "png-bad-crc.png": png[:29] + bytes([png[29] ^ 0xFF]) + png[30:],
        "tiff-header-only.tif": b"II*\x00\x08\x00\x00\x00",
        "bmp-header-only.bmp": b"BM" + b"\x00" * 12,
    }
    # Headers that claim enormous images on a few bytes of data.
    ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    files["huge-dims.png"] = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + _png_chunk(b"IEND", b"")
    )
    sof = jpeg.find(b"\xff\xc0")
    huge_jpeg = bytearray(jpeg)
    if sof >= 0:
        huge_jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 65_000, 65_000)
    files["huge-dims.jpg"] = bytes(huge_jpeg)
    encoded: dict[str, tuple[str, np.ndarray]] = {
        "one-pixel.png": (".png", good[:1, :1]),
        "one-pixel.jpg": (".jpg", good[:1, :1]),
        "strip-2x2000.png": (".png", cv2.resize(good, (2000, 2))),
        "grey.png": (".png", cv2.cvtColor(good, cv2.COLOR_BGR2GRAY)),
        "grey.jpg": (".jpg", cv2.cvtColor(good, cv2.COLOR_BGR2GRAY)),
        "sixteen-bit.png": (".png", good.astype(np.uint16) * 257),
        "sixteen-bit-grey.png": (".png", cv2.cvtColor(good, cv2.COLOR_BGR2GRAY).astype(np.uint16)),
        "rgba.png": (".png", cv2.cvtColor(good, cv2.COLOR_BGR2BGRA)),
        "float32.tif": (".tif", good.astype(np.float32) / 255.0),
        "all-black.png": (".png", np.zeros_like(good)),
        "all-white.jpg": (".jpg", np.full_like(good, 255)),
        "plain.bmp": (".bmp", good),
        "large-4000x3000.jpg": (".jpg", cv2.resize(good, (4000, 3000))),
    }
    for name, (suffix, array) in encoded.items():
        ok, buf = cv2.imencode(suffix, array)
        if ok:
            files[name] = buf.tobytes()
    files.update(_pil_images(good))
    for k in range(bitflips):
        flipped = bytearray(jpeg)
        for _ in range(rng.randint(1, 40)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        files[f"bitflip-{k:03d}.jpg"] = bytes(flipped)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return sorted(folder / name for name in files)


def _pil_images(bgr: np.ndarray) -> dict[str, bytes]:
    """CMYK, palette and 1-bit images, where Pillow is there to write them (the dev venv)."""
    try:
        from PIL import Image
    except ImportError:
        return {}
    import io

    rgb = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
    out: dict[str, bytes] = {}
    for name, mode, fmt in (
        ("cmyk.jpg", "CMYK", "JPEG"),
        ("palette.png", "P", "PNG"),
        ("one-bit.png", "1", "PNG"),
        ("cmyk.tif", "CMYK", "TIFF"),
    ):
        buf = io.BytesIO()
        rgb.convert(mode).save(buf, fmt)
        out[name] = buf.getvalue()
    return out


def image_fuzz_replay_run(work: Path, bundle: Path, files: list[Path]) -> Row:
    """Every odd file through the replay camera, and its record and photo over HTTP; a
    daemon that dies is counted and started again on the files after the culprit."""
    row = Row("image-fuzz-replay")
    left = sorted(files, key=lambda f: f.name)
    for attempt in range(len(files)):
        if not left:
            break
        replay = work / f"replay-{attempt}"
        replay.mkdir(parents=True)
        for f in left:
            shutil.copy2(f, replay / f.name)
        done = _replay_until_death(work / f"daemon-{attempt}", bundle, replay, row)
        left = left[done + 1 :] if done < len(left) else []
    return row


def _replay_until_death(work: Path, bundle: Path, replay: Path, row: Row) -> int:
    """Capture each file of `replay` in turn; the index of the file the daemon died on
    (or the number of files when it lived)."""
    work.mkdir(parents=True)
    names = sorted(p.name for p in replay.iterdir())
    died_at = len(names)
    with _web_daemon(work, bundle, replay) as daemon:
        session = Session(daemon.port)
        session.login(PASSWORD)
        socket_path = load_config(daemon.config).paths.control_socket
        assert daemon.proc is not None
        for i, name in enumerate(names):
            row.tried += 1
            reply: dict[str, Any] = {}
            for _ in range(50):  # a corrupt frame may fault the camera for a moment
                try:
                    reply = request(socket_path, {"cmd": "capture"}, 60)
                except (ControlError, OSError, ValueError) as exc:
                    reply = {"ok": False, "error": f"no reply: {exc}"}
                    break
                if reply.get("ok") or "not ready" not in str(reply.get("error")):
                    break
                time.sleep(0.2)
            if not reply.get("ok") and "no reply" in str(reply.get("error")):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    daemon.proc.wait(5)  # a daemon that hung up on us is dying
            if daemon.proc.poll() is not None or not reply.get("ok"):
                row.crashes += 1
                died = daemon.proc.poll() is not None
                row.note(f"{name}: {reply.get('error')}" + (" (the daemon died)" if died else ""))
                if died:
                    died_at = i
                    break
                continue
            result = reply["result"]
            paths = ["/api/status", "/api/preview.jpg", "/", f"/results/{result['id']}"]
            paths += [f"/api/results/{result['id']}", f"/api/results/{result['id']}/image"]
            for path in paths:
                status, _, _ = session.request("GET", path)
                if status == 503 and path in UNAVAILABLE_BY_DESIGN:
                    row.unavailable += 1
                elif status >= 500:
                    row.http_5xx += 1
                    row.note(f"{status} for GET {path} after {name}")
    log = _log_text(daemon.log)
    if TRACEBACK in log:
        last = log[log.rindex(TRACEBACK) :].strip().splitlines()[-1]
        row.note(f"traceback in the daemon's log: {last[-300:]}")
        if died_at == len(names):  # a death is counted once, above
            row.crashes += 1
    return died_at


def image_fuzz_classify_run(work: Path, bundle: Path, files: list[Path]) -> Row:
    """`leukoscope classify` over the odd files: an answer or an error line for each."""
    row = Row("image-fuzz-classify")
    folder = work / "classify"
    folder.mkdir(parents=True)
    for f in files:
        shutil.copy2(f, folder / f.name)

    def classify(*targets: Path) -> subprocess.CompletedProcess[str]:
        args = _leukoscope("classify", *map(str, targets), "--json", "--bundle", str(bundle))
        return subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=work)

    row.tried = len(files)
    left = [folder / f.name for f in files]
    while left:
        res = classify(*left)
        text = res.stdout + res.stderr
        named = [f for f in left if str(f) in text]
        if res.returncode in (0, 1) and TRACEBACK not in text:
            unnamed = [f.name for f in left if f not in named]
            row.crashes += len(unnamed)
            if unnamed:
                row.note(f"no line for: {', '.join(unnamed[:10])}")
            return row
        # It died: the first file it said nothing of is the culprit; go on after it.
        rest = [f for f in left if f not in named]
        culprit = rest[0].name if rest else "?"
        row.crashes += 1
        tail = " ".join((res.stderr or res.stdout).strip().splitlines()[-1:])
        row.note(f"classify died at {culprit} (status {res.returncode}): {tail[-300:]}")
        left = rest[1:]
    return row


# -- the campaign ---------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| run | tried | lost | corrupt | 5xx | crashes | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.run} | {r.tried} | {r.lost} | {r.corrupt} | {r.http_5xx} | {r.crashes} "
            f"| {r.seconds:.0f} |"
        )
    return "\n".join(lines)


def report(rows: list[Row], argv: list[str], bundle: Path, started: float) -> str:
    """The report: how it was run, the table, and the notes of each run."""
    out = [
        "# Fault campaign",
        "",
        f"`python -m tests.fault_campaign {' '.join(argv)}`".replace("  ", " "),
        "",
        f"Bundle: `{bundle}`. Started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{(time.time() - started) / 60:.0f} minutes; load average at the end "
        f"{os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[2]:.1f} (15 min).",
        "",
        table(rows),
        "",
    ]
    out += [
        "A crash is a daemon that died or did not start again, a command that did not end with",
        "a status of its own, or a Python traceback in any log; 5xx counts server errors (a 503",
        f"with its reason from {' or '.join(UNAVAILABLE_BY_DESIGN)} while the camera has no",
        "frame is their designed answer: listed below, not counted).",
        "",
    ]
    for r in rows:
        if r.unavailable:
            r.note(f"{r.unavailable} designed 503s ({', '.join(UNAVAILABLE_BY_DESIGN)})")
        if r.notes:
            out.append(f"## {r.run}\n")
            out += [f"- {n}" for n in r.notes]
            out.append("")
    return "\n".join(out)


def campaign(work: Path, bundle: Path, sizes: Sizes, seed: int) -> list[Row]:
    """Run every part in its own folder under `work`; the rows in order."""
    rng = random.Random(seed)
    images = odd_images(work / "odd-images", rng, sizes.bitflips)
    replayed = sorted(rng.sample(images, min(sizes.replay_files, len(images))))
    parts: list[tuple[str, Callable[[Path], Row]]] = [
        (
            "kill-daemon",
            lambda w: kill_daemon_run(w, bundle, sizes.daemon_kills, sizes.kill_window_s, rng),
        ),
        ("kill-install", lambda w: kill_install_run(w, bundle, sizes.install_kills, rng)),
        ("http-fuzz", lambda w: http_fuzz_run(w, bundle, sizes.http_requests, rng)),
        ("image-replay", lambda w: image_fuzz_replay_run(w, bundle, replayed)),
        ("image-classify", lambda w: image_fuzz_classify_run(w, bundle, images)),
    ]
    rows = []
    for name, part in parts:
        w = work / name
        w.mkdir()
        started = time.monotonic()
        row = part(w)
        row.seconds = time.monotonic() - started
        print(
            f"{row.run}: tried {row.tried}, lost {row.lost}, corrupt {row.corrupt}, "
            f"5xx {row.http_5xx}, crashes {row.crashes} ({row.seconds:.0f} s)",
            flush=True,
        )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the campaign, print the table, write the report; 1 if anything failed."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m tests.fault_campaign", description=__doc__)
    p.add_argument("--short", action="store_true", help="a few of each (under a minute)")
    p.add_argument("--bundle", type=Path, default=REPO / "models" / "default")
    p.add_argument("--report", type=Path, default=REPO / "build" / "fault-campaign.md")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (logs)")
    args = p.parse_args(argv)
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="fault-campaign-"))
    try:
        rows = campaign(work, args.bundle.resolve(), Sizes.of(args.short), args.seed)
    finally:
        if args.keep:
            print(f"scratch folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = report(rows, argv, args.bundle, started)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    print(table(rows))
    print(f"report: {args.report}")
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
