"""The `leukoscope-tools` command: dataset, train, quantize, bundle, evaluate, compare, cells."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import shlex
import sys
from pathlib import Path
from types import ModuleType

from leukoscope.cli.args import run_command
from leukoscope.core.errors import LeukoscopeError
from leukoscope_tools.data import cells as cell_dataset
from leukoscope_tools.data import idb2_sources
from leukoscope_tools.data.photos import build_table, read_table, write_table
from leukoscope_tools.evaluate import (
    cell_compare,
    cell_experiment,
    cell_sources,
    detection,
    detector_check,
    sample_validation,
)
from leukoscope_tools.evaluate.compare import run_compare
from leukoscope_tools.evaluate.field import reevaluate
from leukoscope_tools.ship import cells as cell_ship
from leukoscope_tools.ship.push import DEFAULT_INCOMING, DEFAULT_REMOTE, SshOptions, push
from leukoscope_tools.ship.quantize import quantize_run
from leukoscope_tools.ship.report import make_bundle, metrics_table
from leukoscope_tools.ship.sign import allowed_signers_line, fingerprint, sign_bundle
from leukoscope_tools.train import cells as cell_train
from leukoscope_tools.train.field import TrainConfig, train_on_table

logger = logging.getLogger(__name__)

DEFAULT_TABLE = Path(".run/split.csv")


def cmd_dataset(args: argparse.Namespace) -> int:
    """Index, find duplicates and overlaps, split by group, write the table."""
    label_map = None
    if args.label_map:
        label_map = dict(item.split("=", 1) for item in args.label_map.split(","))
    rows, summary = build_table(
        args.root,
        args.sources,
        seed=args.seed,
        label_map=label_map,
        overlap_sources=args.overlap_sources,
    )
    write_table(rows, args.out)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"wrote {args.out}: {summary['images']} images in {summary['groups']} groups, "
        f"{summary['exact_duplicates_dropped']} exact copies dropped, "
        f"{len(summary['near_duplicate_pairs'])} near-duplicate and "
        f"{len(summary['overlap_pairs'])} overlapping-field pairs grouped"
    )
    for split, counts in summary["counts"].items():
        print(f"  {split}: {counts}")
    return 0


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        arch=args.arch,
        seed=args.seed,
        max_epochs=args.max_epochs,
        patience=args.patience,
        epoch_size=args.epoch_size,
        train_sources=args.train_sources,
    )


def cmd_train(args: argparse.Namespace) -> int:
    """Train one network on the table's training split."""
    cfg = _train_config(args)
    result = train_on_table(read_table(args.table), args.data, cfg, args.out)
    print(
        f"{args.out}: best epoch {result.best_epoch}, validation AUC {result.best_val_auc}, "
        f"{result.seconds:.0f} s"
    )
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    """Convert a run to int8 TFLite and check its agreement with the Keras model."""
    report = quantize_run(
        args.run, read_table(args.table), args.data, min_agreement=args.min_agreement
    )
    print(
        f"{args.run}: int8 agrees with Keras on {report['agreement']:.2%} of "
        f"{report['n']} test images; largest probability difference "
        f"{report['max_abs_diff']:.4f}; {report['bytes']} bytes"
    )
    return 0 if report["agreement"] >= args.min_agreement else 1


def cmd_bundle(args: argparse.Namespace) -> int:
    """Choose thresholds on validation, evaluate, write figures, report, card and bundle."""
    out = make_bundle(
        args.run,
        read_table(args.table),
        args.data,
        args.out,
        cross_runs=args.cross,
        version=args.version,
    )
    print(f"wrote {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Re-evaluate a bundle on its recorded test split and compare with its manifest."""
    now, diffs = reevaluate(args.bundle, args.data)
    if now:
        sections = {"test all": now["overall"]}
        sections.update({f"test {k}": v for k, v in now["per_source"].items()})
        sections.update({f"test {k}": v for k, v in now["per_camera"].items()})
        print(metrics_table(sections))
    if diffs:
        for line in diffs:
            print(f"MISMATCH {line}")
        return 1
    print(f"{args.bundle}: re-evaluation matches the manifest's metrics")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """The three architectures and several seeds on one split, plus the paper's protocol."""
    path = run_compare(
        read_table(args.table),
        args.data,
        args.out,
        seeds=args.seeds,
        archs=args.archs,
        max_epochs=args.max_epochs,
        epoch_size=args.epoch_size,
    )
    print(f"wrote {path}")
    return 0


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-epochs", type=int, default=12)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument(
        "--epoch-size", type=int, default=1024, help="training images drawn per epoch (0: all)"
    )


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign a bundle's manifest with an SSH key (manifest.json.sig)."""
    sig = sign_bundle(args.bundle, args.key)
    print(f"signed {args.bundle} with {fingerprint(args.key)}: {sig}")
    print("a Pi trusts this key with this line in its allowed_signers file:")
    print(f"  {allowed_signers_line(args.key, args.principal)}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """Copy a bundle to Pis over SSH and install it there; non-zero if any host failed."""
    ssh = SshOptions(
        port=args.port,
        identity=args.identity,
        options=tuple(args.ssh_option),
        limit_kbps=args.limit_kbps,
    )
    results = push(
        args.bundle, args.hosts, ssh=ssh, activate=args.activate,
        incoming=args.incoming or DEFAULT_INCOMING, remote=args.remote_leukoscope or DEFAULT_REMOTE,
    )  # fmt: skip
    for r in results:
        print(f"{r.host}: {'ok' if r.ok else 'FAILED'}: {r.message}", flush=True)
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"{failed} of {len(results)} host(s) failed", file=sys.stderr)
    return 1 if failed else 0


#: `leukoscope-tools cells STEP ...`: each step's module, and its one-line help.
CELL_STEPS: dict[str, tuple[ModuleType, str]] = {
    "dataset": (cell_dataset, "cache every photo's cell crops and labels"),
    "train": (cell_train, "train one cell classifier on the cached crops"),
    "compare": (cell_compare, "compare cells, whole-field and count; write COMPARE.md"),
    "sources": (cell_sources, "judge cell runs per source and left-out source, cell by cell"),
    "ship": (cell_ship, "export the best seed and write the cells bundle"),
    "eval": (detection, "measure white-cell detection on ALL-IDB1"),
    "check-eval": (detector_check, "measure the not-a-white-cell check, before and after"),
    "experiment": (cell_experiment, "the ALL-IDB1-only cell classifier experiment"),
    "idb2-sources": (idb2_sources, "locate ALL-IDB2 crops on their ALL-IDB1 slides"),
    "samples": (sample_validation, "choose and validate the sample rule; write samples.md"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="leukoscope-tools", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("dataset", help="index folders and write a group-disjoint split")
    p.add_argument("root", type=Path, help="data root holding one folder per source")
    p.add_argument(
        "--sources",
        nargs="+",
        default=["kaggle-all", "all-idb1"],
        help="source folders (ALL-IDB2 cell crops and unlabelled BCCD stay out)",
    )
    p.add_argument(
        "--overlap-sources",
        nargs="*",
        default=["all-idb1"],
        help="sources whose fields are feature-matched for overlaps",
    )
    p.add_argument("--label-map", default="", help="folder=label,... (default: built in)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_TABLE)
    p.set_defaults(func=cmd_dataset)

    p = sub.add_parser("train", help="train one network")
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--arch", choices=["basic-cnn", "alexnet", "thanh"], default="thanh")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-sources",
        nargs="+",
        default=None,
        help="train and validate on these sources only (cross-source runs)",
    )
    p.add_argument("--out", type=Path, required=True)
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("quantize", help="int8 TFLite of a run, with a parity check")
    p.add_argument("run", type=Path)
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--min-agreement", type=float, default=0.99)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("bundle", help="evaluate a quantized run and write its bundle")
    p.add_argument("run", type=Path)
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument(
        "--cross",
        nargs="*",
        type=Path,
        default=[],
        help="cross-source runs (trained without a source) to report",
    )
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser("evaluate", help="re-evaluate a bundle on its recorded test split")
    p.add_argument("bundle", type=Path)
    p.add_argument("data", type=Path)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="architectures, seeds and the paper's protocol")
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--archs", nargs="+", default=["thanh", "basic-cnn", "alexnet"])
    p.add_argument("--seeds", type=int, default=3, help="seeds for the first architecture")
    p.add_argument("--max-epochs", type=int, default=12)
    p.add_argument("--epoch-size", type=int, default=1024)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sign", help="sign a bundle with your SSH key (for the Pis to check)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--key", type=Path, default=Path("~/.ssh/id_ed25519"), help="private key")
    p.add_argument("--principal", default=getpass.getuser(), help="name in allowed_signers")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("push", help="send a bundle to Pis over SSH and install it")
    p.add_argument("bundle", type=Path)
    p.add_argument("hosts", nargs="+", metavar="HOST", help="[user@]host, as for ssh")
    p.add_argument("--activate", action="store_true", help="make it the running model")
    p.add_argument("-p", "--port", type=int, default=None, help="SSH port")
    p.add_argument("-i", "--identity", type=Path, default=None, help="SSH identity file")
    p.add_argument(
        "-o", "--ssh-option", action="append", default=[], metavar="OPT",
        help="an ssh -o option, e.g. StrictHostKeyChecking=yes (repeatable)",
    )  # fmt: skip
    p.add_argument("--limit-kbps", type=int, default=None, help="upload limit (Kbit/s)")
    p.add_argument(
        "--incoming", default=None, help="upload folder on the Pi (/var/lib/leukoscope-incoming)"
    )
    p.add_argument(
        "--remote-leukoscope", default=None, metavar="CMD",
        help="how the Pi runs `leukoscope` (default: as user leukoscope through sudo -n)",
    )  # fmt: skip
    p.set_defaults(func=cmd_push)

    p = sub.add_parser(
        "cells",
        help="cell mode: dataset, train, compare, ship, ... (STEP --help for each)",
        description="Cell mode, step by step: `dataset` caches every photo's cell crops, "
        "`train` trains one cell classifier, `compare` writes the comparison report, "
        "`ship` exports the best seed and writes the cells bundle (see tools/reproduce.sh); "
        "`eval` measures the white-cell detector, `check-eval` the check after it, "
        "`experiment` is the first ALL-IDB1-only classifier, `idb2-sources` places ALL-IDB2's "
        "crops on their slides, `samples` chooses "
        "and validates the sample rule on simulated multi-field samples.",
    )
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")
    for name, (module, summary) in CELL_STEPS.items():
        doc = module.__doc__ or summary
        step = steps.add_parser(
            name,
            help=summary,
            description=doc.split("\n\n")[0],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(step)
        step.set_defaults(func=module.run_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `leukoscope-tools` console script."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    # What a report records as the command that made it: the arguments really given.
    args.invocation = shlex.join(["leukoscope-tools", *argv])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return run_command(args.func, args, (LeukoscopeError, ValueError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
