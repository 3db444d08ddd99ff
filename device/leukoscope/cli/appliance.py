"""The appliance's subcommands: `run`, `check-config`, `capture`, `bench-daemon`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from leukoscope.analysis.reasons import reason_text
from leukoscope.app import EXIT_CONFIG, run
from leukoscope.appliance.control import request
from leukoscope.bench.daemon import STILL_SIZE, bench_daemon, parse_size
from leukoscope.cli.args import (
    add_config_argument,
    one_line,
    positive_int,
    positive_seconds,
    px_per_um_arg,
)
from leukoscope.cli.sample import sample_line
from leukoscope.config import Config, config_path, load_config
from leukoscope.core.errors import ConfigError, LeukoscopeError
from leukoscope.core.imageio import iter_image_paths
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import sample_spec

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
    """Validate a config file and that what it names can be used; print what it selects."""
    if args.file is not None and args.config is not None and args.file != args.config:
        print(f"error: two configs given ({args.file} and --config {args.config})", file=sys.stderr)
        return 2
    path = config_path(args.file if args.file is not None else args.config)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    problems = check_paths(cfg)
    for problem in problems:
        print(one_line(f"error: {path}: {problem}"), file=sys.stderr)
    if problems:
        return 1
    print(
        f"{path}: ok (camera {cfg.camera.backend}, pins {cfg.gpio.pin_factory}, "
        f"bundle {cfg.paths.bundle}, state {cfg.paths.state_dir})"
    )
    return 0


def _usable_dir(path: Path) -> str | None:
    """Why the daemon could not create or write to folder `path`; None if it can."""
    if path.exists():
        if not path.is_dir():
            return f"{path} is not a folder"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable by this user"
        return None
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} does not exist and cannot be created ({parent} is not writable)"
    return None


def _readable_file(path: Path) -> str | None:
    if not path.is_file():
        return f"{path} does not exist" if not path.exists() else f"{path} is not a file"
    if not os.access(path, os.R_OK):
        return f"{path} is not readable by this user"
    return None


def check_paths(cfg: Config) -> list[str]:
    """What the daemon would fail on at start, checked now: each a key and what is wrong."""
    problems = []
    why = _usable_dir(cfg.paths.state_dir)
    if why:
        problems.append(f"paths.state_dir: {why}")
    replay = cfg.camera.replay.folder if cfg.camera.backend == "replay" else None
    if replay is not None:
        if not replay.is_dir():
            problems.append(f"camera.replay.folder: {replay} is not a folder (does it exist?)")
        elif not os.access(replay, os.R_OK | os.X_OK):
            problems.append(f"camera.replay.folder: {replay} is not readable by this user")
        elif not iter_image_paths([replay]):
            problems.append(f"camera.replay.folder: {replay} holds no images")
    for key, file in (
        ("camera.blank_field", cfg.camera.blank_field),
        ("model.allowed_signers", cfg.model.allowed_signers),
    ):
        why = None if file is None else _readable_file(file)
        if why:
            problems.append(f"{key}: {why}")
    try:
        bundle = load_bundle(cfg.paths.bundle, num_threads=cfg.model.threads)
        sample_spec(bundle.manifest, cfg.sample)
    except LeukoscopeError as exc:
        why = str(exc).removeprefix(f"{cfg.paths.bundle}: ")
        problems.append(f"paths.bundle: {cfg.paths.bundle} cannot be loaded: {why}")
    return problems


#: A record's outcome in the technician's words.
OUTCOME_WORDS = {
    "no-leukemia-suspected": "no leukemia suspected",
    "leukemia-suspected": "LEUKEMIA SUSPECTED: refer",
    "indeterminate": "indeterminate: take more fields or refer",
    "retake": "retake",
    "error": "error",
}


def local_time(stamp: Any) -> str:
    """An ISO UTC stamp in this machine's local time, to the second (as it is if unreadable)."""
    try:
        when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return str(stamp)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def result_line(result: dict[str, Any]) -> str:
    """One record in a line: the verdict in words, the record id, the score, the time."""
    outcome = str(result.get("outcome"))
    words = OUTCOME_WORDS.get(outcome, outcome)
    detail = []
    if outcome == "retake":
        detail.append("; ".join(reason_text(r) for r in result.get("retake_reasons") or []))
    elif outcome == "error" and result.get("error"):
        detail.append(str(result["error"]))
    if isinstance(result.get("p_leukemia"), int | float):
        detail.append(f"leukemia score {result['p_leukemia']:.3f}")
    cells = result.get("cells")
    if outcome != "retake" and isinstance(cells, dict) and isinstance(cells.get("n_found"), int):
        n_blasts = cells.get("n_blasts")
        blasts = f", {n_blasts} blast{'' if n_blasts == 1 else 's'}" if n_blasts is not None else ""
        detail.append(f"{cells['n_found']} white cells{blasts}")
    if result.get("sample_id"):
        detail.append(f"sample {result['sample_id']}")
    inner = f" ({'; '.join(d for d in detail if d)})" if any(detail) else ""
    return one_line(
        f"{words}{inner} - record {result.get('id')}, {local_time(result.get('created_at'))}"
    )


def cmd_capture(args: argparse.Namespace) -> int:
    """Ask the running daemon for a capture; print one line (the verdict in words, the
    record, the score, the time), for a field of a sample also the sample's line, or with
    --json the whole reply."""
    cfg = _load(args)
    if args.via_button:
        payload: dict[str, Any] = {"cmd": "press-button", "wait_s": args.timeout}
    else:
        payload = {"cmd": "capture", "sample_id": args.sample_id}
    reply = request(cfg.paths.control_socket, payload, timeout=args.timeout + 5)
    if args.via_button and reply.get("ok"):
        reply = {"ok": True, "result": reply["state"]["last_result"]}
    result = reply.get("result") or {}
    if args.json:
        print(json.dumps(reply, indent=2))
    elif not reply.get("ok"):
        print(one_line(f"error: {reply.get('error')}"), file=sys.stderr)
    elif not result:
        print("the daemon answered without a result (none taken yet?)")
    else:
        print(result_line(result))
        if result.get("field"):  # a field of a sample: what became of it, then the sample
            print(one_line(f"record {result.get('id')}: {result['field']['message']}"))
            if result.get("sample"):
                print(sample_line(result["sample"]))
    return 0 if reply.get("ok") else 1


def status_line(state: dict[str, Any]) -> str:
    """The daemon's state in a line: ready or not (and why), the model, the last result."""
    faults = state.get("faults") or {}
    head = "ready" if state.get("ready") else f"not ready ({state.get('phase')})"
    if faults:
        head += ": " + "; ".join(f"{k}: {v}" for k, v in faults.items())
    model = state.get("model") or {}
    parts = [head]
    if model:
        parts.append(f"model {model.get('name')} {model.get('version')}")
    counts = state.get("counts") or {}
    parts.append(f"{sum(int(n) for n in counts.values())} photo(s) since start")
    last = state.get("last_result")
    parts.append(f"last: {result_line(last)}" if last else "no photo taken yet")
    return one_line("; ".join(parts))


def cmd_status(args: argparse.Namespace) -> int:
    """Print the running daemon's state in a line, or as JSON with --json."""
    reply = request(_load(args).paths.control_socket, {"cmd": "status"}, timeout=10)
    if args.json:
        print(json.dumps(reply, indent=2))
    elif not reply.get("ok"):
        print(one_line(f"error: {reply.get('error')}"), file=sys.stderr)
    else:
        print(status_line(reply.get("state") or {}))
    return 0 if reply.get("ok") else 1


def cmd_bench_daemon(args: argparse.Namespace) -> int:
    """Time the real daemon on replay stills (see leukoscope.bench.daemon)."""
    return bench_daemon(
        args.bundle,
        captures=args.captures,
        workdir=args.workdir,
        size=args.size,
        px_per_um=args.px_per_um,
    )


def _still_size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_subcommands(sub: Any) -> None:
    """Register the appliance's subcommands on the `leukoscope` parser."""
    p = sub.add_parser("run", help="run the appliance daemon (foreground, until SIGTERM)")
    add_config_argument(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check-config",
        help="validate a config and that its paths can be used (exit 1 if not)",
        description="Check a config file: its keys and values, then that the daemon could "
        "use what it names (the state folder, the replay folder, the model bundle, ...).",
    )
    p.add_argument(
        "file", type=Path, nargs="?", default=None, help="the config (or give --config FILE)"
    )
    add_config_argument(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("capture", help="ask the running daemon to take and analyse a photo")
    add_config_argument(p)
    p.add_argument(
        "--sample-id",
        default=None,
        help="add the photo to this sample as a field (a new id starts the sample); "
        "prints the field's and the sample's lines too",
    )
    p.add_argument("--json", action="store_true", help="print the daemon's whole reply as JSON")
    p.add_argument(
        "--via-button",
        action="store_true",
        help="press the mock GPIO button instead (gpio.pin_factory = 'mock' only)",
    )
    p.add_argument("--timeout", type=positive_seconds, default=60.0, help="seconds to wait")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("status", help="print the running daemon's state in a line")
    add_config_argument(p)
    p.add_argument("--json", action="store_true", help="print the whole state as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "bench-daemon", help="trigger-to-indicator timings and peak RSS on replay stills"
    )
    p.add_argument("--bundle", type=Path, default=None, help="model bundle folder")
    p.add_argument("--captures", type=positive_int, default=40)
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: temp)")
    p.add_argument(
        "--size",
        type=_still_size,
        default=STILL_SIZE,
        metavar="WxH",
        help="the stills' size (default 2592x1944; 4056x3040 for the HQ camera's 12 MP)",
    )
    p.add_argument(
        "--px-per-um",
        type=px_per_um_arg,
        default=None,
        metavar="SCALE",
        help="the rig's calibration in the daemon's config (the stills are 12 px/um; "
        "a calibrated rig may decode them at half size)",
    )
    p.set_defaults(func=cmd_bench_daemon)
