"""Retake reasons in the technician's words, one owner for the page, the API and the CLI:
the quality gate's, and cell analysis's own."""

from __future__ import annotations

from typing import Any

from leukoscope.analysis.cells import RETAKE_MESSAGES
from leukoscope.analysis.quality import RetakeReason

#: Reason code -> what the technician is told (cell analysis's sentences are its own).
RETAKE_REASONS: dict[str, str] = {
    RetakeReason.TOO_DARK: "too dark: more light or a longer exposure",
    RetakeReason.TOO_BRIGHT: "too bright: less light or a shorter exposure",
    RetakeReason.EMPTY_FIELD: "empty field: move to a field with cells",
    RetakeReason.NO_STAINED_CELLS: "no stained cells: check the stain",
    RetakeReason.OUT_OF_FOCUS: "out of focus: focus, then retake",
    RetakeReason.SCALE_CHANGED: "scale differs from the calibration: zoom or objective changed?",
    **{str(code): words for code, words in RETAKE_MESSAGES.items()},
}


def reason_text(code: Any) -> str:
    """A retake reason in words (an unknown code as it is)."""
    return RETAKE_REASONS.get(str(code), str(code))
