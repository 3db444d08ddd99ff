"""The TFLite runtime shim: ai-edge-litert, or the older tflite_runtime, imported lazily."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from leukoscope.core.errors import RuntimeMissingError

#: Modules tried in order; each must expose `Interpreter`.
RUNTIME_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
#: The runtime's C++ notes ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."):
#: written straight to file descriptor 2, past Python's logging, on every model load.
RUNTIME_INFO_PREFIX = b"INFO: "

_stderr_lock = threading.Lock()


def interpreter_class() -> tuple[Any, str]:
    """Return (Interpreter class, module name) of the first runtime that imports."""
    errors = []
    for name in RUNTIME_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        return module.Interpreter, name
    raise RuntimeMissingError(
        "no TFLite runtime: install the device extra (pip install 'leukoscope[device]') "
        "or tflite_runtime; tried " + "; ".join(errors)
    )


@contextlib.contextmanager
def runtime_notes_silenced() -> Iterator[None]:
    """Hold back the runtime's INFO notes while it builds an interpreter; let the rest out.

    The runtime writes them from C++ to file descriptor 2, so Python cannot filter them:
    fd 2 goes to a temporary file for the duration, and afterwards every line but those
    notes is written to the real stderr (a warning or an error stays visible, only later).
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to filter
        yield
        return
    with _stderr_lock, tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line
                for line in held.read().splitlines(keepends=True)
                if not line.startswith(RUNTIME_INFO_PREFIX)
            ]
            if kept:
                os.write(2, b"".join(kept))
