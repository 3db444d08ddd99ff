"""`leukoscope sample ...`: samples on the running daemon, and a sample's photos offline.

`start`, `close` and `show` ask the daemon over its control socket. `analyse` needs no
daemon: it reads the given photos as the fields of one sample, in order, the way the
daemon counts them (a retake or a repeat of a counted field counts nothing; the count
stops once the sample is decided), and prints one line per photo and a last line for
the sample (with `--json`, one JSON object per line; the last has `sample`, `verdict`,
`n_fields`, `n_cells`, `n_blasts`, `blast_percent`, `interval` and `model`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leukoscope.analysis.analysers import CellAnalyser
from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.differential import Differential, count
from leukoscope.analysis.overlap import fingerprint, shared_fraction
from leukoscope.analysis.reasons import reason_text
from leukoscope.appliance.control import request
from leukoscope.appliance.samples import check_sample_id
from leukoscope.cli.args import (
    add_config_argument,
    add_image_arguments,
    file_error_line,
    one_line,
)
from leukoscope.config import SampleConfig, config_path, load_config
from leukoscope.core.errors import LeukoscopeError
from leukoscope.core.imageio import iter_image_paths
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import NO_SAMPLE_RULE, sample_spec
from leukoscope.pipeline import analyse


def sample_line(sample: dict[str, Any]) -> str:
    """One line for a sample as the daemon reports it (`Sample.to_json()`)."""
    low, high = sample["interval"]
    verdict = f", {sample['verdict']}" if sample.get("verdict") else ""
    return one_line(
        f"{sample['id']}: {sample['state']}{verdict}; {sample['n_cells']} white cells in "
        f"{sample['n_fields']} field(s), {sample['n_blasts']} blast(s), "
        f"{sample['blast_percent']:.1f}% (95% interval {low:.1f}-{high:.1f}%): "
        f"{sample['message']}"
    )


def _daemon(args: argparse.Namespace, payload: dict[str, Any]) -> int:
    cfg = load_config(config_path(args.config))
    reply = request(cfg.paths.control_socket, payload, timeout=30)
    if not reply.get("ok"):
        print(one_line(f"error: {reply.get('error')}"), file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps(reply["sample"], indent=2))
    else:
        print(sample_line(reply["sample"]))
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    """Start a sample on the running daemon."""
    return _daemon(args, {"cmd": "sample-start", "sample_id": args.sample_id})


def cmd_close(args: argparse.Namespace) -> int:
    """Close a sample on the running daemon."""
    return _daemon(args, {"cmd": "sample-close", "sample_id": args.sample_id})


def cmd_show(args: argparse.Namespace) -> int:
    """Print a sample as the running daemon has it."""
    return _daemon(args, {"cmd": "sample-show", "sample_id": args.sample_id})


@dataclass
class _Field:
    """One photo read offline as a field of the sample."""

    file: str
    field: int | None  # its position among the photos that were read (None: unreadable)
    status: str  # counted, repeat, retake, skipped, error
    verdict: str | None = None
    n_cells: int = 0
    n_blasts: int = 0
    repeats_field: int | None = None
    shared: float | None = None
    message: str = ""


def _so_far(d: Differential) -> str:
    return f"{d.n_cells} white cells so far"


def cmd_analyse(args: argparse.Namespace) -> int:
    """Analyse photos as the fields of one sample; one line each, then the sample's."""
    try:
        sample_id = check_sample_id(args.sample_id)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bundle = load_bundle(args.bundle, num_threads=args.threads)
    m = bundle.manifest
    if not isinstance(bundle.analyser, CellAnalyser):
        print(
            f"error: samples are counted by a cells bundle; {bundle.label} is {m.analysis_mode}",
            file=sys.stderr,
        )
        return 2
    paths = iter_image_paths(args.paths)
    if not paths:
        print("error: no image files found in the given paths", file=sys.stderr)
        return 2
    spec = sample_spec(m)
    if not spec.corrected and not args.json:  # (--json: the last line's "corrected")
        print(one_line(f"note: bundle {bundle.label} {NO_SAMPLE_RULE}"), flush=True)
    max_overlap = SampleConfig().max_overlap
    counted: list[tuple[int, np.ndarray]] = []  # (field position, fingerprint)
    n_cells = n_blasts = position = 0
    d = count(0, 0, 0, spec.rule, spec.rates)
    failures = 0
    for path in paths:
        if d.verdict is not None:
            f = _Field(str(path), None, "skipped", message="not read: the sample is decided")
            _print_field(f, args.json)
            continue
        try:
            rgb = bundle.analyser.decode(path)
            result = analyse(rgb, bundle, None, px_per_um=args.px_per_um)
        except LeukoscopeError as exc:
            failures += 1
            _print_field(_Field(str(path), None, "error", message=str(exc)), args.json)
            continue
        position += 1
        f = _Field(str(path), position, "counted", result.verdict.value)
        cells = result.cells
        if result.verdict is Verdict.RETAKE or cells is None:
            f.status = "retake"
            why = "; ".join(reason_text(r) for r in result.retake_reasons) or "retake"
            f.message = f"{why}; not counted ({_so_far(d)})"
        else:
            fp = fingerprint(rgb)
            best = max(
                ((pos, shared_fraction(fp, other)) for pos, other in counted),
                key=lambda t: t[1],
                default=(None, 0.0),
            )
            if best[0] is not None and best[1] > max_overlap:
                f.status, f.repeats_field, f.shared = "repeat", best[0], round(best[1], 3)
                f.message = (
                    f"this field repeats field {best[0]}: move on, its cells were not counted "
                    f"again ({_so_far(d)})"
                )
            else:
                f.n_cells, f.n_blasts = cells.n_classified, cells.features.n_blasts
                n_cells += f.n_cells
                n_blasts += f.n_blasts
                counted.append((position, fp))
                d = count(len(counted), n_cells, n_blasts, spec.rule, spec.rates)
                f.message = d.message
        _print_field(f, args.json)
    _print_sample(sample_id, d, spec.corrected, bundle.manifest, args.json)
    if failures:
        print(f"{failures} of {len(paths)} file(s) could not be read", file=sys.stderr)
        return 1
    return 0


def _print_field(f: _Field, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(f)), flush=True)
        return
    if f.status == "error":
        print(file_error_line(Path(f.file), f.message), flush=True)
        return
    counts = f" ({f.n_cells} white cells, {f.n_blasts} blasts)" if f.status == "counted" else ""
    where = f"field {f.field} " if f.field is not None else ""
    print(one_line(f"{f.file}: {where}{f.status}{counts}: {f.message}"), flush=True)


def _print_sample(sample_id: str, d: Differential, corrected: bool, m: Any, as_json: bool) -> None:
    # A sample still counting when the photos ran out has no verdict yet: indeterminate,
    # with its message saying what is missing; no counted field at all is a retake.
    if d.verdict is not None:
        verdict, message = d.verdict.value, d.message
    elif d.n_fields == 0:
        verdict = Verdict.RETAKE.value
        message = "no field could be counted: take photos of other fields"
    else:
        verdict = Verdict.INDETERMINATE.value
        message = f"not decided: {d.message}"
    low, high = d.interval_percent
    if as_json:
        row = {
            "sample": sample_id,
            "verdict": verdict,
            "state": d.state.value,
            "n_fields": d.n_fields,
            "n_cells": d.n_cells,
            "n_blasts": d.n_blasts,
            "blast_percent": round(d.blast_percent, 3),
            "interval": [round(low, 3), round(high, 3)],
            "corrected": corrected,
            "message": message,
            "model": {"name": m.name, "version": m.version, "sha256": m.model_sha256},
        }
        print(json.dumps(row), flush=True)
        return
    print(
        one_line(
            f"sample {sample_id}: {verdict}; {d.n_cells} white cells in {d.n_fields} field(s), "
            f"{d.n_blasts} blast(s), {d.blast_percent:.1f}% (95% interval {low:.1f}-"
            f"{high:.1f}%{'' if corrected else ', uncorrected'}): {message} "
            f"[{m.name} {m.version}]"
        ),
        flush=True,
    )


def add_subcommands(sub: Any) -> None:
    """Register `leukoscope sample ...` on the `leukoscope` parser."""
    top = sub.add_parser("sample", help="samples: one patient's smear counted across fields")
    add_config_argument(top)
    ss = top.add_subparsers(dest="sample_command", required=True)

    for name, func, what in (
        ("start", cmd_start, "start a sample on the running daemon"),
        ("close", cmd_close, "close a sample on the running daemon (it takes no more fields)"),
        ("show", cmd_show, "print a sample as the running daemon has it"),
    ):
        p = ss.add_parser(name, help=what)
        p.add_argument("sample_id", metavar="ID")
        add_config_argument(p)
        if name == "show":
            p.add_argument("--json", action="store_true", help="the whole sample as JSON")
        p.set_defaults(func=func)

    p = ss.add_parser("analyse", help="analyse photos as the fields of one sample (no daemon)")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="photos or folders")
    p.add_argument("--sample-id", default="sample", help="the sample's id (default: sample)")
    add_image_arguments(
        p,
        bundle_help="a cells bundle folder",
        scale_help="the photos' calibrated scale in pixels per micrometre "
        "(default: measured from the red cells)",
    )
    p.set_defaults(func=cmd_analyse)
