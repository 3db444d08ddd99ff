"""GPIO: the pin factory the config names, and the capture button (short and long press)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from gpiozero import Button
from gpiozero.exc import GPIOZeroError
from gpiozero.pins.mock import MockFactory
from gpiozero.pins.native import NativeFactory

from leukoscope.core.errors import GpioError

logger = logging.getLogger(__name__)


def make_pin_factory(name: str) -> Any:
    """The gpiozero pin factory the config names; never a silent fall-back.

    `mock` is gpiozero's own MockFactory (laptops and tests): its pins are real objects
    that a test can drive (`factory.pin(17).drive_low()`) and read (`.state`).

    Raises:
        GpioError: the factory's library is missing or it finds no GPIO chip.
    """
    try:
        if name == "mock":
            return MockFactory()
        if name == "lgpio":
            # Hardware backend: imports lgpio, which exists only on a Pi.
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory()
        if name == "rpigpio":
            # Hardware backend: imports RPi.GPIO, which exists only on a Pi.
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
        if name == "native":
            return NativeFactory()
    except Exception as exc:  # each library fails its own way (ImportError, OSError, ...)
        raise GpioError(f"gpio.pin_factory {name!r} cannot be used: {exc}") from None
    raise GpioError(f"unknown gpio.pin_factory {name!r}")


class CaptureButton:
    """A debounced push button (to ground, internal pull-up) that asks for a capture.

    With `on_long_press`, holding it `long_press_s` or longer calls that instead (the
    appliance starts a new sample); a short press is then known only when the button is
    let go, so `on_press` runs on release. Without it, `on_press` runs on the press.
    With `on_clear_hold`, holding it `clear_hold_s` (5 s) also calls that, once per hold
    (the physical override that clears the page's login lockouts): the long press
    has already started a sample by then.
    """

    def __init__(
        self,
        pin: int,
        *,
        bounce_ms: int,
        pin_factory: Any,
        on_press: Callable[[], None],
        on_long_press: Callable[[], None] | None = None,
        long_press_s: float = 2.0,
        on_clear_hold: Callable[[], None] | None = None,
        clear_hold_s: float = 5.0,
    ) -> None:
        """Claim the pin; the callbacks run on gpiozero's threads, once per debounced press.

        Raises:
            GpioError: the pin cannot be claimed.
        """

        try:
            self._button: Any = Button(
                pin,
                pull_up=True,
                bounce_time=bounce_ms / 1000.0 if bounce_ms else None,
                hold_time=long_press_s,
                pin_factory=pin_factory,
            )
        except (GPIOZeroError, OSError) as exc:
            raise GpioError(f"cannot claim button pin {pin}: {exc}") from None
        self.pin = pin
        self._lock = threading.Lock()
        self._held = False
        self._on_press = on_press
        self._on_long_press = on_long_press
        self._on_clear_hold = on_clear_hold
        self._clear_hold_s = clear_hold_s
        self._timer: threading.Timer | None = None
        if on_long_press is None and on_clear_hold is None:
            self._button.when_pressed = lambda: on_press()
        else:
            self._button.when_pressed = self._pressed
            self._button.when_held = self._long
            self._button.when_released = self._released

    def _pressed(self) -> None:
        with self._lock:
            self._held = False
            if self._on_clear_hold is not None:
                self._timer = threading.Timer(self._clear_hold_s, self._clear_hold)
                self._timer.daemon = True
                self._timer.start()

    def _clear_hold(self) -> None:
        with self._lock:
            self._held = True
        if self._on_clear_hold is not None:
            self._on_clear_hold()

    def _long(self) -> None:
        with self._lock:
            self._held = True
        if self._on_long_press is not None:
            self._on_long_press()

    def _released(self) -> None:
        with self._lock:
            held, self._held = self._held, False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if not held:
            self._on_press()

    def close(self) -> None:
        """Release the pin (idempotent)."""
        if self._button is not None:
            self._button.when_pressed = None
            if self._timer is not None:
                self._timer.cancel()
            if self._on_long_press is not None or self._on_clear_hold is not None:
                self._button.when_held = None
                self._button.when_released = None
            self._button.close()
            self._button = None
