"""The appliance process, top to bottom: the daemon's parts, its triggers and its status page.

This is the one module that wires the daemon (`appliance`) and the web server (`web`)
together, so neither imports the other's wiring. Exit codes: 0 after SIGTERM; 69 when the
model bundle, the store, the GPIO pins or the status page's port cannot be used at start
(systemd restarts it; the fault pattern is shown for `daemon.startup_fault_hold_s` first);
78 for an invalid config.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from leukoscope.appliance.control import ControlServer
from leukoscope.appliance.daemon import Daemon
from leukoscope.appliance.gpio import CaptureButton, make_pin_factory
from leukoscope.appliance.indicator import GpioIndicator, Indicator, IndicatorState
from leukoscope.appliance.records import Store
from leukoscope.appliance.sdnotify import Notifier
from leukoscope.capture.backends import open_backend
from leukoscope.capture.owner import CameraOwner
from leukoscope.config import Config
from leukoscope.core.errors import CameraError, GpioError, LeukoscopeError, StoreError
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import sample_spec
from leukoscope.web import create_app
from leukoscope.web.daemon_source import DaemonSource
from leukoscope.web.server import WebServer, WebServerError, capture_hold

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_UNAVAILABLE = 69
#: An invalid config: restarting cannot fix it.
EXIT_CONFIG = 78


def _startup_fault(
    indicator: Indicator | None, state: IndicatorState, notifier: Notifier, msg: str, hold: float
) -> int:
    """Show a fatal start-up fault for `hold` seconds (SIGTERM cuts it short), then exit."""
    logger.critical("cannot start: %s", msg)
    notifier.status(f"fault: {msg}")
    if indicator is not None:
        indicator.show(state)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait(hold)
    return EXIT_UNAVAILABLE


def run(cfg: Config) -> int:
    """Run the appliance until SIGTERM; return the process exit code."""
    notifier = Notifier()
    with contextlib.ExitStack() as stack:
        stack.callback(notifier.close)
        hold = cfg.daemon.startup_fault_hold_s
        # 1. The indicator first, so every later failure can be shown.
        try:
            pin_factory = make_pin_factory(cfg.gpio.pin_factory)
            stack.callback(pin_factory.close)
            indicator = GpioIndicator(
                green=cfg.gpio.led_green,
                amber=cfg.gpio.led_amber,
                red=cfg.gpio.led_red,
                buzzer=cfg.gpio.buzzer,
                pin_factory=pin_factory,
                beep=cfg.indicator.beep,
            )
        except GpioError as exc:
            return _startup_fault(None, IndicatorState.OFF, notifier, str(exc), 0.0)
        stack.callback(indicator.close)
        indicator.show(IndicatorState.STARTING)
        notifier.status("starting")
        # 2. The record store, recovered from whatever a crash left.
        try:
            store = Store(cfg.paths.database, cfg.paths.images_dir)
            stack.callback(store.close)
            store.recover()
        except (StoreError, OSError) as exc:
            return _startup_fault(indicator, IndicatorState.FAULT_STORAGE, notifier, str(exc), hold)
        # 3. The model bundle, fully verified.
        try:
            bundle = load_bundle(cfg.paths.bundle, num_threads=cfg.model.threads)
            sample_spec(bundle.manifest, cfg.sample)  # [sample] and the bundle make a rule
        except LeukoscopeError as exc:
            msg = f"model bundle {cfg.paths.bundle} is unusable: {exc}"
            return _startup_fault(indicator, IndicatorState.FAULT_MODEL, notifier, msg, hold)
        # 4. The camera backend (a missing library is fatal; a missing camera is retried).
        try:
            camera = CameraOwner(open_backend(cfg.camera), cfg.camera)
        except CameraError as exc:
            return _startup_fault(indicator, IndicatorState.FAULT_CAMERA, notifier, str(exc), hold)
        stack.callback(camera.close)
        daemon = Daemon(
            cfg,
            notifier=notifier,
            indicator=indicator,
            store=store,
            bundle=bundle,
            camera=camera,
            pin_factory=pin_factory,
        )
        daemon.install_signal_handlers()
        # 5. Triggers: the control socket and the button (short press: a photo; long: a sample;
        # 5 s: the page's login lockouts are cleared too).
        try:
            control = ControlServer(cfg.paths.control_socket, daemon)
        except LeukoscopeError as exc:
            return _startup_fault(indicator, IndicatorState.FAULT_STORAGE, notifier, str(exc), hold)
        stack.callback(control.close)
        try:
            button = CaptureButton(
                cfg.gpio.button,
                bounce_ms=cfg.gpio.bounce_ms,
                pin_factory=pin_factory,
                on_press=daemon.on_button,
                on_long_press=daemon.on_long_press,
                long_press_s=cfg.sample.long_press_s,
                on_clear_hold=daemon.on_clear_hold,
            )
        except GpioError as exc:
            return _startup_fault(indicator, IndicatorState.FAULT_CAMERA, notifier, str(exc), hold)
        stack.callback(button.close)
        control.start()
        # 6. The status page (reads state and records; captures go through request_capture).
        # A port held by another program is fatal: running without a page would leave
        # /healthz answered by whatever holds it, and systemd restarts us until it is free.
        try:
            web = serve_daemon(daemon)
        except WebServerError as exc:
            msg = f"{exc} (another program holds the port? set [web] port, or enabled = false)"
            return _startup_fault(None, IndicatorState.OFF, notifier, msg, hold)
        if web is not None:
            stack.callback(web.close)
        # 7. Serve until SIGTERM; the ExitStack closes everything in reverse order.
        daemon.serve()
    logger.info("stopped cleanly")
    return EXIT_OK


def serve_daemon(daemon: Daemon) -> WebServer | None:
    """Start the status page for a running daemon, as its [web] config says.

    Returns the started server (close it before the daemon's parts), or None when the
    page is disabled.

    Raises:
        WebServerError: its address cannot be bound (in use, or not on this machine).
    """
    cfg = daemon.cfg.web
    if not cfg.enabled:
        logger.info("status page disabled in the config ([web] enabled = false)")
        return None
    source = DaemonSource(daemon)
    app = create_app(source, cfg)
    daemon.lockout_clearers.append(app.extensions["leukoscope"].limiter.clear)
    try:
        server = WebServer(
            app,
            cfg.host,
            cfg.port,
            threads=cfg.threads,
            hold=capture_hold(daemon.state),
        )
    except WebServerError:
        source.close()
        raise
    server.on_close(source.close)
    source.start()
    server.start()
    return server
