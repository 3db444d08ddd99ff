"""The daemon's state, readable from any thread (the control socket, later the status page).

The daemon's work loop is the only writer; readers take `snapshot()`, a plain dict, or
wait for the next result with `wait_for_result()` (long polling without sleeps).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any


class DaemonState:
    """Phase, faults, model, indicator and the latest result, behind one lock."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.started_unix = time.time()
        self.phase = "starting"  # starting, ready, busy, fault, stopping
        self.faults: dict[str, str] = {}
        self.indicator = "off"
        self.leds: dict[str, bool] = {}
        self.camera = ""
        self.model: dict[str, Any] | None = None
        self.model_error: str | None = None
        self.reloads = 0
        self.last_result: dict[str, Any] | None = None
        self.result_seq = 0
        self.counts: Counter[str] = Counter()
        #: Whether the wall clock is trusted, and why ({"trusted", "reason"}).
        self.clock: dict[str, Any] = {"trusted": False, "reason": "not checked yet"}

    def update(self, **fields: Any) -> None:
        """Set some fields at once."""
        with self._cond:
            for key, value in fields.items():
                if not hasattr(self, key):
                    raise AttributeError(key)
                setattr(self, key, value)

    def set_fault(self, part: str, message: str | None) -> bool:
        """Set (or clear, with None) one part's fault; True if that changed anything."""
        with self._cond:
            if message is None:
                return self.faults.pop(part, None) is not None
            changed = self.faults.get(part) != message
            self.faults[part] = message
            return changed

    def add_result(self, result: dict[str, Any]) -> None:
        """Publish a finished capture and wake every waiter."""
        with self._cond:
            self.last_result = result
            self.result_seq += 1
            self.counts[str(result.get("outcome"))] += 1
            self._cond.notify_all()

    def wait_for_result(self, after_seq: int, timeout: float) -> int:
        """Block until a result newer than `after_seq` exists (or timeout); return the seq."""
        with self._cond:
            self._cond.wait_for(lambda: self.result_seq > after_seq, timeout)
            return self.result_seq

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON-ready plain data."""
        with self._cond:
            return {
                "phase": self.phase,
                "ready": self.phase in ("ready", "busy") and not self.faults,
                "faults": dict(self.faults),
                "indicator": self.indicator,
                "leds": dict(self.leds),
                "camera": self.camera,
                "model": None if self.model is None else dict(self.model),
                "model_error": self.model_error,
                "reloads": self.reloads,
                "last_result": self.last_result,
                "result_seq": self.result_seq,
                "counts": dict(self.counts),
                "uptime_s": round(time.time() - self.started_unix, 1),
                "clock": {**self.clock, "now_unix": round(time.time(), 3)},
            }
