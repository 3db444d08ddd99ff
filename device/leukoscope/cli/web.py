"""The status page's subcommands: `set-password` and `bench-web`."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from leukoscope.bench import web as bench_web
from leukoscope.cli.args import add_config_argument, positive_int
from leukoscope.config import config_path, load_config
from leukoscope.web.auth import write_password_file


def cmd_set_password(args: argparse.Namespace) -> int:
    """Ask for the status page's password and store its salted hash (mode 0600)."""
    path = args.file or load_config(config_path(args.config)).web.password_file
    try:
        if args.stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass("New status page password: ")
            if getpass.getpass("Again: ") != password:
                print("error: the two passwords differ; nothing changed", file=sys.stderr)
                return 1
    except EOFError:  # Ctrl-D, or no terminal and nothing on stdin
        print("error: no password given (end of input); nothing changed", file=sys.stderr)
        return 1
    try:
        write_password_file(path, password)
    except ValueError as exc:
        print(f"error: {exc}; nothing changed", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write {path}: {exc}", file=sys.stderr)
        return 1
    print(f"password set in {path}; sessions logged in with the old one have ended")
    return 0


def cmd_bench_web(args: argparse.Namespace) -> int:
    """Load-test /api/status on loopback while captures run back to back."""
    return bench_web.main(
        args.bundle,
        clients=args.clients,
        captures=args.captures,
        workdir=args.workdir,
        interval=args.interval,
    )


def add_subcommands(sub: Any) -> None:
    """Register the status page's subcommands on the `leukoscope` parser."""
    p = sub.add_parser("set-password", help="set the status page's password")
    add_config_argument(p)
    p.add_argument("--file", type=Path, default=None, help="hash file (default: web.password_file)")
    p.add_argument("--stdin", action="store_true", help="read the password from stdin (scripts)")
    p.set_defaults(func=cmd_set_password)

    p = sub.add_parser(
        "bench-web", help="/api/status latency under load while captures run (prints figures)"
    )
    p.add_argument("--bundle", type=Path, default=None, help="model bundle folder")
    p.add_argument("--clients", type=positive_int, default=20, help="concurrent clients")
    p.add_argument("--captures", type=positive_int, default=20, help="captures per phase")
    p.add_argument(
        "--interval",
        type=float,
        default=0.3,
        help="seconds between each client's requests in the browser-like phase",
    )
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: temp)")
    p.set_defaults(func=cmd_bench_web)
