"""The appliance daemon: trigger -> still -> quality gate -> model -> indicator -> record.

`leukoscope.app.run(config)` builds the parts and hands them to a `Daemon`. The work loop
runs on the main thread and is the only thing that captures, classifies and writes; triggers
(button, control socket, the status page) all go through `Daemon.request_capture()`, and a
trigger while a capture is running is ignored, not queued. The answer is shown before its
record is written (the fsyncs never delay it); if the write then fails, the indicator turns
to the storage fault and the capture's reply says the result was not saved.
"""

from __future__ import annotations

import logging
import queue
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import cv2

from leukoscope.appliance.indicator import Indicator, IndicatorState
from leukoscope.appliance.records import NewRecord, Store, free_bytes
from leukoscope.appliance.sdnotify import Notifier
from leukoscope.appliance.state import DaemonState
from leukoscope.capture.base import Still, decode_still
from leukoscope.capture.owner import CameraOwner
from leukoscope.config import Config
from leukoscope.core.errors import (
    CameraError,
    ImageError,
    LeukoscopeError,
    StoreError,
)
from leukoscope.model.bundle import Bundle, load_bundle
from leukoscope.pipeline import analyse, decode_size

logger = logging.getLogger(__name__)

#: The longest the work loop sleeps between checks (signals, timers, the watchdog).
TICK_S = 0.2
#: How long a control-socket client waits for its capture to finish.
CAPTURE_WAIT_S = 120.0
_SAMPLE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,63}$")
#: Fault parts in the order their pattern wins on the indicator.
_FAULT_PATTERNS = {
    "storage": IndicatorState.FAULT_STORAGE,
    "camera": IndicatorState.FAULT_CAMERA,
    "model": IndicatorState.FAULT_MODEL,
}


class NotReadyError(LeukoscopeError, RuntimeError):
    """A capture was asked for while the appliance has a fault."""


@dataclass
class CaptureTicket:
    """One accepted capture request; `done` is set when its result is known."""

    trigger: str
    sample_id: str | None
    requested: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None


def check_sample_id(sample_id: str | None) -> str | None:
    """A sample id as typed by a technician: 1-64 printable ASCII characters, or None."""
    if sample_id is None or sample_id == "":
        return None
    if not isinstance(sample_id, str) or not _SAMPLE_ID_RE.fullmatch(sample_id):
        raise ValueError("sample id must be 1-64 characters: letters, digits, space and . _ : / -")
    return sample_id


class Daemon:
    """The parts wired together, and the work loop that drives them."""

    def __init__(
        self,
        cfg: Config,
        *,
        notifier: Notifier,
        indicator: Indicator,
        store: Store,
        bundle: Bundle,
        camera: CameraOwner,
        pin_factory: Any,
        state: DaemonState | None = None,
    ) -> None:
        self.cfg = cfg
        self.notifier = notifier
        self.indicator = indicator
        self.store = store
        self.bundle = bundle
        self.camera = camera
        self.pin_factory = pin_factory
        self.state = state or DaemonState()
        self._queue: queue.Queue[CaptureTicket] = queue.Queue()
        self._busy = False
        self._busy_lock = threading.Lock()
        self._stop = False
        self._reload = False
        self._announced_ready = False
        self._result_state: IndicatorState | None = None
        self._result_until = 0.0
        self._next_camera_check = 0.0
        self._next_retention = 0.0
        self._next_watchdog = 0.0
        self.state.update(camera=camera.name, model=self._model_info(bundle))

    # --- triggers (any thread) -------------------------------------------------------------

    def request_capture(self, trigger: str, sample_id: str | None = None) -> CaptureTicket | None:
        """Ask for a capture; None if one is already running (the request is dropped).

        Raises:
            ValueError: a malformed sample id.
            NotReadyError: the appliance has a fault (camera, storage) or is stopping.
        """
        sample_id = check_sample_id(sample_id)
        with self._busy_lock:
            if self._busy:
                logger.info("capture request from %s ignored: busy", trigger)
                return None
            faults = self.state.snapshot()["faults"]
            if self._stop or faults:
                reason = (
                    "stopping" if self._stop else "; ".join(f"{k}: {v}" for k, v in faults.items())
                )
                raise NotReadyError(f"not ready ({reason})")
            self._busy = True
        ticket = CaptureTicket(trigger, sample_id)
        self._queue.put(ticket)
        return ticket

    def on_button(self) -> None:
        """The button's callback (gpiozero's thread)."""
        try:
            self.request_capture("button")
        except NotReadyError as exc:
            logger.warning("button pressed but %s", exc)

    def press_mock_button(self) -> None:
        """Drive the mock button pin low then high (tests and the laptop demo only)."""
        pin = self.pin_factory.pin(self.cfg.gpio.button)
        pin.drive_low()
        pin.drive_high()

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a control-socket request (see leukoscope.appliance.control)."""
        cmd = request.get("cmd")
        if cmd == "status":
            return {"ok": True, "state": self.state.snapshot()}
        if cmd == "capture":
            try:
                ticket = self.request_capture("control", request.get("sample_id"))
            except (ValueError, NotReadyError) as exc:
                return {"ok": False, "error": str(exc)}
            if ticket is None:
                return {"ok": False, "error": "busy: a capture is already running"}
            if not ticket.done.wait(CAPTURE_WAIT_S):
                return {"ok": False, "error": "the capture did not finish in time"}
            return {"ok": True, "result": ticket.result}
        if cmd == "press-button":
            if self.cfg.gpio.pin_factory != "mock":
                return {"ok": False, "error": "press-button needs gpio.pin_factory = 'mock'"}
            wait = request.get("wait_s", 0)
            if isinstance(wait, bool) or not isinstance(wait, int | float) or wait != wait:
                # checked before the press: a refused request must not take a photo
                return {"ok": False, "error": "wait_s must be a number of seconds"}
            seq = self.state.snapshot()["result_seq"]
            self.press_mock_button()
            if wait > 0:
                self.state.wait_for_result(seq, min(wait, CAPTURE_WAIT_S))
            return {"ok": True, "state": self.state.snapshot()}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    # --- signals (main thread; handlers only set flags) --------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop; SIGHUP reloads the model bundle."""
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload = True

    def stop(self) -> None:
        """Ask the work loop to finish (thread-safe)."""
        self._stop = True

    # --- the work loop (main thread) ---------------------------------------------------------

    def serve(self) -> None:
        """Run until stopped: captures, reloads, camera recovery, retention, watchdog."""
        self._housekeeping(force=True)
        while not self._stop:
            try:
                ticket: CaptureTicket | None = self._queue.get(timeout=TICK_S)
            except queue.Empty:
                ticket = None
            if self._reload:
                self._reload = False
                self.reload_bundle()
            if ticket is not None:
                self._capture(ticket)
            self._housekeeping()
            self._watchdog()
        self.notifier.stopping()
        self.state.update(phase="stopping")
        logger.info("stopping")
        self._drain("stopping")

    def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        now = time.monotonic()
        if interval is not None and now >= self._next_watchdog:
            self.notifier.watchdog()
            self._next_watchdog = now + min(interval, 5.0)

    def _drain(self, why: str) -> None:
        while True:
            try:
                ticket = self._queue.get_nowait()
            except queue.Empty:
                return
            self._finish(ticket, {"ok": False, "error": why})

    def _finish(self, ticket: CaptureTicket, result: dict[str, Any]) -> None:
        ticket.result = result
        with self._busy_lock:
            self._busy = False
        ticket.done.set()

    def _model_info(self, bundle: Bundle) -> dict[str, Any]:
        m = bundle.manifest
        return {
            "name": m.name,
            "version": m.version,
            "sha256": m.model_sha256,
            "path": str(bundle.root),
            "thresholds": [m.thresholds.low, m.thresholds.high],
        }

    def reload_bundle(self) -> bool:
        """Load the configured bundle again; keep the running one if the new one fails."""
        self.notifier.reloading()
        path = self.cfg.paths.bundle
        try:
            new = load_bundle(path, num_threads=self.cfg.model.threads)
        except LeukoscopeError as exc:
            logger.error(
                "model reload from %s failed, keeping %s: %s", path, self.bundle.label, exc
            )
            self.state.update(model_error=f"reload failed: {exc}")
            ok = False
        else:
            old, self.bundle = self.bundle, new
            logger.info("model reloaded: %s -> %s", old.label, new.label)
            self.state.update(
                model=self._model_info(new), model_error=None, reloads=self.state.reloads + 1
            )
            ok = True
        self.notifier.ready(self._status_line())
        return ok

    def _status_line(self) -> str:
        snap = self.state.snapshot()
        if snap["faults"]:
            return "fault: " + "; ".join(f"{k}: {v}" for k, v in snap["faults"].items())
        return f"ready, model {self.bundle.label}, {sum(snap['counts'].values())} analyses"

    # --- health ----------------------------------------------------------------------------

    def _fault(self, part: str, message: str | None) -> None:
        if self.state.set_fault(part, message):
            if message is None:
                logger.info("%s recovered", part)
            else:
                logger.error("%s fault: %s", part, message)
            self.notifier.status(self._status_line())

    def _housekeeping(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now >= self._next_camera_check:
            self._next_camera_check = now + self.cfg.camera.retry_interval_s
            self._check_camera()
            self._check_storage()
        if force or now >= self._next_retention:
            self._next_retention = now + self.cfg.retention.check_interval_s
            self._retention()
        faults = self.state.snapshot()["faults"]
        if not faults and not self._announced_ready:
            self._announced_ready = True
            logger.info("ready: camera %s, model %s", self.camera.name, self.bundle.label)
            self.notifier.ready(self._status_line())
        self._refresh_indicator(faults)

    def _check_camera(self) -> None:
        try:
            if self.camera.is_open:
                self.camera.check()
            else:
                self.camera.open()
        except CameraError as exc:
            self._fault("camera", str(exc))
        else:
            self._fault("camera", None)

    def _min_free(self) -> int:
        return int(self.cfg.retention.min_free_mb * 1024 * 1024)

    def _check_storage(self) -> None:
        try:
            free = free_bytes(self.store.images_dir)
        except OSError as exc:
            self._fault("storage", f"cannot check free space: {exc}")
            return
        if free < self._min_free():
            self._retention()
            free = free_bytes(self.store.images_dir)
        need = max(self._min_free(), 2 * self.store.last_failed_bytes)
        if free < need:
            self._fault("storage", f"disk full ({free // 1024} KiB free, need {need // 1024})")
        else:
            self.store.last_failed_bytes = 0
            self._fault("storage", None)

    def _retention(self) -> None:
        try:
            self.store.enforce_retention(self.cfg.retention.max_age_days, self._min_free())
        except StoreError as exc:
            self._fault("storage", str(exc))

    def _refresh_indicator(self, faults: dict[str, str]) -> None:
        if faults:
            part = next((p for p in _FAULT_PATTERNS if p in faults), "camera")
            want = _FAULT_PATTERNS[part]
            phase = "fault"
        elif self._busy:
            want, phase = IndicatorState.BUSY, "busy"
        elif self._result_state is not None and time.monotonic() < self._result_until:
            want, phase = self._result_state, "ready"
        else:
            self._result_state = None
            want, phase = IndicatorState.READY, "ready"
        self._show(want)
        self.state.update(phase=phase)

    def _show(self, state: IndicatorState) -> None:
        self.indicator.show(state)
        self.state.update(indicator=state.value, leds=self.indicator.levels())

    # --- one capture ---------------------------------------------------------------------

    def _capture(self, ticket: CaptureTicket) -> None:
        """Take, judge and record one still; every outcome (even a fault) is recorded."""
        timings: dict[str, float] = {}
        rec = NewRecord(trigger=ticket.trigger, outcome="fault", sample_id=ticket.sample_id)
        self._show(IndicatorState.BUSY)
        self.state.update(phase="busy")
        still: Still | None = None
        shown = IndicatorState.FAULT_CAMERA
        try:
            t0 = time.perf_counter()
            still = self.camera.capture()
            timings["capture"] = _ms(t0)
            timings["exposure"] = round(still.exposure_s * 1000.0, 2)
            t0 = time.perf_counter()
            rgb = decode_still(still, decode_size(self.bundle))
            timings["decode"] = _ms(t0)
            analysis = analyse(
                rgb,
                self.bundle,
                self.cfg.quality,
                gate=self.cfg.quality_enabled,
                # cells mode decodes stills at full size, the size the scale is calibrated at
                px_per_um=self.cfg.camera.px_per_um,
            )
        except CameraError as exc:
            rec.error = f"camera: {exc}"
            self._fault("camera", str(exc))
        except ImageError as exc:
            rec.error = f"bad frame from the camera: {exc}"
            logger.error("capture %s: %s", ticket.trigger, rec.error)
        else:
            timings.update(analysis.timings_ms)
            rec.outcome = analysis.verdict.value
            rec.p_leukemia = analysis.p_leukemia
            rec.probabilities = analysis.probabilities
            rec.retake_reasons = analysis.retake_reasons
            rec.quality = None if analysis.quality is None else analysis.quality.metrics.to_json()
            rec.cells = None if analysis.cells is None else analysis.cells.to_json()
            shown = IndicatorState.for_verdict(analysis.verdict)
        m = self.bundle.manifest
        rec.model_name, rec.model_version, rec.model_sha256 = m.name, m.version, m.model_sha256
        t0 = time.perf_counter()
        self._result_state = shown
        self._result_until = time.monotonic() + self.cfg.indicator.result_hold_s
        with self._busy_lock:
            self._busy = False  # new presses are welcome once the answer is shown
        self._show(shown)
        timings["indicate"] = _ms(t0)
        timings["trigger_to_indicator"] = round((time.perf_counter() - ticket.requested) * 1000, 2)
        rec.timings_ms = timings
        result = self._save(rec, still)
        self.state.add_result(result)
        self.notifier.status(self._status_line())
        logger.info(
            "capture %s -> %s%s (p_leukemia %s, %.0f ms to indicator)",
            ticket.trigger,
            rec.outcome,
            f" {rec.retake_reasons}" if rec.retake_reasons else "",
            "n/a" if rec.p_leukemia is None else f"{rec.p_leukemia:.3f}",
            timings["trigger_to_indicator"],
        )
        ticket.result = result
        ticket.done.set()

    def _save(self, rec: NewRecord, still: Still | None) -> dict[str, Any]:
        """Write the image and record; a store failure is a storage fault, not a crash."""
        t0 = time.perf_counter()
        data, suffix = _file_bytes(still)
        rec.timings_ms["encode"] = _ms(t0)
        try:
            record_id = self.store.add(rec, data, suffix)
        except StoreError as exc:
            self._fault("storage", str(exc))
            return {
                "id": None,
                "outcome": rec.outcome,
                "saved": False,
                "error": str(exc),
                "retake_reasons": rec.retake_reasons,
                "p_leukemia": rec.p_leukemia,
            }
        if free_bytes(self.store.images_dir) < self._min_free():
            self._retention()
        record = self.store.reader.get(record_id)
        saved = {} if record is None else record.to_json()
        saved["saved"] = True
        saved["store_ms"] = _ms(t0)
        return saved


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


def _file_bytes(still: Still | None) -> tuple[bytes | None, str]:
    """The still as a file: the camera's own bytes, or a JPEG of its pixels."""
    if still is None:
        return None, ".jpg"
    if still.data is not None:
        return still.data, still.suffix
    if still.rgb is None:
        return None, ".jpg"
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(still.rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
    )
    return (buf.tobytes() if ok else None), ".jpg"
