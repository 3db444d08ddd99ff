"""The StatusSource of the running daemon: its state, its records, its camera owner's preview.

Records are read through this module's own read-only SQLite connections (one per web
thread; WAL lets them read while the daemon writes), so a busy page never waits on the
daemon's store lock. Captures go through `Daemon.request_capture("web", ...)`, the same
path as the button. The live view's frames come from one refresher thread that asks the
camera owner for a frame every `PREVIEW_INTERVAL_S` while someone watches, however many
browsers do, and never while a capture runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2

from leukoscope.appliance.records import JSON_COLUMNS
from leukoscope.core.errors import BundleError, CameraError
from leukoscope.model.bundle import MANIFEST, read_manifest
from leukoscope.web import system
from leukoscope.web.source import CaptureRefusedError, Preview, ResultFilter, ResultPage

if TYPE_CHECKING:
    from leukoscope.appliance.daemon import Daemon

logger = logging.getLogger(__name__)

PREVIEW_INTERVAL_S = 1.0
#: The refresher stops taking frames when no browser asked for one for this long.
PREVIEW_IDLE_S = 5.0
#: How long the first request waits for the first frame.
PREVIEW_FIRST_WAIT_S = 2.0
PREVIEW_JPEG_QUALITY = 75
#: How many recent records the stage timings in /metrics summarise.
STAGE_WINDOW = 100
#: The longest model card the model page shows.
MAX_CARD_BYTES = 64 * 1024


def _day_start(day: Any) -> float:
    return datetime.combine(day, dtime.min, UTC).timestamp()


def decode_row(row: sqlite3.Row) -> dict[str, Any]:
    """A record row as plain data (JSON columns decoded)."""
    out = dict(row)
    for key in JSON_COLUMNS:
        if out.get(key) is not None:
            try:
                out[key] = json.loads(out[key])
            except ValueError:
                out[key] = None
    out["image_deleted"] = bool(out.get("image_deleted"))
    return out


class DaemonSource:
    """Adapts a running `Daemon` to the StatusSource protocol (thread-safe)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.cfg = daemon.cfg
        self.database = Path(daemon.store.database)
        self.images_dir = Path(daemon.store.images_dir).resolve()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._preview: Preview | None = None
        self._preview_error: str | None = None
        self._preview_wanted = 0.0
        self._first_preview = threading.Event()
        self._refresher: threading.Thread | None = None
        self._closing = threading.Event()
        self._wake = threading.Event()

    def start(self) -> None:
        """Start the live view's refresher (call from the daemon's thread: threads inherit
        their creator's priority, and the web server's threads run lower)."""
        if self._refresher is None:
            self._refresher = threading.Thread(
                target=self._refresh_previews, name="web-preview", daemon=True
            )
            self._refresher.start()

    # --- records ---------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.database, timeout=5.0, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def list_results(self, limit: int, before: int | None, flt: ResultFilter) -> ResultPage:
        """See StatusSource."""
        where: list[str] = ["id < ?"]
        args: list[Any] = [before if before is not None else 2**63 - 1]
        if flt.outcome:
            where.append("outcome = ?")
            args.append(flt.outcome)
        if flt.date_from:
            where.append("created_unix >= ?")
            args.append(_day_start(flt.date_from))
        if flt.date_to:
            where.append("created_unix < ?")
            args.append(_day_start(flt.date_to + timedelta(days=1)))
        rows = (
            self._db()
            .execute(
                f"SELECT * FROM results WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                (*args, limit + 1),
            )
            .fetchall()
        )
        items = [decode_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return ResultPage(items, items[-1]["id"] if more and items else None)

    def get_result(self, record_id: int) -> dict[str, Any] | None:
        """See StatusSource."""
        row = self._db().execute("SELECT * FROM results WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else decode_row(row)

    def image_path(self, record_id: int) -> Path | None:
        """See StatusSource; never a path outside the images folder."""
        rec = self.get_result(record_id)
        if rec is None or not rec.get("image_path") or rec.get("image_deleted"):
            return None
        path = (self.images_dir / rec["image_path"]).resolve()
        if not path.is_relative_to(self.images_dir):
            logger.warning("record %d names an image outside the images folder", record_id)
            return None
        return path

    # --- state and actions -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """See StatusSource."""
        return self.daemon.state.snapshot()

    def request_capture(self, sample_id: str | None) -> dict[str, Any]:
        """See StatusSource: the button's path, with trigger "web"."""
        from leukoscope.appliance.daemon import NotReadyError

        seq = self.daemon.state.snapshot()["result_seq"]
        try:
            ticket = self.daemon.request_capture("web", sample_id)
        except NotReadyError as exc:
            raise CaptureRefusedError(str(exc), 503) from None
        except ValueError as exc:
            raise CaptureRefusedError(str(exc), 400) from None
        if ticket is None:
            raise CaptureRefusedError("busy: a capture is already running", 409)
        return {"result_seq": seq}

    def preview(self) -> Preview:
        """See StatusSource: the refresher's latest frame (marked paused during a capture)."""
        self._preview_wanted = time.monotonic()
        if self._refresher is None:
            raise CaptureRefusedError("no live view: the preview refresher is not running", 503)
        if self._preview is None:
            self._wake.set()
            self._first_preview.wait(PREVIEW_FIRST_WAIT_S)
        last, error = self._preview, self._preview_error
        if last is None:
            raise CaptureRefusedError(f"no live view: {error or 'no frame yet'}", 503)
        busy = self.daemon.state.phase == "busy"
        return Preview(last.jpeg, last.focus, last.good_enough, busy, last.taken_at)

    def _refresh_previews(self) -> None:
        """Take a frame every PREVIEW_INTERVAL_S while someone watches and no capture runs.

        This thread keeps the daemon's priority: it holds the camera while it takes a
        frame, and a capture must never wait on a low-priority holder.
        """
        while not self._closing.is_set():
            idle = time.monotonic() - self._preview_wanted > PREVIEW_IDLE_S
            if not idle and self.daemon.state.phase != "busy":
                self._take_preview()
            self._wake.wait(PREVIEW_INTERVAL_S)
            self._wake.clear()

    def _take_preview(self) -> None:
        try:
            frame = self.daemon.camera.preview_frame()
        except CameraError as exc:
            self._preview, self._preview_error = None, str(exc)
            self._first_preview.set()
            return
        if frame.paused:  # a capture started meanwhile: its last frame is stale
            return
        bgr = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_JPEG_QUALITY])
        if ok:
            good = frame.focus >= self.cfg.quality.min_focus
            self._preview = Preview(buf.tobytes(), frame.focus, good, False, frame.taken_at)
            self._preview_error = None
        self._first_preview.set()

    # --- health, models, metrics ---------------------------------------------------------------

    def _count(self) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def health(self) -> dict[str, Any]:
        """See StatusSource."""
        snap = self.status()
        camera = self.daemon.camera
        free, total = system.disk(self.images_dir)
        return {
            "ready": snap["ready"],
            "phase": snap["phase"],
            "faults": snap["faults"],
            "camera": {
                "name": camera.name,
                "ok": camera.is_open and "camera" not in snap["faults"],
                "error": camera.last_error or snap["faults"].get("camera"),
            },
            "model": snap["model"],
            "model_error": snap["model_error"],
            "disk_free_bytes": free,
            "disk_total_bytes": total,
            "cpu_temp_c": system.cpu_temperature_c(),
            "uptime_s": snap["uptime_s"],
            "system_uptime_s": system.system_uptime_s(),
            "records": self._count(),
            "versions": system.versions(),
        }

    def _describe_bundle(self, role: str, root: Path) -> dict[str, Any]:
        try:
            m = read_manifest(root)
        except BundleError as exc:
            return {
                "role": role,
                "name": "?",
                "version": "?",
                "sha256": "?",
                "path": str(root),
                "error": str(exc),
            }
        card = None
        card_path = root / "MODEL_CARD.md"
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if card_path.stat().st_size <= MAX_CARD_BYTES:
                card = card_path.read_text(encoding="utf-8")
        raw = m.raw
        return {
            "role": role,
            "name": m.name,
            "version": m.version,
            "sha256": m.model_sha256,
            "architecture": m.architecture,
            "created": raw.get("created"),
            "description": raw.get("description"),
            "labels": list(m.labels),
            "thresholds": [m.thresholds.low, m.thresholds.high],
            "input": list(m.input_size),
            "metrics": raw.get("metrics") or {},
            "training": raw.get("training") or {},
            "card": card,
            "path": str(root.resolve()),
        }

    def models(self) -> list[dict[str, Any]]:
        """See StatusSource: the loaded bundle, and the model store's `previous` link."""
        current_root = Path(self.daemon.bundle.root)
        out = [self._describe_bundle("current", current_root)]
        previous = Path(self.cfg.paths.bundle).parent / "previous"
        if (previous / MANIFEST).is_file() and previous.resolve() != current_root.resolve():
            out.append(self._describe_bundle("previous", previous))
        return out

    def metrics(self) -> dict[str, Any]:
        """See StatusSource."""
        snap = self.status()
        db = self._db()
        captures = {
            r[0]: int(r[1])
            for r in db.execute("SELECT outcome, COUNT(*) FROM results GROUP BY outcome")
        }
        stages: dict[str, list[float]] = {}
        rows = db.execute(
            "SELECT timings_ms FROM results ORDER BY id DESC LIMIT ?", (STAGE_WINDOW,)
        ).fetchall()
        for (text,) in rows:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                for stage, ms in json.loads(text).items():
                    stages.setdefault(stage, []).append(float(ms) / 1000.0)
        summary = {}
        for stage, values in stages.items():
            values.sort()
            summary[stage] = {
                "0.5": statistics.median(values),
                "0.95": values[min(len(values) - 1, int(0.95 * len(values)))],
                "sum": sum(values),
                "count": len(values),
            }
        free, _ = system.disk(self.images_dir)
        return {
            "ready": snap["ready"],
            "captures": captures,
            "faults": snap["faults"],
            "stage_window": len(rows),
            "stage_seconds": summary,
            "disk_free_bytes": free,
            "model": snap["model"],
            "reloads": snap["reloads"],
            "uptime_s": snap["uptime_s"],
        }

    def close(self) -> None:
        """Stop the preview refresher and close every reader connection (idempotent)."""
        self._closing.set()
        self._wake.set()
        if self._refresher is not None:
            self._refresher.join(5.0)
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
