"""Robustness report: held-out photos as they are and as seen through simulated eyepieces.

    python -m leukoscope_tools.evaluate.robustness DATA --bundle models/default \\
        --out models/reports/eyepiece-robustness.md [--severities mild realistic harsh]

Every test photo of the split (`models/whole-field/split.csv`) goes through the device's
own `pipeline.analyse` (field of view, flat field, scale, quality gate, cells) once as it
is and once per severity through `data.eyepiece.simulate` (one random rig per photo,
seeded). Each photo's rig is calibrated as a technician would: the median red-cell
scale of its source and camera over the TRAINING photos (kaggle-all's ruler works on
few photos; the calibration is what its photos use where the ruler fails), times the
simulated rig's magnification. Per condition: the photos refused and why (scale and field
reasons apart from focus, exposure and cells), and the field ROC AUC over the photos
decided, overall and per source, beside the unsimulated figures. The command line that
made a report is written into it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leukoscope.analysis.detection import estimate_scale
from leukoscope.core.errors import ImageError
from leukoscope.core.imageio import load_image
from leukoscope.model.bundle import Bundle, load_bundle
from leukoscope.pipeline import Rig, analyse
from leukoscope_tools.data.eyepiece import SEVERITIES, draw, simulate
from leukoscope_tools.data.photos import Row, parse_table, select
from leukoscope_tools.metrics import roc_auc

#: Reasons that say the scale or the field could not be had (the issue's "scale or field").
SCALE_FIELD = {"no-scale", "scale-changed"}
#: Calibration photos per source and camera (training photos, every n-th).
CALIBRATION_PHOTOS = 60


@dataclass(frozen=True)
class Outcome:
    """One photo under one condition."""

    path: str
    source: str
    positive: bool
    score: float | None
    reasons: tuple[str, ...]


def _camera(r: Row) -> str:
    return f"{r.source} {r.width}x{r.height}"


def calibrations(data: Path, rows: list[Row]) -> dict[str, float]:
    """Median red-cell scale per source and camera over (up to CALIBRATION_PHOTOS) training
    photos, as a technician would calibrate each rig once."""
    out: dict[str, float] = {}
    train = select(rows, "train")
    for cam in sorted({_camera(r) for r in rows}):
        photos = [r for r in train if _camera(r) == cam]
        step = max(1, len(photos) // CALIBRATION_PHOTOS)
        values = []
        for r in photos[::step]:
            try:
                values.append(estimate_scale(load_image(data / r.path)).px_per_um)
            except ImageError:
                continue
        if values:
            out[cam] = float(np.median(values))
    return out


def run(
    data: Path, bundle: Bundle, rows: list[Row], cal: dict[str, float], severity: str | None
) -> list[Outcome]:
    """Analyse every photo as it is (`severity` None) or through a simulated eyepiece."""
    rng = np.random.default_rng(2026)
    out = []
    for r in rows:
        rgb = load_image(data / r.path)
        px = cal.get(_camera(r))
        if severity is not None:
            sim = simulate(rgb, draw(severity, rng), rng)
            rgb, px = sim.rgb, None if px is None else px * sim.scale
        result = analyse(rgb, bundle, None, rig=Rig(px_per_um=px))
        score = None if result.verdict.value == "retake" else result.p_leukemia
        out.append(
            Outcome(r.path, r.source, r.label == "leukemia", score, tuple(result.retake_reasons))
        )
    return out


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    """Refusals by kind and the AUC over the photos decided, overall and per source."""

    def block(items: list[Outcome]) -> dict[str, Any]:
        decided = [o for o in items if o.score is not None]
        y = np.array([o.positive for o in decided])
        p = np.array([o.score for o in decided], np.float64)
        reasons = Counter(x for o in items for x in o.reasons)
        return {
            "photos": len(items),
            "decided": len(decided),
            "refused_scale_or_field": sum(1 for o in items if SCALE_FIELD & set(o.reasons)),
            "refused_any": len(items) - len(decided),
            "reasons": dict(sorted(reasons.items())),
            "auc": None if not decided else roc_auc(y, p),
        }

    out = {"overall": block(outcomes)}
    for source in sorted({o.source for o in outcomes}):
        out[source] = block([o for o in outcomes if o.source == source])
    return out


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_report(
    results: dict[str, dict[str, Any]], cal: dict[str, float], header: dict[str, str]
) -> str:
    """The report as Markdown."""
    lines = [
        "# Eyepiece robustness: held-out photos as they are and through simulated eyepieces",
        "",
        f"- command: `{header['command']}`",
        f"- bundle: {header['bundle']}; data: the split's test photos ({header['split']})",
        f"- machine: load average {header['load']}, {header['minutes']} minutes",
        "- rig calibration (median red-cell scale of training photos, px/um): "
        + ", ".join(f"{k} {v:.3f}" for k, v in cal.items()),
        "- simulator: `leukoscope_tools.data.eyepiece`, one seeded rig per photo "
        "(seed 2026); the calibration is multiplied by the rig's magnification",
        "",
        "| condition | part | photos | decided | refused: scale/field | refused: any "
        "| ROC AUC | AUC change | reasons |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = results["as taken"]
    for cond, summary in results.items():
        for part, s in summary.items():
            change = None
            if s["auc"] is not None and base[part]["auc"] is not None:
                change = s["auc"] - base[part]["auc"]
            share = s["refused_scale_or_field"] / max(1, s["photos"])
            reasons = ", ".join(f"{k} {v}" for k, v in s["reasons"].items()) or "-"
            lines.append(
                f"| {cond} | {part} | {s['photos']} | {s['decided']} | "
                f"{s['refused_scale_or_field']} ({share:.1%}) | {s['refused_any']} | "
                f"{_f(s['auc'])} | {'-' if change is None else f'{change:+.3f}'} | {reasons} |"
            )
    lines += ["", "## Against the issue's targets (realistic severity)", ""]
    if "realistic" in results:
        real = results["realistic"]["overall"]
        share = real["refused_scale_or_field"] / max(1, real["photos"])
        d_auc = (
            None
            if real["auc"] is None or base["overall"]["auc"] is None
            else real["auc"] - base["overall"]["auc"]
        )
        lines += [
            f"- refused for scale or field reasons: {share:.1%} (target at most 10%): "
            f"{'met' if share <= 0.1 else 'NOT met'}",
            f"- field ROC AUC change: {_f(d_auc) if d_auc is None else f'{d_auc:+.3f}'} "
            f"(target within 0.03): "
            f"{'met' if d_auc is not None and abs(d_auc) <= 0.03 else 'NOT met'}",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the report (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--bundle", type=Path, default=Path("models/default"))
    p.add_argument("--split", type=Path, default=Path("models/whole-field/split.csv"))
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--severities", nargs="+", default=["realistic"], choices=sorted(SEVERITIES))
    p.add_argument("--limit", type=int, default=0, help="at most this many photos per source")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    rows = parse_table(args.split.read_text())
    test = select(rows, "test")
    if args.limit:
        sources = sorted({r.source for r in test})
        test = [r for s in sources for r in select(test, "test", [s])[: args.limit]]
    bundle = load_bundle(args.bundle)
    cal = calibrations(args.data, rows)
    results = {"as taken": summarise(run(args.data, bundle, test, cal, None))}
    for sev in args.severities:
        results[sev] = summarise(run(args.data, bundle, test, cal, sev))
    header = {
        "command": " ".join(["python -m leukoscope_tools.evaluate.robustness", *sys.argv[1:]]),
        "bundle": bundle.label,
        "split": str(args.split),
        "load": f"{os.getloadavg()[0]:.2f}",
        "minutes": f"{(time.monotonic() - t0) / 60:.1f}",
    }
    text = format_report(results, cal, header)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(
            json.dumps({"calibration": cal, "results": results, **header}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
