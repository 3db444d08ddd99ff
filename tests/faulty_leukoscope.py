"""`leukoscope` with a fault injected into model installs, for the crash tests.

    python tests/faulty_leukoscope.py FAULT ARGS...
    FAULT: crash:STEP | corrupt-after-switch | camera-gone-after-switch

runs `leukoscope ARGS...` whose model store SIGKILLs itself when an install reaches STEP
(`leukoscope.model.store.STEPS`), or truncates the new model right after the switch, as a
failing SD card would, so the daemon's own check refuses it. The production code only
offers the step observer (`ModelStore(on_step=...)`); the faults live here.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leukoscope.cli.main import main
from leukoscope.model import store as model_store


def kill_at(step: str) -> Callable[[str], None]:
    """An `on_step` that SIGKILLs this process when the install reaches `step`."""
    if step not in model_store.STEPS:
        raise ValueError(f"unknown step {step!r} (steps: {', '.join(model_store.STEPS)})")

    def on_step(reached: str) -> None:
        if reached == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_step


def corrupt_after_switch(store_dir: Path) -> Callable[[str], None]:
    """An `on_step` that damages the newly active model just before the daemon reloads."""

    def on_step(reached: str) -> None:
        if reached == "reload":
            with (store_dir / model_store.ACTIVE / "model.tflite").open("r+b") as f:
                f.truncate(64)

    return on_step


def camera_gone_after_switch() -> Callable[[str], None]:
    """An `on_step` that renames the replay camera's folder when an install switches."""
    from leukoscope.config import config_path, load_config

    def on_step(reached: str) -> None:
        folder = load_config(config_path(None)).camera.replay.folder
        if reached == "reload" and folder is not None and folder.is_dir():
            folder.rename(folder.with_name(folder.name + ".gone"))

    return on_step


def _with_fault(fault: str) -> None:
    """Make every ModelStore this process builds carry the fault."""
    original = model_store.ModelStore.__init__

    def init(self: model_store.ModelStore, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if fault == "corrupt-after-switch":
            self._on_step = corrupt_after_switch(self.root)
        elif fault == "camera-gone-after-switch":
            self._on_step = camera_gone_after_switch()
        elif fault.startswith("crash:"):
            self._on_step = kill_at(fault.removeprefix("crash:"))
        else:
            raise SystemExit(f"unknown fault {fault!r}")

    model_store.ModelStore.__init__ = init  # type: ignore[method-assign, unused-ignore]


if __name__ == "__main__":
    _with_fault(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
