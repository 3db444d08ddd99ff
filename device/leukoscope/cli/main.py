"""The `leukoscope` command: run the appliance and talk to it (capture, status, samples,
models, calibration, export), classify photos offline, and benchmark.

`--config FILE` may be given before or after the subcommand."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from leukoscope import __version__
from leukoscope.analysis.analysers import CellAnalyser
from leukoscope.analysis.reasons import reason_text
from leukoscope.bench import cells as bench_cells
from leukoscope.bench import whole_field as bench_whole_field
from leukoscope.cli import appliance as appcli
from leukoscope.cli import calibrate as calibratecli
from leukoscope.cli import classify_cells as cellscli
from leukoscope.cli import export as exportcli
from leukoscope.cli import model as modelcli
from leukoscope.cli import sample as samplecli
from leukoscope.cli import web as webcli
from leukoscope.cli.args import (
    CONFIG_HELP,
    add_image_arguments,
    file_error_line,
    one_line,
    positive_int,
    px_per_um_arg,
    run_command,
    thread_count,
)
from leukoscope.core.errors import LeukoscopeError
from leukoscope.core.imageio import iter_image_paths
from leukoscope.core.synthetic import DEMO_FIELDS, write_demo_images
from leukoscope.model.bundle import load_bundle
from leukoscope.pipeline import analyse

logger = logging.getLogger(__name__)

#: Where a bundle is looked for when neither --bundle nor LEUKOSCOPE_BUNDLE says.
DEFAULT_BUNDLE_CANDIDATES = (Path("/var/lib/leukoscope/models/active"), Path("models/default"))


def default_bundle() -> Path:
    """--bundle's default: $LEUKOSCOPE_BUNDLE, the device's active bundle, or ./models/default."""
    env = os.environ.get("LEUKOSCOPE_BUNDLE")
    if env:
        return Path(env)
    for cand in DEFAULT_BUNDLE_CANDIDATES:
        if cand.exists():
            return cand
    return DEFAULT_BUNDLE_CANDIDATES[-1]


def cmd_classify(args: argparse.Namespace) -> int:
    """Classify image files and folders; one bad file does not stop the others."""
    bundle = load_bundle(args.bundle, num_threads=args.threads)
    m = bundle.manifest
    cells_mode = isinstance(bundle.analyser, CellAnalyser)
    if args.px_per_um is not None and not cells_mode:
        print(
            f"error: --px-per-um applies to cells bundles only ({bundle.label} is "
            f"{m.analysis_mode})",
            file=sys.stderr,
        )
        return 2
    failures = scored = 0
    paths = iter_image_paths(args.paths)
    if not paths:
        print("error: no image files found in the given paths", file=sys.stderr)
        return 2
    for path in paths:
        t0 = time.perf_counter()
        try:
            rgb = bundle.analyser.decode(path)
            pred = analyse(
                rgb, bundle, None, gate=not args.no_quality_gate, px_per_um=args.px_per_um
            )
        except LeukoscopeError as exc:
            failures += 1
            if args.json:
                print(json.dumps({"file": str(path), "error": str(exc)}), flush=True)
            else:
                print(file_error_line(path, exc), flush=True)
            continue
        ms = (time.perf_counter() - t0) * 1000
        if args.json:
            row: dict[str, Any] = {
                "file": str(path),
                "verdict": pred.verdict.value,
                "p_leukemia": None if pred.p_leukemia is None else round(pred.p_leukemia, 4),
                "retake_reasons": pred.retake_reasons,
                "model": m.name,
                "model_version": m.version,
                "model_sha256": m.model_sha256,
                "ms": round(ms, 1),
            }
            if cells_mode:
                row["cells"] = None if pred.cells is None else pred.cells.to_json()
            print(json.dumps(row), flush=True)
        else:
            scored += pred.p_leukemia is not None
            detail = (
                "; ".join(reason_text(r) for r in pred.retake_reasons)
                if pred.p_leukemia is None
                else f"leukemia score {pred.p_leukemia:.3f}"
            )
            if pred.cells is not None:
                c = pred.cells
                part = "" if c.n_classified == c.n_found else f" ({c.n_classified} classified)"
                detail += (
                    f"; {c.n_found} white cells{part}, "
                    f"{c.features.n_blasts} blast{'' if c.features.n_blasts == 1 else 's'}"
                )
            print(
                one_line(
                    f"{path}: {pred.verdict.value} ({detail}) [{m.name} {m.version}, {ms:.0f} ms]"
                ),
                flush=True,
            )
    if scored:
        print(score_note(bundle.manifest.thresholds.low, bundle.manifest.thresholds.high))
    if failures:
        print(f"{failures} of {len(paths)} file(s) could not be classified", file=sys.stderr)
        return 1
    return 0


def score_note(low: float, high: float) -> str:
    """What a leukemia score means: the model's output on a 0-1 scale, not a probability."""
    return (
        f"leukemia score: the model's 0-1 output, not a probability; below {low:.3f} no "
        f"leukemia suspected, {high:.3f} or more leukemia suspected, in between indeterminate"
    )


def cmd_demo_images(args: argparse.Namespace) -> int:
    """Write synthetic smear fields for demos and the replay camera."""
    for path in write_demo_images(args.folder, args.count):
        print(path)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Print stage timings and peak memory for a 5-megapixel still."""
    return bench_whole_field.main(args.bundle, args.runs, args.report)


def cmd_bench_cells(args: argparse.Namespace) -> int:
    """Print stage timings of cell analysis for a 5-megapixel still."""
    return bench_cells.print_bench(
        args.image,
        args.bundle,
        args.threads,
        args.runs,
        report=args.report,
        px_per_um=args.px_per_um,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="leukoscope", description=__doc__)
    parser.add_argument("--version", action="version", version=f"leukoscope {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "classify",
        help="classify photos offline (no daemon): verdict and leukemia score per image",
        description="Classify image files or folders with a model bundle, one line per image "
        "(JSON Lines with --json). The leukemia score is the model's 0-1 output, not a "
        "calibrated probability: the bundle's thresholds turn it into a verdict (below "
        "`low` no leukemia suspected, `high` or more leukemia suspected, in between "
        "indeterminate).",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add_image_arguments(
        p,
        bundle_help="model bundle folder",
        scale_help="cells bundles: the photos' calibrated scale in pixels per micrometre "
        "(default: measured from the red cells)",
    )
    p.add_argument(
        "--no-quality-gate", action="store_true", help="classify even photos the gate refuses"
    )
    p.set_defaults(func=cmd_classify)

    cellscli.add_subcommands(sub)
    appcli.add_subcommands(sub)
    calibratecli.add_subcommands(sub)
    webcli.add_subcommands(sub)
    modelcli.add_subcommands(sub)
    exportcli.add_subcommands(sub)
    samplecli.add_subcommands(sub)

    p = sub.add_parser(
        "bench", help="time a whole-field bundle: decode, preprocess, inference (prints figures)"
    )
    p.add_argument("--bundle", type=Path, default=None, help="model bundle folder")
    p.add_argument("--runs", type=positive_int, default=30, help="runs per stage (median taken)")
    p.add_argument("--report", type=Path, default=None, help="write a Markdown report here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "bench-cells",
        help="time the cell analysis of a 5 MP still, stage by stage (prints figures)",
    )
    p.add_argument("--image", type=Path, default=None, help="a photo (default: synthetic 5 MP)")
    p.add_argument("--bundle", type=Path, default=None, help="a cells bundle folder")
    p.add_argument("--threads", type=thread_count, default=1, help="interpreter threads")
    p.add_argument("--runs", type=positive_int, default=15, help="runs (median taken)")
    p.add_argument(
        "--px-per-um",
        type=px_per_um_arg,
        default=None,
        metavar="SCALE",
        help="a calibrated scale (default: measured from the red cells)",
    )
    p.add_argument("--report", type=Path, default=None, help="write a Markdown report here")
    p.set_defaults(func=cmd_bench_cells)

    p = sub.add_parser(
        "demo-images",
        help="write synthetic smear fields, one per outcome (for make run's replay camera)",
    )
    p.add_argument("folder", type=Path)
    p.add_argument(
        "--count",
        type=positive_int,
        default=len(DEMO_FIELDS),
        help=f"fields to write (default {len(DEMO_FIELDS)}: no leukemia suspected, "
        "indeterminate, retakes for focus, exposure, no white cells; then again)",
    )
    p.set_defaults(func=cmd_demo_images)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `leukoscope` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if getattr(args, "bundle", "unset") is None:
        args.bundle = default_bundle()
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
