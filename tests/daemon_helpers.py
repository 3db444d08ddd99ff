"""Helpers for daemon tests: replay images with known answers, configs, the daemon in a
process of its own or in the test's process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from gpiozero.pins.mock import MockFactory

from leukoscope.appliance.control import ControlError, request
from leukoscope.appliance.daemon import Daemon
from leukoscope.appliance.gpio import CaptureButton
from leukoscope.appliance.indicator import GpioIndicator
from leukoscope.appliance.records import Store
from leukoscope.appliance.sdnotify import Notifier
from leukoscope.capture.backends import open_backend
from leukoscope.capture.owner import CameraOwner
from leukoscope.config import Config, load_config
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import Bundle

REPO = Path(__file__).resolve().parent.parent


def good_field(seed: int = 0, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """A synthetic stained field that passes the quality gate."""
    return make_smear(size[0], size[1], n_wbc=3, n_blasts=2 * (seed % 2), seed=seed).image


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB array as an image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def replay_set(folder: Path) -> dict[str, Path]:
    """Files the replay camera serves in name order: good, blurred, dark, corrupt."""
    good = good_field(1)
    files = {
        "good": write_rgb(folder / "00-good.png", good),
        "blurred": write_rgb(folder / "01-blurred.png", cv2.GaussianBlur(good, (0, 0), 6.4)),
        "dark": write_rgb(folder / "02-dark.png", (good * 0.15).astype(np.uint8)),
    }
    jpeg = cv2.imencode(".jpg", good)[1].tobytes()
    corrupt = folder / "03-corrupt.jpg"
    corrupt.write_bytes(jpeg[: len(jpeg) // 3])  # a frame cut off mid-transfer
    files["corrupt"] = corrupt
    return files


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """Write a config file from {"section" or "section.sub": {key: value}}."""
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def daemon_config(tmp: Path, bundle: Path, replay: Path, **overrides: dict[str, Any]) -> Path:
    """A config for a test daemon: replay camera, mock pins, state under `tmp`."""
    sections: dict[str, dict[str, Any]] = {
        "paths": {"state_dir": tmp / "state", "bundle": bundle},
        "camera": {"backend": "replay", "retry_interval_s": 0.2, "capture_timeout_s": 5.0},
        "camera.replay": {"folder": replay},
        "gpio": {"pin_factory": "mock", "bounce_ms": 20},
        "indicator": {"result_hold_s": 30.0},
        "retention": {"min_free_mb": 1},
        "daemon": {"log_level": "debug", "startup_fault_hold_s": 0.5},
        "model": {"threads": 1},
        "web": {"enabled": False},  # the status page has its own tests
    }
    for key, values in overrides.items():
        sections.setdefault(key.replace("__", "."), {}).update(values)
    return write_config(tmp / "config.toml", sections)


def wait_until(cond: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
    """Poll `cond` every 20 ms until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class DaemonProcess:
    """`leukoscope run --config FILE` as a child process, with its log collected."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.socket = load_config(config).paths.control_socket
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leukoscope.cli.main", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def request(self, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        return request(self.socket, payload, timeout=timeout)

    def status(self) -> dict[str, Any] | None:
        """The daemon's state, or None while its control socket is not up."""
        try:
            reply = self.request({"cmd": "status"}, timeout=5.0)
        except ControlError:
            return None
        return reply["state"]

    def wait_phase(self, phase: str, timeout: float = 30.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.log}")
            st = self.status()
            return st if st is not None and st["phase"] == phase else None

        return wait_until(check, timeout, f"phase {phase}")

    def capture(self, sample_id: str | None = None) -> dict[str, Any]:
        reply = self.request({"cmd": "capture", "sample_id": sample_id}, timeout=60.0)
        assert reply["ok"], reply
        return reply["result"]

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5.0)
        return rc

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._reader.join(5.0)


@contextmanager
def daemon_in_process(cfg: Config, bundle: Bundle, *, button: bool = False) -> Iterator[Daemon]:
    """The real Daemon in this process: MockFactory pins, the configured (replay) camera, a
    record store, and its work loop on a thread; with `button`, the real gpiozero button
    wired to it. Everything is stopped and closed in reverse order on exit.
    """
    with ExitStack() as stack:
        factory = MockFactory()
        stack.callback(factory.close)
        indicator = GpioIndicator(
            green=cfg.gpio.led_green,
            amber=cfg.gpio.led_amber,
            red=cfg.gpio.led_red,
            buzzer=cfg.gpio.buzzer,
            pin_factory=factory,
        )
        stack.callback(indicator.close)
        store = Store(cfg.paths.database, cfg.paths.images_dir)
        stack.callback(store.close)
        camera = CameraOwner(open_backend(cfg.camera), cfg.camera)
        stack.callback(camera.close)
        daemon = Daemon(
            cfg,
            notifier=Notifier({}),
            indicator=indicator,
            store=store,
            bundle=bundle,
            camera=camera,
            pin_factory=factory,
        )
        if button:
            press = CaptureButton(
                cfg.gpio.button,
                bounce_ms=cfg.gpio.bounce_ms,
                pin_factory=factory,
                on_press=daemon.on_button,
            )
            stack.callback(press.close)
        loop = threading.Thread(target=daemon.serve)
        loop.start()
        stack.callback(loop.join, 30)
        stack.callback(daemon.stop)
        yield daemon
