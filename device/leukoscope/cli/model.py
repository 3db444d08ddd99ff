"""`leukoscope model install|list|activate|rollback|verify`: the device side of updates.

Maintainers run these over SSH as the appliance's user (see systemd/leukoscope.sudoers);
`leukoscope-tools push` runs `install`. Progress goes to stdout and a refusal to stderr,
so both reach the maintainer's terminal. Exit status: 0 ok, 1 verification failed,
2 refused (nothing changed), 3 the daemon did not take the model and it was rolled back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from leukoscope.cli.args import add_config_argument
from leukoscope.config import DEFAULT_CONFIG_PATH, config_path, load_config
from leukoscope.core.errors import LeukoscopeError
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import MANIFEST
from leukoscope.model.store import (
    ACTIVE,
    PREVIOUS,
    ModelStore,
    ModelStoreError,
    RolledBackError,
    settings_from_config,
)

EXIT_ROLLED_BACK = 3


def add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `model` and its subcommands to the `leukoscope` parser."""
    p = sub.add_parser("model", help="install, list, activate, roll back and verify models")
    add_config_argument(p)
    msub = p.add_subparsers(dest="model_command", required=True)
    q = msub.add_parser("install", help="check a bundle folder and add it to the store")
    add_config_argument(q)
    q.add_argument("bundle", type=Path, help="bundle folder (e.g. an uploaded one)")
    q.add_argument("--activate", action="store_true", help="also make it the running model")
    q = msub.add_parser("list", help="installed models, the active one, what the daemon runs")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    add_config_argument(q)
    q = msub.add_parser("activate", help="make an installed model the running one")
    q.add_argument("version", help="version id (or a unique prefix, or NAME-VERSION)")
    add_config_argument(q)
    q = msub.add_parser("rollback", help="go back to the previous model")
    add_config_argument(q)
    q = msub.add_parser("verify", help="re-check installed models (all by default) or a folder")
    q.add_argument("targets", nargs="*", metavar="VERSION|FOLDER")
    add_config_argument(q)
    p.set_defaults(func=cmd_model)


def cmd_model(args: argparse.Namespace) -> int:
    """Load the config and run one model subcommand."""
    if (
        args.config is not None
        and Path(args.config).absolute() != DEFAULT_CONFIG_PATH
        and "SUDO_USER" in os.environ
        and os.geteuid() != 0
    ):
        # The sudo rule lets maintainers run these as the appliance's user; another config
        # could name no allowed signers and so skip the signature check.
        raise ModelStoreError(
            f"--config other than {DEFAULT_CONFIG_PATH} is not allowed through sudo"
        )
    store = ModelStore(settings_from_config(load_config(config_path(args.config))))
    cmd = args.model_command
    if cmd == "list":
        return cmd_list(store, args.json)
    if cmd == "verify":
        return cmd_verify(store, args.targets)
    return cmd_change(store, args)


def _print(msg: str) -> None:
    print(msg, flush=True)


def _short(sha: str) -> str:
    return sha[:12]


def cmd_list(store: ModelStore, as_json: bool) -> int:
    """Print the installed versions, which is active and previous, and what the daemon runs."""
    versions = store.list()
    status = store.daemon.status()
    running = None
    if status is not None:
        running = {"model": status.get("model"), "model_error": status.get("model_error")}
    if as_json:
        doc = {
            "store": str(store.root),
            "active": store.link(ACTIVE),
            "previous": store.link(PREVIOUS),
            "versions": [v.as_json() for v in versions],
            "daemon": running,
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"model store {store.root}")
    if not versions:
        print("  no models installed")
    for v in versions:
        mark = "active  " if v.active else "previous" if v.previous else "        "
        signer = f"  signed by {v.signer}" if v.signer else ""
        print(
            f"  {mark}  {v.id}  ({v.name} {v.version}, sha256 {_short(v.model_sha256)}, "
            f"installed {v.installed_at[:19] or '?'}{signer})"
        )
    if running is None:
        print("daemon: not running (or its control socket does not answer)")
    else:
        m = running["model"] or {}
        line = f"daemon: runs {m.get('name')} {m.get('version')} (sha256 {m.get('sha256')})"
        if running["model_error"]:
            line += f"; last reload failed: {running['model_error']}"
        print(line)
    return 0


def cmd_verify(store: ModelStore, targets: list[str]) -> int:
    """Re-check installed versions (all by default) or a bundle folder; 1 if any fails."""
    failed = 0
    for target in targets or [v.id for v in store.list()]:
        try:
            if os.sep in target or (Path(target) / MANIFEST).is_file():
                signer = store.check_signature(Path(target))
                bundle = load_bundle(Path(target))
                by = f", signed by {signer}" if signer else ""
                _print(f"{target}: {bundle.label} ok{by}")
            else:
                v, summary = store.verify(target)
                _print(f"{v.id}: {summary}")
        except LeukoscopeError as exc:
            failed += 1
            _print(f"{target}: FAILED: {exc}")
    if failed:
        print(f"{failed} bundle(s) failed verification", file=sys.stderr)
    return 1 if failed else 0


def cmd_change(store: ModelStore, args: argparse.Namespace) -> int:
    """install, activate or rollback; a rollback by the daemon's refusal exits 3."""
    try:
        if args.model_command == "install":
            v = store.install(args.bundle, activate=args.activate, report=_print)
            state = "active" if v.active else "installed, not active"
            _print(f"ok: {v.id} ({state})")
        elif args.model_command == "activate":
            v = store.activate(args.version, report=_print)
            _print(f"ok: {v.id} is active")
        else:
            v = store.rollback(report=_print)
            _print(f"ok: rolled back to {v.id}")
    except RolledBackError as exc:
        print(f"error: rolled back: {exc}", file=sys.stderr)
        return EXIT_ROLLED_BACK
    return 0
