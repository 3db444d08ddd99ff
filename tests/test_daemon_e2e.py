"""End to end: the real daemon process, replay camera, MockFactory pins, real runtime and bundle."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from leukoscope.appliance.daemon import check_sample_id
from leukoscope.appliance.indicator import IndicatorState
from leukoscope.config import load_config
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import sha256_file
from tests.daemon_helpers import (
    DaemonProcess,
    daemon_config,
    daemon_in_process,
    good_field,
    replay_set,
    wait_until,
    write_rgb,
)

#: Which LEDs are lit, steadily, for each verdict's pattern.
STEADY = {
    "no-leukemia-suspected": {"green"},
    "leukemia-suspected": {"red"},
    "indeterminate": {"amber", "red"},
}

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon(tmp_path: Path, session_bundle: Path):
    replay_set(tmp_path / "replay")
    proc = DaemonProcess(daemon_config(tmp_path, session_bundle, tmp_path / "replay"))
    try:
        proc.wait_phase("ready")
        yield proc
    finally:
        proc.stop()


def test_button_blurred_dark_and_corrupt_frames(daemon: DaemonProcess, tmp_path: Path) -> None:
    # 0. A press-button request with a bad wait is refused before the button is pressed.
    for wait in ("30", [30], True):
        refused = daemon.request({"cmd": "press-button", "wait_s": wait})
        assert refused == {"ok": False, "error": "wait_s must be a number of seconds"}

    # 1. A press of the (mock) GPIO button: a record, and the verdict's pattern.
    reply = daemon.request({"cmd": "press-button", "wait_s": 30}, timeout=40)
    state = reply["state"]
    first = state["last_result"]
    assert first is not None and first["trigger"] == "button"
    assert first["outcome"] in STEADY, first
    assert state["indicator"] == IndicatorState(first["outcome"]).value
    lit = {name for name in ("green", "amber", "red") if state["leds"][name]}
    assert lit == STEADY[first["outcome"]]
    assert first["model_sha256"] == state["model"]["sha256"]
    image = tmp_path / "state" / "images" / first["image_path"]
    assert sha256_file(image) == first["image_sha256"]
    assert first["timings_ms"]["trigger_to_indicator"] > 0

    # 2. A blurred field and 3. a dark one: retake with the reason, never the model.
    blurred = daemon.capture(sample_id="S-2")
    assert blurred["outcome"] == "retake" and blurred["p_leukemia"] is None
    assert "out-of-focus" in blurred["retake_reasons"]
    assert blurred["sample_id"] == "S-2"
    assert daemon.status()["indicator"] == "retake"  # type: ignore[index]
    dark = daemon.capture()
    assert dark["outcome"] == "retake" and "too-dark" in dark["retake_reasons"]

    # 4. A corrupt frame: a fault record, and the daemon carries on.
    corrupt = daemon.capture()
    assert corrupt["outcome"] == "fault" and "bad frame" in corrupt["error"]
    assert daemon.status()["indicator"] == "fault-camera"  # type: ignore[index]
    again = daemon.capture()
    assert again["outcome"] == first["outcome"] and again["saved"]
    assert daemon.proc.poll() is None

    # A bad sample id is refused before anything happens.
    bad = daemon.request({"cmd": "capture", "sample_id": "x" * 65})
    assert not bad["ok"] and "sample id" in bad["error"]

    assert daemon.stop() == 0
    assert "stopped cleanly" in daemon.log
    with sqlite3.connect(tmp_path / "state" / "records.sqlite3") as db:
        rows = db.execute("SELECT trigger, outcome FROM results ORDER BY id").fetchall()
    assert [r[1] for r in rows] == [first["outcome"], "retake", "retake", "fault", again["outcome"]]
    assert rows[0][0] == "button"
    assert not (tmp_path / "state" / "control.sock").exists()


def test_real_gpiozero_button_press_while_busy_is_ignored(
    tmp_path: Path, session_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In-process: MockFactory drives the real gpiozero Button wired to the real Daemon."""
    caplog.set_level("INFO", logger="leukoscope.appliance.daemon")
    write_rgb(tmp_path / "replay" / "00.png", good_field(0))
    # A long simulated exposure keeps the first capture busy while the button is pressed again.
    cfg = load_config(
        daemon_config(
            tmp_path, session_bundle, tmp_path / "replay", camera__replay={"exposure_ms": 700}
        )
    )
    with daemon_in_process(cfg, load_bundle(cfg.paths.bundle), button=True) as daemon:
        wait_until(lambda: daemon.state.phase == "ready", 10, "ready")
        pin = daemon.pin_factory.pin(cfg.gpio.button)
        for _ in range(3):  # contact chatter on one press
            pin.drive_low()
            pin.drive_high()
        wait_until(lambda: daemon.state.phase == "busy", 10, "busy")
        pin.drive_low()  # a second press while the first capture runs
        pin.drive_high()
        assert daemon.state.wait_for_result(0, 30) == 1
        ticket = daemon.request_capture("control")
        assert ticket is not None and ticket.done.wait(30)
        triggers = [r.trigger for r in reversed(daemon.store.reader.page(20).items)]
        assert triggers == ["button", "control"]  # the busy press was dropped, not queued
        assert "capture request from button ignored: busy" in caplog.text


def test_sample_id_check_refuses_trailing_newline_and_non_ascii() -> None:
    assert check_sample_id("S-2026/11 a.1") == "S-2026/11 a.1"
    assert check_sample_id("") is None
    for bad in ("abc\n", "ab\u00e9", " lead", "x" * 65):
        with pytest.raises(ValueError):
            check_sample_id(bad)
