"""The appliance's subcommands: `run`, `check-config`, `capture`, `bench-daemon`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from leukoscope.app import EXIT_CONFIG, run
from leukoscope.appliance.control import request
from leukoscope.bench.daemon import bench_daemon
from leukoscope.cli.args import one_line, positive_int, positive_seconds
from leukoscope.cli.sample import sample_line
from leukoscope.config import Config, config_path, load_config
from leukoscope.core.errors import ConfigError

logger = logging.getLogger(__name__)


def _load(args: argparse.Namespace) -> Config:
    return load_config(config_path(args.config))


def cmd_run(args: argparse.Namespace) -> int:
    """Run the appliance daemon in the foreground until SIGTERM."""
    try:
        cfg = _load(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    # journald stamps every line itself; a terminal wants the time.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else cfg.daemon.log_level.upper(),
        format=stamp + "%(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
        force=True,
    )
    logger.info("config %s", cfg.source)
    return run(cfg)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file and print what it selects."""
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.file}: ok (camera {cfg.camera.backend}, pins {cfg.gpio.pin_factory}, "
        f"bundle {cfg.paths.bundle}, state {cfg.paths.state_dir})"
    )
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    """Ask the running daemon for a capture; print the result as JSON, or for a field of a
    sample its line and the sample's."""
    cfg = _load(args)
    if args.via_button:
        payload: dict[str, Any] = {"cmd": "press-button", "wait_s": args.timeout}
    else:
        payload = {"cmd": "capture", "sample_id": args.sample_id}
    reply = request(cfg.paths.control_socket, payload, timeout=args.timeout + 5)
    if args.via_button and reply.get("ok"):
        reply = {"ok": True, "result": reply["state"]["last_result"]}
    result = reply.get("result") or {}
    if args.json or not reply.get("ok") or not result.get("field"):
        print(json.dumps(reply, indent=2))
    else:
        # A field of a sample: what became of it, then where the sample stands.
        print(one_line(f"record {result.get('id')}: {result['field']['message']}"))
        if result.get("sample"):
            print(sample_line(result["sample"]))
    return 0 if reply.get("ok") else 1


def cmd_status(args: argparse.Namespace) -> int:
    """Print the running daemon's state as JSON."""
    reply = request(_load(args).paths.control_socket, {"cmd": "status"}, timeout=10)
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def cmd_bench_daemon(args: argparse.Namespace) -> int:
    """Time the real daemon on replay stills (see leukoscope.bench.daemon)."""
    return bench_daemon(args.bundle, captures=args.captures, workdir=args.workdir)


def add_subcommands(sub: Any) -> None:
    """Register the appliance's subcommands on the `leukoscope` parser."""
    cfg_help = "config file (default: $LEUKOSCOPE_CONFIG or /etc/leukoscope/config.toml)"

    p = sub.add_parser("run", help="run the appliance daemon (foreground)")
    p.add_argument("--config", type=Path, default=None, help=cfg_help)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("capture", help="ask the running daemon to take and analyse a photo")
    p.add_argument("--config", type=Path, default=None, help=cfg_help)
    p.add_argument(
        "--sample-id",
        default=None,
        help="add the photo to this sample as a field (a new id starts the sample); "
        "prints the field's and the sample's lines",
    )
    p.add_argument("--json", action="store_true", help="print the whole reply as JSON")
    p.add_argument(
        "--via-button",
        action="store_true",
        help="press the mock GPIO button instead (gpio.pin_factory = 'mock' only)",
    )
    p.add_argument("--timeout", type=positive_seconds, default=60.0, help="seconds to wait")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("status", help="print the running daemon's state")
    p.add_argument("--config", type=Path, default=None, help=cfg_help)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "bench-daemon", help="trigger-to-indicator timings and peak RSS on 5 MP replay stills"
    )
    p.add_argument("--bundle", type=Path, default=None, help="model bundle folder")
    p.add_argument("--captures", type=positive_int, default=40)
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: temp)")
    p.set_defaults(func=cmd_bench_daemon)
