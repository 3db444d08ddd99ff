"""Retake reasons in words for the page and the API; the words are `analysis.reasons`'s."""

from __future__ import annotations

from leukoscope.analysis.reasons import RETAKE_REASONS, reason_text

__all__ = ["RETAKE_REASONS", "reason_text"]
