"""The TFLite runtime shim: ai-edge-litert, or the older tflite_runtime, imported lazily."""

from __future__ import annotations

import importlib
from typing import Any

from leukoscope.core.errors import RuntimeMissingError

#: Modules tried in order; each must expose `Interpreter`.
RUNTIME_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


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
