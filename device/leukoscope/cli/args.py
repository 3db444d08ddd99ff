"""Argument types shared by the command-line tools (a bad number is a usage error), and
one-line output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from leukoscope.config import PX_PER_UM_RANGE
from leukoscope.core.errors import LeukoscopeError

#: --config's help wherever it is taken.
CONFIG_HELP = "config file (default: $LEUKOSCOPE_CONFIG, else /etc/leukoscope/config.toml)"

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


def file_error_line(path: Path, exc: BaseException | str) -> str:
    """`PATH: error: why` on one line, the path said once (most errors start with it)."""
    text = str(exc)
    prefix = f"{path}: "
    if text.startswith(prefix):
        text = text[len(prefix) :]
    return one_line(f"{path}: error: {text}")


def add_config_argument(p: argparse.ArgumentParser, help: str = CONFIG_HELP) -> None:
    """`--config FILE`, taken the same way by every command, before or after its name.

    The top-level parser sets the default (None); a subcommand's copy is SUPPRESSed unless
    given, so `leukoscope --config F model list` and `leukoscope model list --config F`
    mean the same and neither resets the other.
    """
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="FILE", help=help)


def add_image_arguments(
    p: argparse.ArgumentParser, *, bundle_help: str, scale_help: str, json: bool = True
) -> None:
    """The options every command that analyses image files takes, worded the same way:
    the bundle, interpreter threads, JSON Lines and a calibrated scale."""
    p.add_argument("--bundle", type=Path, default=None, help=bundle_help)
    p.add_argument("--threads", type=thread_count, default=1, help="interpreter threads")
    if json:
        p.add_argument("--json", action="store_true", help="JSON Lines output")
    p.add_argument(
        "--px-per-um", type=px_per_um_arg, default=None, metavar="SCALE", help=scale_help
    )


def run_command(
    func: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    errors: tuple[type[Exception], ...] = (LeukoscopeError,),
) -> int:
    """Run a subcommand: `errors` and unusable paths become one "error:" line and exit 2,
    Ctrl-C exit 130 (the convention of `leukoscope` and `leukoscope-tools` alike)."""
    try:
        return int(func(args))
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave that cannot be used: say which and why
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
