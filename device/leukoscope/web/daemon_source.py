"""The StatusSource of the running daemon: its state, its records, its camera owner's preview.

Records are read through the source's own `RecordReader` (a read-only SQLite connection
per web thread; WAL lets them read while the daemon writes), so a busy page never waits
on the daemon's store lock. Samples are read the same way (`SampleReader` over that
reader); starting, closing and reviewing go through the daemon, their one writer. Captures
go through `Daemon.request_capture("web", ...)`, the same path as the button. The live
view's frames come from one refresher thread that asks the camera owner for a frame every
`PREVIEW_INTERVAL_S` while someone watches, however many browsers do, and never while a
capture runs.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2

from leukoscope.analysis.quality import RetakeReason, measure
from leukoscope.appliance.daemon import Daemon, NotReadyError
from leukoscope.appliance.records import Record, RecordFilter, RecordPage, RecordReader
from leukoscope.appliance.samples import CellReview, Sample, SampleCell, SampleError, SampleReader
from leukoscope.config import CameraConfig
from leukoscope.core.errors import BundleError, CameraError, ConfigError, StoreError
from leukoscope.model.manifest import MANIFEST, read_manifest
from leukoscope.web import system
from leukoscope.web.source import (
    CaptureLog,
    CaptureRefusedError,
    Preview,
    SamplePage,
    SampleRefusedError,
)

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


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The daemon's refusals of a sample action as SampleRefusedError with an HTTP status.

    The web checks the id, the sample, the cell and the label first, so what the daemon
    still refuses is a conflict with its state (an id in use, a whole-field bundle).
    """
    try:
        yield
    except SampleError as exc:
        raise SampleRefusedError(str(exc), 409) from None
    except (ConfigError, StoreError) as exc:
        raise SampleRefusedError(f"the appliance cannot do that now: {exc}", 503) from None


class DaemonSource:
    """Adapts a running `Daemon` to the StatusSource protocol (thread-safe)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.cfg = daemon.cfg
        self.images_dir = Path(daemon.store.images_dir).resolve()
        #: The web threads' own reader, closed with the source.
        self.records = RecordReader(daemon.store.database, daemon.store.images_dir)
        self.samples = SampleReader(self.records)
        self._preview: Preview | None = None
        self._preview_error: str | None = None
        self._preview_wanted = 0.0
        self._first_preview = threading.Event()
        self._refresher: threading.Thread | None = None
        self._closing = threading.Event()
        self._wake = threading.Event()
        #: Captures started from the page, to follow each to its record.
        self.captures = CaptureLog()

    def start(self) -> None:
        """Start the live view's refresher (call from the daemon's thread: threads inherit
        their creator's priority, and the web server's threads run lower)."""
        if self._refresher is None:
            self._refresher = threading.Thread(
                target=self._refresh_previews, name="web-preview", daemon=True
            )
            self._refresher.start()

    # --- records ---------------------------------------------------------------------------

    def list_results(self, limit: int, before: int | None, flt: RecordFilter) -> RecordPage:
        """See StatusSource."""
        return self.records.page(limit, before, flt)

    def export(self, flt: RecordFilter) -> Iterator[Record]:
        """See StatusSource."""
        return self.records.export(flt)

    def get_result(self, record_id: int) -> Record | None:
        """See StatusSource."""
        return self.records.get(record_id)

    def image_file(self, record: Record) -> Path | None:
        """See StatusSource; never a path outside the images folder."""
        return self.records.image_file(record)

    # --- samples -------------------------------------------------------------------------------

    def list_samples(self, limit: int, before: float | None) -> SamplePage:
        """See StatusSource; the cursor is the last sample's start time (ms, as stored)."""
        rows = self.samples.page(limit + 1, before)
        items = rows[:limit]
        more = len(rows) > limit and bool(items)
        return SamplePage(
            items, datetime.fromisoformat(items[-1].started_at).timestamp() if more else None
        )

    def get_sample(self, sample_id: str) -> Sample | None:
        """See StatusSource."""
        return self.samples.get(sample_id)

    def sample_cells(self, sample: Sample) -> list[SampleCell]:
        """See StatusSource."""
        return self.samples.cells(sample)

    def reviewed_cells(self) -> Iterator[tuple[Sample, SampleCell, Path | None]]:
        """See StatusSource."""
        return self.samples.reviewed()

    def active_sample(self) -> str | None:
        """See StatusSource: the daemon's active sample."""
        return self.daemon.active_sample

    def start_sample(self, sample_id: str) -> Sample:
        """See StatusSource: the daemon starts it under the loaded bundle's rule."""
        with _refusals():
            return self.daemon.start_sample(sample_id)

    def close_sample(self, sample_id: str) -> Sample:
        """See StatusSource."""
        with _refusals():
            return self.daemon.close_sample(sample_id)

    def review_cell(
        self, sample_id: str, record_id: int, cell_index: int, label: str, reviewer: str
    ) -> CellReview:
        """See StatusSource."""
        with _refusals():
            return self.daemon.review_cell(sample_id, record_id, cell_index, label, reviewer)

    # --- state and actions -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """See StatusSource."""
        return self.daemon.state.snapshot()

    def confirm_clock(self, browser_unix: float) -> dict[str, Any]:
        """See StatusSource."""
        return self.daemon.confirm_clock(browser_unix)

    def request_capture(self, sample_id: str | None) -> dict[str, Any]:
        """See StatusSource: the button's path, with trigger "web"."""
        seq = self.daemon.state.snapshot()["result_seq"]
        try:
            ticket = self.daemon.request_capture("web", sample_id)
        except NotReadyError as exc:
            raise CaptureRefusedError(str(exc), 503) from None
        except SampleError as exc:  # decided, closed, or another model's sample
            raise CaptureRefusedError(str(exc), 409) from None
        except ValueError as exc:
            raise CaptureRefusedError(str(exc), 400) from None
        except StoreError as exc:
            raise CaptureRefusedError(f"cannot store the sample: {exc}", 503) from None
        if ticket is None:
            raise CaptureRefusedError("busy: a capture is already running", 409)
        capture_id = self.captures.add(lambda: ticket.result if ticket.done.is_set() else None)
        return {"result_seq": seq, "capture_id": capture_id}

    def capture_result(self, capture_id: int) -> dict[str, Any] | None:
        """See StatusSource."""
        return self.captures.get(capture_id)

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
            # Good enough: focused and exposed (a black frame is not "in focus"), judged on
            # the frame's noise-corrected focus (a noisy frame's grain is not focus).
            bad = {RetakeReason.TOO_DARK, RetakeReason.TOO_BRIGHT, RetakeReason.OUT_OF_FOCUS}
            metrics = replace(measure(frame.rgb), focus=frame.focus)
            good = not bad & set(self.cfg.quality.check(metrics))
            self._preview = Preview(buf.tobytes(), frame.focus, good, False, frame.taken_at)
            self._preview_error = None
        self._first_preview.set()

    # --- health, models, metrics ---------------------------------------------------------------

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
            "records": self.records.count(),
            "versions": system.versions(),
            "calibration": calibration(self.cfg.camera),
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
            "sample": raw.get("sample"),
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
        captures = self.records.counts_by_outcome()
        timings = self.records.recent_timings(STAGE_WINDOW)
        stages: dict[str, list[float]] = {}
        for stage_ms in timings:
            for stage, ms in stage_ms.items():
                with contextlib.suppress(ValueError, TypeError):
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
            "stage_window": len(timings),
            "stage_seconds": summary,
            "disk_free_bytes": free,
            "model": snap["model"],
            "reloads": snap["reloads"],
            "uptime_s": snap["uptime_s"],
        }

    def close(self) -> None:
        """Stop the preview refresher and close the reader (idempotent)."""
        self._closing.set()
        self._wake.set()
        if self._refresher is not None:
            self._refresher.join(5.0)
        self.records.close()


def calibration(camera: CameraConfig) -> dict[str, Any]:
    """The rig's calibration as the health page shows it: the scale (None: measured from
    each photo's red cells), its spread and tolerance, and the blank-field reference."""
    blank = camera.blank_field
    return {
        "px_per_um": camera.px_per_um,
        "px_per_um_spread": camera.px_per_um_spread,
        "scale_tolerance": camera.scale_tolerance,
        "blank_field": None if blank is None else str(blank),
        "blank_field_present": blank is not None and Path(blank).is_file(),
    }
