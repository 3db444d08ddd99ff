"""Argument types shared by the command-line tools (a bad number is a usage error), and
one-line output."""

from __future__ import annotations

import argparse

from leukoscope.config import PX_PER_UM_RANGE

#: More interpreter threads than this only slows a Pi down (and a huge count crashes it).
MAX_THREADS = 64


def positive_int(text: str) -> int:
    """An integer of at least 1 (argparse `type=`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is too small: it must be at least 1")
    return value


def positive_seconds(text: str) -> float:
    """A duration in seconds, more than 0 (argparse `type=`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


def thread_count(text: str) -> int:
    """An interpreter thread count in 1..MAX_THREADS (argparse `type=`)."""
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"{value} is too many: at most {MAX_THREADS}")
    return value


def px_per_um_arg(text: str) -> float:
    """A microscope's calibrated scale in pixels per micrometre (argparse `type=`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    lo, hi = PX_PER_UM_RANGE
    if not lo <= value <= hi:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is out of range: {lo}..{hi} pixels per um")
    return value


def one_line(text: str) -> str:
    """`text` with control characters escaped: a newline in a file name must not start a line."""
    return "".join(repr(c)[1:-1] if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in text)
