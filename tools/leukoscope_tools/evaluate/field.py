"""Evaluation by source and camera, cross-source runs, and re-evaluation of a shipped bundle."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leukoscope.analysis.decision import Thresholds
from leukoscope.core.errors import BundleError
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import MANIFEST, read_manifest
from leukoscope_tools.data.arrays import labels_of, load_uint8, normalise
from leukoscope_tools.data.photos import EXCLUDED, Row, parse_table, select
from leukoscope_tools.metrics import binary_metrics, choose_cut
from leukoscope_tools.train.field import load_run, positive_prob
from leukoscope_tools.train.models import ARCHS

logger = logging.getLogger(__name__)

SPLIT_FILE = "split.csv"


def breakdown(
    rows: Sequence[Row], p: np.ndarray, cut: float, band: Thresholds | None = None
) -> dict[str, Any]:
    """Metrics overall, per source, and per source and camera (capture size)."""
    y = labels_of(rows)
    out: dict[str, Any] = {
        "overall": binary_metrics(y, p, cut, band),
        "per_source": {},
        "per_camera": {},
    }
    sources = sorted({r.source for r in rows})
    for source in sources:
        idx = np.array([r.source == source for r in rows])
        out["per_source"][source] = binary_metrics(y[idx], p[idx], cut, band)
        cameras = sorted({r.camera for r, keep in zip(rows, idx, strict=True) if keep})
        if len(cameras) > 1:
            for cam in cameras:
                cidx = np.array([r.source == source and r.camera == cam for r in rows])
                out["per_camera"][f"{source} {cam}"] = binary_metrics(y[cidx], p[cidx], cut, band)
    return out


def bundle_probs(bundle_dir: Path, root: Path, paths: Sequence[str]) -> np.ndarray:
    """P(leukemia) of each photo (a path under `root`) by a bundle, via the device's code."""
    analyser = load_bundle(bundle_dir).analyser
    return np.array(
        [analyser.analyse(analyser.decode(root / path)).p_leukemia for path in paths],
        np.float64,
    )


def cross_source(run_dir: Path, rows: Sequence[Row], root: Path) -> dict[str, Any]:
    """Evaluate a run trained without some sources on every image of those sources.

    The cut is chosen on the run's own validation split (its training sources), as a
    maintainer without the held-out source would have to.
    """
    model, run, _ = load_run(run_dir)
    spec = ARCHS[run["config"]["arch"]]
    trained_on = run["config"]["train_sources"]
    held_out = sorted({r.source for r in rows} - set(trained_on or []))
    val_rows = select(rows, "val", trained_on)
    pv = positive_prob(model, normalise(load_uint8(root, val_rows, spec.params), spec.params))
    cut = choose_cut(labels_of(val_rows), pv)
    test_rows = [r for r in rows if r.source in held_out and r.split != EXCLUDED]
    pt = positive_prob(model, normalise(load_uint8(root, test_rows, spec.params), spec.params))
    result = breakdown(test_rows, pt.astype(np.float64), cut)
    result.update(
        {
            "trained_on": trained_on,
            "tested_on": held_out,
            "cut": round(cut, 6),
            "best_val_auc": run["best_val_auc"],
            "run": run_dir.name,
            "model": "keras float (the int8 copy agrees to within the parity check)",
        }
    )
    result["_probs"] = (labels_of(test_rows), pt)
    return result


def _diff(path: str, want: Any, got: Any, tol: float, out: list[str]) -> None:
    if isinstance(want, dict):
        for key in want:
            _diff(
                f"{path}.{key}",
                want[key],
                got.get(key) if isinstance(got, dict) else None,
                tol,
                out,
            )
    elif isinstance(want, list | tuple):
        if not isinstance(got, list | tuple) or len(got) != len(want):
            out.append(f"{path}: manifest {want}, now {got}")
            return
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            _diff(f"{path}[{i}]", w, g, tol, out)
    elif isinstance(want, int | float) and not isinstance(want, bool):
        if not isinstance(got, int | float) or abs(float(want) - float(got)) > tol:
            out.append(f"{path}: manifest {want}, now {got}")
    elif want != got:
        out.append(f"{path}: manifest {want!r}, now {got!r}")


def reevaluate_bundle(bundle_dir: Path, root: Path, tol: float = 1e-3) -> list[str]:
    """Re-run a bundle on its recorded test split; return the metrics that differ."""
    return reevaluate(bundle_dir, root, tol)[1]


def reevaluate(bundle_dir: Path, root: Path, tol: float = 1e-3) -> tuple[dict[str, Any], list[str]]:
    """Re-run a bundle on its recorded test split: (metrics now, differences from the record).

    The split travels in the bundle (`split.csv`: paths and sha256, no images); a data
    file whose hash differs from the record is reported instead of silently used.
    """
    read_manifest(bundle_dir)  # not a bundle, or a bad manifest: BundleError naming the key
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    if not {"cut", "test"} <= manifest["metrics"].keys():
        raise BundleError(f"{bundle_dir}: manifest metrics lack the recorded cut and test split")
    rows = parse_table((bundle_dir / SPLIT_FILE).read_text(encoding="utf-8"))
    test_rows = select(rows, "test")
    diffs = []
    for row in test_rows:
        got = hashlib.sha256((root / row.path).read_bytes()).hexdigest()
        if got != row.sha256:
            diffs.append(f"{row.path}: data file differs from the recorded split")
    if diffs:
        return {}, diffs
    recorded = manifest["metrics"]
    th = manifest["thresholds"]
    p = bundle_probs(bundle_dir, root, [r.path for r in test_rows])
    now = breakdown(test_rows, p, recorded["cut"], Thresholds(th["low"], th["high"]))
    out: list[str] = []
    _diff("metrics.test", recorded["test"], now, tol, out)
    logger.info("re-evaluated %d test images: %d differences", len(test_rows), len(out))
    return now, out
