"""GPIO: the pin factory the config names, and the capture button."""

from __future__ import annotations

import logging
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
    """A debounced push button (to ground, internal pull-up) that asks for a capture."""

    def __init__(
        self, pin: int, *, bounce_ms: int, pin_factory: Any, on_press: Callable[[], None]
    ) -> None:
        """Claim the pin; `on_press` runs on gpiozero's thread for each debounced press.

        Raises:
            GpioError: the pin cannot be claimed.
        """

        try:
            self._button: Any = Button(
                pin,
                pull_up=True,
                bounce_time=bounce_ms / 1000.0 if bounce_ms else None,
                pin_factory=pin_factory,
            )
        except (GPIOZeroError, OSError) as exc:
            raise GpioError(f"cannot claim button pin {pin}: {exc}") from None
        self.pin = pin
        self._button.when_pressed = lambda: on_press()

    def close(self) -> None:
        """Release the pin (idempotent)."""
        if self._button is not None:
            self._button.when_pressed = None
            self._button.close()
            self._button = None
