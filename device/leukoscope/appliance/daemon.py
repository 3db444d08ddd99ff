"""The appliance daemon: trigger -> still -> quality gate -> model -> indicator -> record.

`leukoscope.app.run(config)` builds the parts and hands them to a `Daemon`. The work loop
runs on the main thread and is the only thing that captures, classifies and writes; triggers
(button, control socket, the status page) all go through `Daemon.request_capture()`, and a
trigger while a capture is running is ignored, not queued. The answer is shown before its
record is written (the fsyncs never delay it); if the write then fails, the indicator turns
to the storage fault and the capture's reply says the result was not saved.

Samples (one patient's smear, `appliance.samples`): a capture that names a sample id
adds the photo to that sample as a field, starting the sample if the id is new (the
page and `leukoscope capture --sample-id` name it); a decided or closed sample, or one
started with another model, is refused before any photo is taken. The button adds to
`active_sample` (the last sample started, while it is open); a long press starts a new
one with a generated id. A field's answer (counted, a repeat, the sample decided) is
decided in the transaction that writes it, so in a sample the indicator changes after
the write, not before. Samples are counted with a cells bundle only: with a whole-field
bundle a sample id is kept on the record as a label, as before samples existed.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import Any

import cv2
import numpy as np

from leukoscope.analysis.analysers import CellAnalyser
from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.overlap import fingerprint
from leukoscope.appliance.indicator import Indicator, IndicatorState
from leukoscope.appliance.records import NewRecord, Store, free_bytes
from leukoscope.appliance.samples import (
    SAMPLE_ID_RE,
    CellReview,
    FieldResult,
    FieldStatus,
    Sample,
    SampleError,
    SampleReader,
    Samples,
    SampleState,
)
from leukoscope.appliance.samples import check_sample_id as check_sample
from leukoscope.appliance.sdnotify import Notifier
from leukoscope.appliance.state import DaemonState
from leukoscope.capture.base import Still, decode_still
from leukoscope.capture.owner import CameraOwner
from leukoscope.config import Config
from leukoscope.core.clock import ClockStatus, TimeSetMark, clock_status
from leukoscope.core.errors import (
    CameraError,
    ImageError,
    LeukoscopeError,
    StoreError,
)
from leukoscope.model.bundle import Bundle, load_bundle
from leukoscope.model.manifest import SampleSpec, sample_spec
from leukoscope.pipeline import analyse, decode_reduction, decode_size, load_rig

logger = logging.getLogger(__name__)

#: The longest the work loop sleeps between checks (signals, timers, the watchdog).
TICK_S = 0.2
#: How long a control-socket client waits for its capture to finish.
CAPTURE_WAIT_S = 120.0
#: Fault parts in the order their pattern wins on the indicator.
#: The file that says a person set the clock during this boot (in the state folder).
CLOCK_MARK = "clock-set-this-boot"
#: How far a browser's time may be from ours and still count as "the clock is right".
CLOCK_AGREES_S = 5.0

_FAULT_PATTERNS = {
    "disk-full": IndicatorState.FAULT_DISK_FULL,
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
    #: The photo becomes a field of sample `sample_id` (a cells bundle counts it).
    in_sample: bool = False
    requested: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None


def check_sample_id(sample_id: str | None) -> str | None:
    """A sample id as typed by a technician: 1-64 printable ASCII characters, or None."""
    if sample_id is None or sample_id == "":
        return None
    if not isinstance(sample_id, str) or not SAMPLE_ID_RE.fullmatch(sample_id):
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
        #: Samples and their fields, written through the same store.
        self.samples = Samples(store)
        self.bundle = bundle
        #: The technician's calibration: scale, its tolerance, the blank-field photo.
        self.rig = load_rig(cfg.camera)
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
        self._sample_lock = threading.Lock()
        #: Set when a person sets (or confirms) the clock from the page during this boot.
        self.clock_mark = TimeSetMark(cfg.paths.state_dir / CLOCK_MARK)
        self._clock = self._check_clock()
        #: What a 5 s hold of the button clears (the status page's login lockouts).
        self.lockout_clearers: list[Callable[[], int]] = []
        self.state.update(camera=camera.name, model=self._model_info(bundle))

    # --- triggers (any thread) -------------------------------------------------------------

    def request_capture(self, trigger: str, sample_id: str | None = None) -> CaptureTicket | None:
        """Ask for a capture; None if one is already running (the request is dropped).

        With a sample id (and a cells bundle) the photo becomes the sample's next field;
        a new id starts the sample. Nothing is started or taken when the request is refused.

        Raises:
            ValueError: a malformed sample id; SampleError (a ValueError): the sample is
                decided, closed or was started with another model.
            NotReadyError: the appliance has a fault (camera, storage) or is stopping.
        """
        sample_id = check_sample_id(sample_id)
        in_sample = sample_id is not None and self.counts_samples
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
            if in_sample:
                assert sample_id is not None
                self._open_for_field(sample_id)
            self._busy = True
        ticket = CaptureTicket(trigger, sample_id, in_sample)
        self._queue.put(ticket)
        return ticket

    def on_button(self) -> None:
        """A short press (gpiozero's thread): a photo, into the active sample if any."""
        try:
            self.request_capture("button", self.active_sample)
        except (NotReadyError, ValueError, StoreError) as exc:
            logger.warning("button pressed but %s", exc)

    def on_long_press(self) -> None:
        """A long press (gpiozero's thread): start a new sample with a generated id."""
        try:
            sample = self.start_sample(self.new_sample_id())
        except (ValueError, StoreError) as exc:
            logger.warning("long press, but no sample started: %s", exc)
            return
        self._hold_result(IndicatorState.SAMPLE_STARTED)
        self._show(IndicatorState.SAMPLE_STARTED)
        logger.info("sample %s started by a long press", sample.id)

    def on_clear_hold(self) -> None:
        """The button held 5 s (gpiozero's thread): clear the page's login lockouts.

        Someone at the bench can always get back in, however many wrong passwords the
        LAN has sent; it is logged, like every override.
        """
        locked = sum(clear() for clear in self.lockout_clearers)
        logger.warning(
            "login lockouts cleared by holding the capture button (%d address(es) were locked)",
            locked,
        )

    # --- samples (any thread; the store serialises the writes) --------------------------------

    @property
    def counts_samples(self) -> bool:
        """Whether the loaded bundle counts samples (a cells bundle does)."""
        return isinstance(self.bundle.analyser, CellAnalyser)

    def sample_spec(self) -> SampleSpec:
        """The rule new samples are counted by: the bundle's, overridden by `[sample]`."""
        return sample_spec(self.bundle.manifest, self.cfg.sample)

    @property
    def active_sample(self) -> str | None:
        """The sample button presses add fields to: the last one started, while open."""
        latest = SampleReader(self.store.reader).page(1)
        if latest and latest[0].state is SampleState.OPEN:
            return latest[0].id
        return None

    def new_sample_id(self) -> str:
        """A fresh id for a sample started by the button: S-YYYYMMDD-HHMMSS (local time)."""
        base = datetime.now().strftime("S-%Y%m%d-%H%M%S")
        reader = SampleReader(self.store.reader)
        candidate, n = base, 1
        while reader.get(candidate) is not None:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def start_sample(self, sample_id: str) -> Sample:
        """Start a new sample under the loaded model's rule; it becomes the active sample.

        Raises:
            SampleError (a ValueError): a bad or already used id, or a bundle that does
                not count samples. ConfigError: `[sample]` and the bundle make no rule.
        """
        if not self.counts_samples:
            raise SampleError(
                f"samples are counted by a cells bundle; {self.bundle.label} is "
                f"{self.bundle.manifest.analysis_mode}"
            )
        spec = self.sample_spec()
        m = self.bundle.manifest
        with self._sample_lock:
            sample = self.samples.start(
                sample_id, spec.rule, spec.rates, (m.name, m.version, m.model_sha256)
            )
        logger.info(
            "sample %s started: threshold %g%%, %d-%d white cells, at most %d fields%s",
            sample.id,
            100 * spec.rule.threshold,
            spec.rule.min_cells,
            spec.rule.max_cells,
            spec.rule.max_fields,
            "" if spec.corrected else " (not corrected for the classifier's errors)",
        )
        return sample

    def close_sample(self, sample_id: str) -> Sample:
        """Close a sample by hand: it takes no more fields (closing twice is harmless).

        Raises:
            SampleError (a ValueError): a bad or unknown id.
        """
        sample = self.samples.close(sample_id)
        logger.info("sample %s closed: %s", sample.id, sample.message)
        return sample

    def review_cell(
        self, sample_id: str, record_id: int, cell_index: int, label: str, reviewer: str
    ) -> CellReview:
        """Store a person's reading ("blast" or "not-blast") of one cell of a counted field.

        Raises:
            SampleError (a ValueError): no such sample, field or cell, or a bad label.
        """
        return self.samples.review(sample_id, record_id, cell_index, label, reviewer)

    def get_sample(self, sample_id: str) -> Sample:
        """One sample as stored now; SampleError if the id is bad or unknown."""
        sample = SampleReader(self.store.reader).get(check_sample(sample_id))
        if sample is None:
            raise SampleError(f"no sample {sample_id!r}")
        return sample

    def _open_for_field(self, sample_id: str) -> None:
        """Make sure `sample_id` can take a field now, starting it if it is new."""
        with self._sample_lock:
            exists = self.samples.get(sample_id) is not None
        if not exists:
            self.start_sample(sample_id)
        self.samples.check_open(sample_id, self.bundle.manifest.model_sha256)

    def press_mock_button(self, held_s: float = 0.0) -> None:
        """Drive the mock button pin low, hold it `held_s`, then high (tests and the laptop
        demo only; a hold of `[sample] long_press_s` or more is a long press)."""
        pin = self.pin_factory.pin(self.cfg.gpio.button)
        pin.drive_low()
        if held_s > 0:
            time.sleep(held_s)
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
        if cmd in _SAMPLE_COMMANDS:
            try:
                sample = _SAMPLE_COMMANDS[cmd](self, request.get("sample_id"))
            except (ValueError, StoreError) as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True, "sample": sample.to_json()}
        if cmd == "press-button":
            if self.cfg.gpio.pin_factory != "mock":
                return {"ok": False, "error": "press-button needs gpio.pin_factory = 'mock'"}
            wait = request.get("wait_s", 0)
            if isinstance(wait, bool) or not isinstance(wait, int | float) or wait != wait:
                # checked before the press: a refused request must not take a photo
                return {"ok": False, "error": "wait_s must be a number of seconds"}
            held = request.get("held_s", 0)
            if isinstance(held, bool) or not isinstance(held, int | float) or not 0 <= held <= 60:
                return {"ok": False, "error": "held_s must be 0-60 seconds"}
            seq = self.state.snapshot()["result_seq"]
            self.press_mock_button(held)
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
            sample_spec(new.manifest, self.cfg.sample)  # [sample] and the new bundle agree
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

    def _check_clock(self) -> ClockStatus:
        """Whether the clock is trusted now; a change is logged and shown on the page."""
        status = clock_status(self.clock_mark)
        if status != getattr(self, "_clock", None):
            log = logger.info if status.trusted else logger.warning
            log("clock %s: %s", "trusted" if status.trusted else "NOT trusted", status.reason)
            self._clock = status
            self.state.update(clock={"trusted": status.trusted, "reason": status.reason})
        return status

    def confirm_clock(self, browser_unix: float) -> dict[str, Any]:
        """A logged-in person's browser time: if ours agrees, the clock is trusted this boot.

        Setting a wrong clock needs root (the daemon's sandbox forbids it, ProtectClock):
        the reply says by how much ours is off and how to set it.
        """
        offset = time.time() - browser_unix
        if abs(offset) <= CLOCK_AGREES_S:
            self.clock_mark.set()
            logger.warning("clock confirmed by a person on the status page (off by %.1f s)", offset)
            status = self._check_clock()
            return {"ok": True, "trusted": status.trusted, "offset_s": round(offset, 1)}
        return {
            "ok": False,
            "trusted": self._check_clock().trusted,
            "offset_s": round(offset, 1),
            "error": (
                f"this appliance's clock is {offset:+.0f} s off your browser's: set it as root "
                f"(`sudo date -s @{browser_unix:.0f}`; fake-hwclock keeps it over a reboot) or "
                "connect it to a network with time, then confirm again"
            ),
        }

    def _housekeeping(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now >= self._next_camera_check:
            self._next_camera_check = now + self.cfg.camera.retry_interval_s
            self._check_camera()
            self._check_clock()
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
            self._fault(
                "disk-full",
                f"disk full ({free // 1024} KiB free, need {need // 1024} KiB): retention has "
                "deleted every image it may; something else fills the card",
            )
        else:
            self.store.last_failed_bytes = 0
            self._fault("disk-full", None)
            self._fault("storage", None)

    def _retention(self) -> None:
        try:
            self.store.enforce_retention(
                self.cfg.retention.max_age_days,
                self._min_free(),
                clock_trusted=self._check_clock().trusted,
            )
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

    def _hold_result(self, state: IndicatorState) -> None:
        self._result_state = state
        self._result_until = time.monotonic() + self.cfg.indicator.result_hold_s

    def _show(self, state: IndicatorState) -> None:
        self.indicator.show(state)
        self.state.update(indicator=state.value, leds=self.indicator.levels())

    # --- one capture ---------------------------------------------------------------------

    def _capture(self, ticket: CaptureTicket) -> None:
        """Take, judge and record one still; every outcome (even a fault) is recorded."""
        timings: dict[str, float] = {}
        rec = NewRecord(
            trigger=ticket.trigger,
            outcome="fault",
            sample_id=ticket.sample_id,
            clock_trusted=self._check_clock().trusted,
        )
        self._show(IndicatorState.BUSY)
        self.state.update(phase="busy")
        still: Still | None = None
        shown = IndicatorState.FAULT_CAMERA
        field_print: np.ndarray | None = None
        try:
            t0 = time.perf_counter()
            still = self.camera.capture()
            timings["capture"] = _ms(t0)
            timings["exposure"] = round(still.exposure_s * 1000.0, 2)
            t0 = time.perf_counter()
            # cells mode decodes stills at full size, the size the scale is calibrated at,
            # or at half size where the calibration allows (analysed at half its scale)
            reduction = decode_reduction(self.bundle, self.rig)
            rgb = decode_still(still, decode_size(self.bundle), reduction)
            timings["decode"] = _ms(t0)
            analysis = analyse(
                rgb,
                self.bundle,
                self.cfg.quality,
                gate=self.cfg.quality_enabled,
                rig=self.rig.reduced(reduction),
            )
            if ticket.in_sample:
                t0 = time.perf_counter()
                field_print = fingerprint(rgb)
                timings["fingerprint"] = _ms(t0)
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
        # A field's answer is known once its transaction is written (see the module doc).
        as_field = ticket.in_sample and field_print is not None
        if not as_field:
            self._answer(ticket, shown, timings)
        rec.timings_ms = timings
        result = self._save(rec, still, ticket.sample_id if as_field else None, field_print)
        if as_field:
            sample = result.get("sample")
            field_status = (result.get("field") or {}).get("status")
            if sample is not None and field_status == FieldStatus.COUNTED.value:
                verdict = sample["verdict"]
                shown = (
                    IndicatorState.FIELD_ADDED
                    if verdict is None
                    else IndicatorState.for_sample(Verdict(verdict))
                )
            elif sample is not None:
                shown = IndicatorState.RETAKE
            self._answer(ticket, shown, timings)
            if sample is not None:
                logger.info("sample %s: %s", sample["id"], result["field"]["message"])
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
        # Indicator and phase are right by the time anyone hears the answer (not a tick
        # later): a write that just failed shows its fault now.
        self._refresh_indicator(self.state.snapshot()["faults"])
        ticket.result = result
        ticket.done.set()

    def _answer(self, ticket: CaptureTicket, shown: IndicatorState, timings: dict) -> None:
        """Show a capture's answer and welcome the next press."""
        t0 = time.perf_counter()
        self._hold_result(shown)
        with self._busy_lock:
            self._busy = False  # new presses are welcome once the answer is shown
        self._show(shown)
        timings["indicate"] = _ms(t0)
        timings["trigger_to_indicator"] = round((time.perf_counter() - ticket.requested) * 1000, 2)

    def _save(
        self,
        rec: NewRecord,
        still: Still | None,
        sample_id: str | None = None,
        field_print: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Write the image and record (and, for a sample, its field in the same
        transaction); a store failure is a storage fault, not a crash."""
        t0 = time.perf_counter()
        data, suffix = _file_bytes(still)
        rec.timings_ms["encode"] = _ms(t0)
        added: FieldResult | None = None
        not_counted: str | None = None
        try:
            if sample_id is None:
                record_id = self.store.add(rec, data, suffix)
            else:
                try:
                    added = self.samples.add_field(
                        sample_id,
                        rec,
                        data,
                        suffix,
                        fingerprint=field_print,
                        max_overlap=self.cfg.sample.max_overlap,
                    )
                    record_id = added.record_id
                except SampleError as exc:
                    # Closed or decided since the request (the page): keep the photo alone.
                    not_counted = f"not counted: {exc}"
                    logger.warning("sample %s: %s", sample_id, not_counted)
                    record_id = self.store.add(rec, data, suffix)
        except StoreError as exc:
            full = self.store.last_failed_bytes > 0 or "full" in str(exc)
            self._fault("disk-full" if full else "storage", str(exc))
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
        if added is not None:
            saved["sample"] = added.sample.to_json()
            saved["field"] = added.to_json()
        elif not_counted is not None:
            saved["sample"] = None
            saved["field"] = {"status": None, "message": not_counted}
        return saved


#: Control requests about samples: {"cmd": ..., "sample_id": ...} -> {"ok", "sample"}.
_SAMPLE_COMMANDS = {
    "sample-start": lambda d, sid: d.start_sample(sid),
    "sample-close": lambda d, sid: d.close_sample(sid),
    "sample-show": lambda d, sid: d.get_sample(sid),
}


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
