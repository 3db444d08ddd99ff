"""Retake reasons in the technician's words: the quality gate's, and cell analysis's own."""

from __future__ import annotations

from typing import Any

from leukoscope.analysis.cells import RETAKE_MESSAGES

#: Reason code -> what the page says (cell analysis's sentences are its own).
RETAKE_REASONS = {
    "too-dark": "too dark: more light or a longer exposure",
    "too-bright": "too bright: less light or a shorter exposure",
    "empty-field": "empty field: move to a field with cells",
    "no-stained-cells": "no stained cells: check the stain",
    "out-of-focus": "out of focus: focus, then retake",
    "scale-changed": "scale differs from the calibration: zoom or objective changed?",
    **{str(code): words for code, words in RETAKE_MESSAGES.items()},
}


def reason_text(code: Any) -> str:
    """A retake reason in words (an unknown code as it is)."""
    return RETAKE_REASONS.get(str(code), str(code))
