"""The indicator: three LEDs and a buzzer with one distinct pattern per appliance state.

| state                 | green     | amber      | red        | buzzer            |
|-----------------------|-----------|------------|------------|-------------------|
| starting              | off       | on         | off        | -                 |
| ready                 | heartbeat | off        | off        | -                 |
| busy                  | off       | fast blink | off        | -                 |
| no-leukemia-suspected | on        | off        | off        | 1 short beep      |
| leukemia-suspected    | off       | off        | on         | 3 short beeps     |
| indeterminate         | off       | on         | on         | 2 short beeps     |
| retake                | off       | slow blink | off        | 2 quick beeps     |
| sample-started        | slow blink| slow blink | off        | 2 chirps          |
| field-added           | slow blink| off        | off        | 1 chirp           |
| sample-no-leukemia-.. | pulse     | off        | off        | 1 long beep (0.6) |
| sample-leukemia-...   | off       | off        | pulse      | 3 long beeps      |
| sample-indeterminate  | off       | pulse      | pulse      | 2 long beeps      |
| fault-camera          | off       | off        | fast blink | 1 long beep       |
| fault-model           | off       | on         | fast blink | 1 long beep       |
| fault-storage         | off       | fast blink | fast blink | 1 long beep       |
| fault-disk-full       | off       | slow blink | fast blink | 2 long beeps      |
| off                   | off       | off        | off        | -                 |

A single photo's verdict is steady; a sample's verdict (the patient's, from all its
fields) pulses (1.5 s on, 0.5 s off) with long beeps, so the two are never confused.
Inside a sample a counted field shows `field-added` ("take the next field"); a repeat of
a counted field, like a refused photo, shows `retake` ("move to another field").

Every change is logged (so `make run` on a laptop shows it), and `current` is readable
by the status page.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from gpiozero import LED, Buzzer
from gpiozero.exc import GPIOZeroError

from leukoscope.analysis.decision import Verdict
from leukoscope.core.errors import GpioError

logger = logging.getLogger(__name__)


class IndicatorState(StrEnum):
    """What the indicator can show."""

    OFF = "off"
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    NO_LEUKEMIA_SUSPECTED = "no-leukemia-suspected"
    LEUKEMIA_SUSPECTED = "leukemia-suspected"
    INDETERMINATE = "indeterminate"
    RETAKE = "retake"
    SAMPLE_STARTED = "sample-started"
    FIELD_ADDED = "field-added"
    SAMPLE_NO_LEUKEMIA_SUSPECTED = "sample-no-leukemia-suspected"
    SAMPLE_LEUKEMIA_SUSPECTED = "sample-leukemia-suspected"
    SAMPLE_INDETERMINATE = "sample-indeterminate"
    FAULT_CAMERA = "fault-camera"
    FAULT_MODEL = "fault-model"
    FAULT_STORAGE = "fault-storage"
    FAULT_DISK_FULL = "fault-disk-full"

    @classmethod
    def for_verdict(cls, verdict: Verdict) -> IndicatorState:
        """The state that shows a verdict."""
        return cls(verdict.value)

    @classmethod
    def for_sample(cls, verdict: Verdict) -> IndicatorState:
        """The state that shows a decided sample's verdict (never retake)."""
        if verdict is Verdict.RETAKE:
            raise ValueError("a sample is never decided as retake")
        return cls(f"sample-{verdict.value}")


#: An LED's behaviour: "off", "on", or (on_s, off_s) blinking.
LedMode = str | tuple[float, float]
_FAST = (0.15, 0.15)
_SLOW = (0.5, 0.5)
_HEARTBEAT = (0.2, 1.8)
_LONG_BEEP = (1, 0.8, 0.2)
#: A decided sample: its verdict's LEDs mostly on, with long beeps.
_PULSE = (1.5, 0.5)
_SAMPLE_BEEP = (0.6, 0.3)
_CHIRP = (0.05, 0.1)


@dataclass(frozen=True)
class Pattern:
    """One state's LED modes and beeps (count, on_s, off_s)."""

    green: LedMode = "off"
    amber: LedMode = "off"
    red: LedMode = "off"
    beeps: tuple[int, float, float] | None = None

    def describe(self) -> str:
        """Short text for logs."""

        def one(mode: LedMode) -> str:
            return mode if isinstance(mode, str) else f"blink {mode[0]:g}/{mode[1]:g}s"

        beep = f"{self.beeps[0]} beep(s)" if self.beeps else "silent"
        return f"green {one(self.green)}, amber {one(self.amber)}, red {one(self.red)}, {beep}"


PATTERNS: dict[IndicatorState, Pattern] = {
    IndicatorState.OFF: Pattern(),
    IndicatorState.STARTING: Pattern(amber="on"),
    IndicatorState.READY: Pattern(green=_HEARTBEAT),
    IndicatorState.BUSY: Pattern(amber=_FAST),
    IndicatorState.NO_LEUKEMIA_SUSPECTED: Pattern(green="on", beeps=(1, 0.15, 0.15)),
    IndicatorState.LEUKEMIA_SUSPECTED: Pattern(red="on", beeps=(3, 0.15, 0.15)),
    IndicatorState.INDETERMINATE: Pattern(amber="on", red="on", beeps=(2, 0.15, 0.15)),
    IndicatorState.RETAKE: Pattern(amber=_SLOW, beeps=(2, 0.08, 0.12)),
    IndicatorState.SAMPLE_STARTED: Pattern(green=_SLOW, amber=_SLOW, beeps=(2, *_CHIRP)),
    IndicatorState.FIELD_ADDED: Pattern(green=_SLOW, beeps=(1, *_CHIRP)),
    IndicatorState.SAMPLE_NO_LEUKEMIA_SUSPECTED: Pattern(green=_PULSE, beeps=(1, *_SAMPLE_BEEP)),
    IndicatorState.SAMPLE_LEUKEMIA_SUSPECTED: Pattern(red=_PULSE, beeps=(3, *_SAMPLE_BEEP)),
    IndicatorState.SAMPLE_INDETERMINATE: Pattern(
        amber=_PULSE, red=_PULSE, beeps=(2, *_SAMPLE_BEEP)
    ),
    IndicatorState.FAULT_CAMERA: Pattern(red=_FAST, beeps=_LONG_BEEP),
    IndicatorState.FAULT_MODEL: Pattern(amber="on", red=_FAST, beeps=_LONG_BEEP),
    IndicatorState.FAULT_STORAGE: Pattern(amber=_FAST, red=_FAST, beeps=_LONG_BEEP),
    IndicatorState.FAULT_DISK_FULL: Pattern(amber=_SLOW, red=_FAST, beeps=(2, 0.6, 0.3)),
}


class Indicator(Protocol):
    """Shows the appliance's state to the person at the bench."""

    @property
    def current(self) -> IndicatorState:
        """The state shown now."""

    def show(self, state: IndicatorState) -> None:
        """Switch to a state's pattern (a no-op if it is already shown)."""

    def levels(self) -> dict[str, bool]:
        """Each output's level right now (True = on), for the status page and tests."""

    def close(self) -> None:
        """Turn everything off and release the pins (idempotent)."""


class GpioIndicator:
    """LEDs and an active buzzer through gpiozero (real pins, or MockFactory in tests)."""

    def __init__(
        self,
        *,
        green: int,
        amber: int,
        red: int,
        buzzer: int | None,
        pin_factory: Any,
        beep: bool = True,
    ) -> None:
        """Claim the pins (BCM numbers) through `pin_factory`.

        Raises:
            GpioError: a pin cannot be claimed.
        """

        self._lock = threading.Lock()
        self._state = IndicatorState.OFF
        self._devices: list[Any] = []
        try:
            self.green = self._add(LED(green, pin_factory=pin_factory))
            self.amber = self._add(LED(amber, pin_factory=pin_factory))
            self.red = self._add(LED(red, pin_factory=pin_factory))
            self.buzzer = (
                self._add(Buzzer(buzzer, pin_factory=pin_factory)) if buzzer is not None else None
            )
        except (GPIOZeroError, OSError) as exc:
            self.close()
            raise GpioError(f"cannot claim indicator pins: {exc}") from None
        self.beep = beep

    def _add(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    @property
    def current(self) -> IndicatorState:
        """The state shown now."""
        return self._state

    @staticmethod
    def _apply(led: Any, mode: LedMode) -> None:
        if isinstance(mode, tuple):
            led.blink(on_time=mode[0], off_time=mode[1], background=True)
        elif mode == "on":
            led.on()
        else:
            led.off()

    def show(self, state: IndicatorState) -> None:
        """Switch to a state's pattern (a no-op if it is already shown)."""
        with self._lock:
            if state == self._state or not self._devices:
                return
            pattern = PATTERNS[state]
            self._apply(self.green, pattern.green)
            self._apply(self.amber, pattern.amber)
            self._apply(self.red, pattern.red)
            if self.buzzer is not None:
                self.buzzer.off()
                if pattern.beeps and self.beep:
                    n, on_s, off_s = pattern.beeps
                    self.buzzer.beep(on_time=on_s, off_time=off_s, n=n, background=True)
            previous, self._state = self._state, state
        logger.info("indicator: %s -> %s (%s)", previous, state, pattern.describe())

    def levels(self) -> dict[str, bool]:
        """Each output's level right now (True = on), for the status page and tests."""
        if not self._devices:
            return {}
        out = {"green": self.green, "amber": self.amber, "red": self.red, "buzzer": self.buzzer}
        return {k: bool(dev.is_active) for k, dev in out.items() if dev is not None}

    def close(self) -> None:
        """Turn everything off and release the pins (idempotent)."""
        with self._lock:
            devices, self._devices = self._devices, []
            for dev in devices:
                try:
                    dev.off()
                finally:
                    dev.close()
            if devices:
                self._state = IndicatorState.OFF
                logger.info("indicator: off (pins released)")
