"""The indicator's patterns and the button, on gpiozero's own MockFactory."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from leukoscope.analysis.decision import Verdict
from leukoscope.appliance.gpio import CaptureButton
from leukoscope.appliance.indicator import PATTERNS, GpioIndicator, IndicatorState

PINS = {"green": 22, "amber": 23, "red": 24, "buzzer": 27}


@pytest.fixture
def factory():
    f = MockFactory()
    try:
        yield f
    finally:
        f.reset()
        f.close()


@pytest.fixture
def indicator(factory):
    ind = GpioIndicator(green=22, amber=23, red=24, buzzer=27, pin_factory=factory, beep=True)
    try:
        yield ind
    finally:
        ind.close()


def test_every_state_has_a_distinct_pattern() -> None:
    patterns = [(p.green, p.amber, p.red) for p in PATTERNS.values()]
    assert len(set(patterns)) == len(patterns)
    for verdict in Verdict:
        assert IndicatorState.for_verdict(verdict) in PATTERNS


@pytest.mark.parametrize(
    ("state", "lit"),
    [
        (IndicatorState.NO_LEUKEMIA_SUSPECTED, {"green"}),
        (IndicatorState.LEUKEMIA_SUSPECTED, {"red"}),
        (IndicatorState.INDETERMINATE, {"amber", "red"}),
        (IndicatorState.STARTING, {"amber"}),
        (IndicatorState.OFF, set()),
    ],
)
def test_steady_patterns_light_the_right_leds(factory, indicator, state, lit) -> None:
    indicator.show(state)
    on = {name for name in ("green", "amber", "red") if factory.pin(PINS[name]).state}
    assert on == lit
    assert indicator.current == state


def wait_until(cond, timeout: float = 5.0) -> bool:
    """Poll a condition until it holds or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def rises(pin) -> int:
    states = [s.state for s in pin.states]
    return sum(1 for a, b in itertools.pairwise(states) if not a and b)


@pytest.mark.parametrize(
    ("state", "beeps"),
    [
        (IndicatorState.NO_LEUKEMIA_SUSPECTED, 1),
        (IndicatorState.INDETERMINATE, 2),
        (IndicatorState.LEUKEMIA_SUSPECTED, 3),
    ],
)
def test_verdicts_beep_their_count(factory, indicator, state, beeps) -> None:
    buzzer = factory.pin(PINS["buzzer"])
    indicator.show(IndicatorState.READY)
    buzzer.clear_states()
    indicator.show(state)
    thread = indicator.buzzer._blink_thread  # gpiozero's beep thread ends after n beeps
    assert thread is not None
    thread.join(5.0)
    assert not thread.is_alive()
    assert rises(buzzer) == beeps and not buzzer.state


def test_blinking_patterns_toggle_the_pin(factory, indicator) -> None:
    red = factory.pin(PINS["red"])
    red.clear_states()
    indicator.show(IndicatorState.FAULT_CAMERA)
    assert wait_until(lambda: rises(red) >= 2), "the red LED never blinked"
    assert factory.pin(PINS["green"]).state is False


def test_close_turns_everything_off_and_is_idempotent(factory, indicator) -> None:
    indicator.show(IndicatorState.INDETERMINATE)
    indicator.close()
    indicator.close()
    assert indicator.levels() == {}


def test_button_is_debounced_and_each_press_asks_once(factory) -> None:
    presses = []
    pressed = threading.Event()

    def on_press() -> None:
        presses.append(1)
        pressed.set()

    button = CaptureButton(17, bounce_ms=0, pin_factory=factory, on_press=on_press)
    try:
        pin = factory.pin(17)
        pin.drive_low()
        assert pressed.wait(2.0)
        pin.drive_high()
        assert presses == [1]
    finally:
        button.close()
        button.close()


@pytest.mark.parametrize(
    "verdict", [Verdict.NO_LEUKEMIA_SUSPECTED, Verdict.LEUKEMIA_SUSPECTED, Verdict.INDETERMINATE]
)
def test_a_decided_sample_is_told_apart_from_one_photos_verdict(verdict: Verdict) -> None:
    photo = PATTERNS[IndicatorState.for_verdict(verdict)]
    sample = PATTERNS[IndicatorState.for_sample(verdict)]
    lit = {name for name in ("green", "amber", "red") if getattr(photo, name) == "on"}
    # The same LEDs, pulsing instead of steady, and the same count of longer beeps.
    assert {name for name in ("green", "amber", "red") if getattr(sample, name) != "off"} == lit
    assert all(isinstance(getattr(sample, name), tuple) for name in lit)
    assert photo.beeps and sample.beeps and sample.beeps[0] == photo.beeps[0]
    assert sample.beeps[1] > 3 * photo.beeps[1]
    with pytest.raises(ValueError):
        IndicatorState.for_sample(Verdict.RETAKE)


def test_field_added_differs_from_ready_and_from_a_decided_sample(factory, indicator) -> None:
    green, buzzer = factory.pin(PINS["green"]), factory.pin(PINS["buzzer"])
    indicator.show(IndicatorState.READY)
    green.clear_states()
    buzzer.clear_states()
    indicator.show(IndicatorState.FIELD_ADDED)
    assert wait_until(lambda: rises(green) >= 2), "field-added blinks the green LED"
    assert rises(buzzer) == 1  # one short chirp: "take the next field"
    assert not factory.pin(PINS["red"]).state and not factory.pin(PINS["amber"]).state


def test_a_long_press_starts_a_sample_and_a_short_one_captures_on_release(factory) -> None:
    shorts: list[float] = []
    longs: list[float] = []
    long_seen = threading.Event()

    def on_long() -> None:
        longs.append(time.monotonic())
        long_seen.set()

    button = CaptureButton(
        17,
        bounce_ms=0,
        pin_factory=factory,
        on_press=lambda: shorts.append(time.monotonic()),
        on_long_press=on_long,
        long_press_s=0.3,
    )
    try:
        pin = factory.pin(17)
        pin.drive_low()  # held past long_press_s: a new sample, no photo
        assert long_seen.wait(3.0)
        pin.drive_high()
        assert len(longs) == 1 and shorts == []
        pin.drive_low()  # a short press: a photo once it is let go
        assert shorts == []
        pin.drive_high()
        assert wait_until(lambda: len(shorts) == 1)
        time.sleep(0.4)  # nothing more fires after the short press
        assert len(longs) == 1 and len(shorts) == 1
    finally:
        button.close()
        button.close()
