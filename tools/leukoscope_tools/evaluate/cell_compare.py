"""Compare cell mode with the whole-field model and the white-cell count, and write the report.

On the same slide-disjoint TEST photos as the whole-field model (`models/whole-field/split.csv`):

- whole-field: the shipped `models/whole-field` bundle, run here on the test photos through
  the device code (`leukoscope.model.bundle`), at its recorded cut and band;
- cells: per seed, the cell classifier's blast probabilities of every detected cell,
  the device's slide features, the logistic slide model and the band fitted on
  VALIDATION photos only;
- count baseline: white cells per 10,000 um^2 alone, cut and band chosen on validation.

Cross-source: a cell model trained on one source, its slide model and band fitted on
that source's validation photos, tested on the other source's photos; next to the
whole-field cross-source numbers recorded in models/whole-field's manifest.

Every number in the report comes from this code (`compare.json` holds them all).

    leukoscope-tools cells compare ../shared/data build/cells --runs build/cells/runs \
        --out build/cells/report/COMPARE.md

(`leukoscope-tools cells ship` then puts COMPARE.md and compare.json into the bundle,
models/default.)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from leukoscope.analysis.cells import CellSettings
from leukoscope.analysis.decision import Thresholds
from leukoscope_tools.data.cells import SOURCES, CellSet, PhotoRow, load, y_of
from leukoscope_tools.evaluate.field import bundle_probs
from leukoscope_tools.metrics import binary_metrics, choose_band, paired_auc_diff
from leukoscope_tools.train.cell_cut import choose_cell_cut, trained_sources
from leukoscope_tools.train.slide import (
    CELL_CUTS,
    choose_slide_model,
    density_scores,
    photo_features,
    scores,
)

logger = logging.getLogger(__name__)

#: ALL-IDB1's two cameras (all 1712x1368 photos are leukemia, the healthy ones 2592x1944).
CAMERAS = ("all-idb1 1712x1368", "all-idb1 2592x1944")
TEST_SCOPES = ("overall", *SOURCES, *CAMERAS)
#: The shipped whole-field bundle, relative to the current folder (the repository root).
DEFAULT_WHOLE_FIELD = Path("models/whole-field")
#: The numbers each table shows, in order: (key in a metrics dict, column title).
COLUMNS = (
    ("n", "photos decided"),
    ("retakes", "retakes"),
    ("roc_auc", "ROC AUC [95% CI]"),
    ("sensitivity", "sens. @cut"),
    ("specificity", "spec. @cut"),
    ("indeterminate_rate", "indeterminate"),
    ("sensitivity_decided", "sens. decided"),
    ("specificity_decided", "spec. decided"),
)


def camera_of(photo: PhotoRow) -> str:
    """`source WxH`: ALL-IDB1's cameras differ by image size (and by label: a confound)."""
    return f"{photo.source} {photo.width}x{photo.height}"


def evaluate(
    photos: Sequence[PhotoRow],
    score: np.ndarray,
    cut: float,
    band: Thresholds,
    scopes: Sequence[str] = ("overall", *SOURCES),
) -> dict[str, dict[str, Any]]:
    """Metrics per scope (overall, per source); nan scores are retakes, counted apart."""
    out: dict[str, dict[str, Any]] = {}
    y = y_of(photos)
    src = np.array([p.source for p in photos])
    camera = np.array([camera_of(p) for p in photos])
    for scope in scopes:
        if scope == "overall":
            mine = np.ones(len(photos), bool)
        else:
            mine = (src == scope) | (camera == scope)
        if not mine.any():
            continue
        retake = mine & np.isnan(score)
        ok = mine & ~np.isnan(score)
        m: dict[str, Any] = binary_metrics(y[ok], score[ok], cut, band) if ok.any() else {"n": 0}
        m["retakes"] = int(retake.sum())
        m["retake_rate"] = round(float(retake.sum() / mine.sum()), 4)
        m["retakes_by_label"] = {
            lab: int((retake & (y == v)).sum()) for lab, v in (("leukemia", 1), ("normal", 0))
        }
        out[scope] = m
    return out


def fit_band(photos: Sequence[PhotoRow], score: np.ndarray) -> tuple[float, Thresholds]:
    """Cut and band from validation photos (retakes left out), as the whole-field model's."""
    ok = ~np.isnan(score)
    return choose_band(y_of(photos)[ok], score[ok])


def cell_run(cs: CellSet, run_dir: Path, base: CellSettings | None = None) -> dict[str, Any]:
    """One cell-model run: slide model + band on its validation photos, then its tests."""
    base = base or CellSettings()
    info = json.loads((run_dir / "run.json").read_text())
    p = np.load(run_dir / "p_blast.npy")
    # Fields only (PBC's one-cell images have no slide features); a run that left
    # kaggle-all's labels out (`--kaggle-labels none`) never saw its photos either.
    trained = [
        s
        for s in info["config"]["train_sources"]
        if s in SOURCES
        and not (s == "kaggle-all" and info["config"].get("kaggle_labels") == "none")
    ]
    val = [ph for ph in cs.photos if ph.source in trained and ph.split == "val"]
    # A run trained on cell labels (issue 13) has its cell cut chosen on validation cells;
    # the slide model is then fitted at that cut.
    new_style = "kaggle_labels" in info["config"]
    cell_cut = [choose_cell_cut(cs, p, trained_sources(info["config"]))] if new_style else None
    settings, tried = choose_slide_model(cs, p, val, base, cell_cut)
    sv = scores(photo_features(cs, p, val, settings), settings)
    cut, band = fit_band(val, sv)
    result: dict[str, Any] = {
        "run": run_dir.name,
        "seed": info["config"]["seed"],
        "trained_on": trained,
        "best_epoch": info["best_epoch"],
        "best_val_crop_auc": info["best_val_crop_auc"],
        "train_seconds": info["train_seconds"],
        "crops": info["crops"],
        "config": info["config"],
        "epochs_run": info.get("epochs_run"),
        "val_crop_auc_by_source": {
            k.split(" ", 1)[1]: v[info["best_epoch"] - 1]
            for k, v in info.get("history", {}).items()
            if k.startswith("val_auc ") and info["best_epoch"] >= 1
        },
        "settings": asdict(settings),
        "cell_cut_search": tried,
        "cut": round(cut, 6),
        "thresholds": {"low": band.low, "high": band.high},
        "validation": evaluate(val, sv, cut, band),
    }
    own_test = [ph for ph in cs.photos if ph.source in trained and ph.split == "test"]
    st = scores(photo_features(cs, p, own_test, settings), settings)
    result["test"] = evaluate(own_test, st, cut, band, TEST_SCOPES)
    result["_test_scores"] = st  # for paired comparisons; not written out
    # The other sources' photos of the splits the run scored (`cells train --cross-splits`).
    cross_splits = info["config"].get("cross_splits", ["train", "val", "test"])
    others = [
        ph
        for ph in cs.photos
        if ph.source in SOURCES and ph.source not in trained and ph.split in cross_splits
    ]
    if others:
        fo = photo_features(cs, p, others, settings)
        result["cross"] = {
            "tested_on": sorted({ph.source for ph in others}),
            "splits": sorted({ph.split for ph in others}),
            **evaluate(others, scores(fo, settings), cut, band, ("overall",)),
        }
    return result


def count_baseline(
    cs: CellSet, train_sources: Sequence[str], test: Sequence[PhotoRow], base: CellSettings
) -> dict[str, Any]:
    """White-cell density alone: cut and band on `train_sources`' validation photos."""
    zeros = np.zeros(len(cs.cells))
    val = [ph for ph in cs.photos if ph.source in train_sources and ph.split == "val"]
    sv = density_scores(photo_features(cs, zeros, val, base), base)
    cut, band = fit_band(val, sv)
    st = density_scores(photo_features(cs, zeros, test, base), base)
    scopes = TEST_SCOPES if len(train_sources) > 1 else ("overall",)
    return {
        "cut": round(cut, 6),
        "thresholds": {"low": band.low, "high": band.high},
        "validation": evaluate(val, sv, cut, band),
        "test": evaluate(test, st, cut, band, scopes),
    }


def whole_field_scores(
    data: Path, photos: Sequence[PhotoRow], bundle_dir: Path, cache: Path
) -> np.ndarray:
    """p_leukemia of the whole-field bundle on each photo, via the device code (cached)."""
    cached: dict[str, float] = json.loads(cache.read_text()) if cache.is_file() else {}
    missing = [ph for ph in photos if ph.path not in cached]
    if missing:
        paths = [ph.path for ph in missing]
        cached.update(zip(paths, bundle_probs(bundle_dir, data, paths).tolist(), strict=True))
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(cached, indent=0) + "\n")
    return np.array([cached[ph.path] for ph in photos], np.float64)


def whole_field(
    data: Path, cs: CellSet, bundle_dir: Path, cache: Path, decided_by: np.ndarray | None
) -> dict[str, Any]:
    """The shipped whole-field model on the test photos at its recorded cut and band."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    cut = float(manifest["metrics"]["cut"])
    band = Thresholds(manifest["thresholds"]["low"], manifest["thresholds"]["high"])
    test = [ph for ph in cs.photos if ph.source in SOURCES and ph.split == "test"]
    p = whole_field_scores(data, test, bundle_dir, cache)
    out: dict[str, Any] = {
        "_test_scores": p,
        "cut": cut,
        "thresholds": {"low": band.low, "high": band.high},
        "test": evaluate(test, p, cut, band, TEST_SCOPES),
        "recorded_test_auc": manifest["metrics"]["test"]["overall"]["roc_auc"],
        "cross_recorded": {
            k: {
                kk: v["overall"].get(kk)
                for kk in ("n", "roc_auc", "roc_auc_ci", "sensitivity", "specificity")
            }
            for k, v in manifest["metrics"].get("cross_source", {}).items()
        },
    }
    if decided_by is not None:
        # The same photos cell mode decides (its retakes left out), for a like-for-like AUC.
        q = np.where(decided_by, p, np.nan)
        out["test_cells_decided"] = evaluate(test, q, cut, band, TEST_SCOPES)
    return out


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean, standard deviation, min and max of the finite values."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {
        "mean": round(float(np.mean(v)), 4),
        "sd": round(float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, 4),
        "min": round(min(v), 4),
        "max": round(max(v), 4),
    }


def seed_summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over seeds of each scope's headline numbers."""
    out: dict[str, Any] = {}
    for scope in TEST_SCOPES:
        keys: dict[str, Any] = {}
        for key in ("roc_auc", "sensitivity", "specificity"):
            keys[key] = spread([r["test"].get(scope, {}).get(key) for r in runs])
        for key in ("indeterminate_rate", "sensitivity_decided", "specificity_decided"):
            keys[key] = spread([r["test"].get(scope, {}).get("band", {}).get(key) for r in runs])
        out[scope] = keys
    return out


def retake_table(cs: CellSet) -> dict[str, dict[str, int]]:
    """Photos with no white cell detected (retakes), per split, source and label."""
    c: Counter[str] = Counter()
    n: Counter[str] = Counter()
    for ph in cs.photos:
        if ph.source not in SOURCES:  # PBC's single cells are not fields
            continue
        key = f"{ph.split} {ph.source} {ph.label}"
        n[key] += 1
        if ph.n_cells < CellSettings().min_cells:
            c[key] += 1
    return {k: {"photos": n[k], "retakes": c[k]} for k in sorted(n)}


def compare(
    data: Path,
    cs: CellSet,
    runs_dir: Path,
    bundle_dir: Path = DEFAULT_WHOLE_FIELD,
    ablations: Path | None = None,
) -> dict[str, Any]:
    """Every number of the report (`ablations`: runs judged on validation photos only)."""
    base = CellSettings()
    runs = sorted(runs_dir.glob("both-s*"))
    if not runs:
        raise FileNotFoundError(f"no both-s* runs under {runs_dir}")
    main_runs = [cell_run(cs, r, base) for r in runs]
    test = [ph for ph in cs.photos if ph.source in SOURCES and ph.split == "test"]
    decided = np.array([ph.n_cells >= base.min_cells for ph in test])
    result: dict[str, Any] = {
        "dataset": cs.summary,
        "retakes": retake_table(cs),
        "cells": main_runs,
        "cells_seeds": seed_summary(main_runs),
        "count_baseline": count_baseline(cs, SOURCES, test, base),
        "whole_field": whole_field(
            data, cs, bundle_dir, runs_dir / "whole_field_test.json", decided
        ),
        "cross": {},
    }
    best = max(main_runs, key=lambda r: r["best_val_crop_auc"] or -1)
    result["best_seed"] = best["seed"]
    result["best_run"] = best["run"]
    # Cells minus whole-field AUC on the same photos, paired bootstrap per seed.
    y = y_of(test)
    src = np.array([ph.source for ph in test])
    pw = result["whole_field"].pop("_test_scores")
    for r in main_runs:
        pc = r.pop("_test_scores")
        r["auc_minus_whole_field"] = {
            scope: paired_auc_diff(
                y[decided & ((src == scope) | (scope == "overall"))],
                pc[decided & ((src == scope) | (scope == "overall"))],
                pw[decided & ((src == scope) | (scope == "overall"))],
            )
            for scope in ("overall", *SOURCES)
        }
    for prefix, trained, other in (
        ("idb1-s", ["all-idb1"], "kaggle-all"),
        ("kaggle-s", ["kaggle-all"], "all-idb1"),
    ):
        cross_runs = []
        for d in sorted(runs_dir.glob(f"{prefix}*")):
            if (d / "run.json").is_file():
                r = cell_run(cs, d, base)
                r.pop("_test_scores")
                cross_runs.append(r)
        if not cross_runs:
            continue
        splits = cross_runs[0]["cross"]["splits"]
        if any(r["cross"]["splits"] != splits for r in cross_runs):
            raise ValueError(f"{prefix}* runs were scored on different splits of {other}")
        tested = [ph for ph in cs.photos if ph.source == other and ph.split in splits]
        result["cross"][f"{trained[0]} -> {other}"] = {
            "cells": cross_runs,
            "seeds": spread([r["cross"]["overall"].get("roc_auc") for r in cross_runs]),
            "count_baseline": count_baseline(cs, trained, tested, base),
        }
    result["ablations"] = []
    for d in sorted(ablations.iterdir()) if ablations and ablations.is_dir() else []:
        if (d / "run.json").is_file():
            r = cell_run(cs, d, base)
            result["ablations"].append(
                {
                    k: r[k]
                    for k in (
                        "run",
                        "seed",
                        "config",
                        "best_epoch",
                        "epochs_run",
                        "best_val_crop_auc",
                        "val_crop_auc_by_source",
                        "validation",
                    )
                }
            )
    return result


# ---------------------------------------------------------------- rendering


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table ('-' for none)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _cell(m: dict[str, Any], key: str) -> str:
    if key == "roc_auc":
        ci = m.get("roc_auc_ci")
        return fmt(m.get("roc_auc")) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    if key in ("indeterminate_rate", "sensitivity_decided", "specificity_decided"):
        return fmt(m.get("band", {}).get(key))
    return fmt(m.get(key))


def table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A Markdown table: one row per (name, metrics)."""
    head = "| | " + " | ".join(t for _, t in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    body = [f"| {name} | " + " | ".join(_cell(m, k) for k, _ in COLUMNS) + " |" for name, m in rows]
    return "\n".join([head, rule, *body])


def _pm(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "-"
    return f"{s['mean']:.3f} ± {s['sd']:.3f} ({s['min']:.3f}-{s['max']:.3f})"


def seeds_table(summary: dict[str, Any]) -> str:
    """Mean ± sd (min-max) over seeds per scope."""
    keys = (
        "roc_auc",
        "sensitivity",
        "specificity",
        "indeterminate_rate",
        "sensitivity_decided",
        "specificity_decided",
    )
    head = "| scope | " + " | ".join(keys) + " |"
    rule = "|---|" + "---|" * len(keys)
    body = [
        f"| {scope} | " + " | ".join(_pm(v[k]) for k in keys) + " |" for scope, v in summary.items()
    ]
    return "\n".join([head, rule, *body])


def run_label(r: dict[str, Any], res: dict[str, Any]) -> str:
    """A cell run's name in the tables: its seed, or its folder when two runs share a seed."""
    seeds = [c["seed"] for c in res["cells"]]
    return f"seed {r['seed']}" if len(set(seeds)) == len(seeds) else str(r["run"])


def is_shipped(r: dict[str, Any], res: dict[str, Any]) -> bool:
    """Is `r` the run `cells ship` exports (the best on validation)?"""
    if "best_run" in res:
        return bool(r["run"] == res["best_run"])
    return bool(r["seed"] == res["best_seed"])


def main_table(res: dict[str, Any], scope: str) -> str:
    """The test comparison for one scope."""
    wf = res["whole_field"]
    rows = [("whole-field (models/whole-field), all test photos", wf["test"].get(scope, {}))]
    if "test_cells_decided" in wf:
        rows.append(
            ("whole-field, photos cell mode decides", wf["test_cells_decided"].get(scope, {}))
        )
    for r in res["cells"]:
        tag = " (shipped)" if is_shipped(r, res) else ""
        rows.append((f"cells, {run_label(r, res)}{tag}", r["test"].get(scope, {})))
    rows.append(("count baseline (density only)", res["count_baseline"]["test"].get(scope, {})))
    return table(rows)


def cross_table(res: dict[str, Any]) -> str:
    """Cross-source rows: whole-field (recorded), cells, count baseline."""
    lines = [
        "| trained on -> tested on | mode | photos | ROC AUC [95% CI] | sens. @cut | spec. @cut"
        " | retakes |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    recorded = res["whole_field"]["cross_recorded"]
    for key in ("all-idb1 -> kaggle-all", "kaggle-all -> all-idb1"):
        wf = recorded.get(key)
        if wf:
            ci = wf.get("roc_auc_ci")
            lines.append(
                f"| {key} | whole-field (manifest, all photos) | {wf['n']} | {fmt(wf['roc_auc'])}"
                + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
                + f" | {fmt(wf['sensitivity'])} | {fmt(wf['specificity'])} | - |"
            )
        c = res["cross"].get(key)
        if c:
            splits = "+".join(c["cells"][0]["cross"]["splits"])
            rows = [
                (f"cells, seed {r['seed']} ({splits} photos)", r["cross"]["overall"])
                for r in c["cells"]
            ]
            rows.append(
                (f"count baseline ({splits} photos)", c["count_baseline"]["test"]["overall"])
            )
            if len(c["cells"]) > 1:
                lines.append(
                    f"| {key} | cells, mean ± sd over seeds (min-max) | - | {_pm(c['seeds'])}"
                    " | - | - | - |"
                )
            for mode, m in rows:
                lines.append(
                    f"| {key} | {mode} | {m.get('n')} | {_cell(m, 'roc_auc')} | "
                    f"{fmt(m.get('sensitivity'))} | {fmt(m.get('specificity'))} | "
                    f"{m.get('retakes')} |"
                )
    return "\n".join(lines)


def weights_table(res: dict[str, Any]) -> str:
    """The fitted slide model and band per run."""
    lines = [
        "| run | trained on | best / run epochs | val crop AUC | cell_cut | bias | w_top_k"
        " | w_density | w_fraction | low | high |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    runs = list(res["cells"]) + [r for c in res["cross"].values() for r in c["cells"]]
    for r in runs:
        s = r["settings"]
        lines.append(
            f"| {r['run']} | {'+'.join(r['trained_on'])} | {r['best_epoch']} / "
            f"{r.get('epochs_run')} | "
            f"{fmt(r['best_val_crop_auc'])} | {s['cell_cut']:g} | {s['bias']:.2f} | "
            f"{s['w_top_k']:.2f} | "
            f"{s['w_density']:.2f} | {s['w_fraction']:.2f} | {r['thresholds']['low']:.3f} | "
            f"{r['thresholds']['high']:.3f} |"
        )
    return "\n".join(lines)


def verdict(res: dict[str, Any]) -> list[str]:
    """Which mode is better on the test photos, by the mean over seeds (computed, not typed)."""
    wf = res["whole_field"].get("test_cells_decided", res["whole_field"]["test"])
    out = []
    for scope in ("overall", *SOURCES):
        cells = res["cells_seeds"][scope]["roc_auc"]["mean"]
        w = wf.get(scope, {}).get("roc_auc")
        c = res["count_baseline"]["test"].get(scope, {}).get("roc_auc")
        if cells is None or w is None:
            continue
        better = "cells" if cells > w else "whole-field"
        spread_ = res["cells_seeds"][scope]["roc_auc"]
        diffs = [r["auc_minus_whole_field"][scope] for r in res["cells"]]
        cis = [d["ci"] for d in diffs if d["ci"]]
        above = sum(ci[0] > 0 for ci in cis)
        below = sum(ci[1] < 0 for ci in cis)
        out.append(
            f"- {scope}: cells mean AUC {cells:.3f} (seeds {spread_['min']:.3f}-"
            f"{spread_['max']:.3f}) vs whole-field {w:.3f} on the same photos (count baseline "
            f"{fmt(c)}): **{better}** is higher; paired bootstrap of cells minus whole-field "
            "per seed: "
            + ", ".join(
                f"{d['diff']:+.3f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"
                for d in diffs
                if d["diff"] is not None and d["ci"]
            )
            + f" ({above} of {len(cis)} seeds' intervals lie above 0, {below} below 0)."
        )
    return out


def ablation_section(res: dict[str, Any]) -> list[str]:
    """Ablation runs next to the main run of the same seed, on validation photos only."""
    abl = res.get("ablations") or []
    if not abl:
        return []
    lines = [
        "## Ablation: lower-magnification blur (validation photos only)",
        "",
        "A share of the training crops shrunk to the detail of a ~2.2 px/um camera (kaggle-all)",
        "and scaled back up, against the same seed without it. Judged on validation photos",
        "only. The shipped recipe is without it: one seed per arm cannot tell a difference",
        "this size from seed noise (compare the three seeds above), and adopting it would mean",
        "rerunning every seed and cross-source run (not done: CPU time).",
        "",
        "| run | blur share | best / run epochs | val crop AUC (mean) | per source |"
        " val slide AUC all-idb1 | val slide AUC kaggle-all |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    by_seed = {r["seed"]: r for r in res["cells"]}
    for a in abl:
        rows = [by_seed[a["seed"]], a] if a["seed"] in by_seed else [a]
        for r in rows:
            per = ", ".join(f"{k} {fmt(v)}" for k, v in r.get("val_crop_auc_by_source", {}).items())
            val = r["validation"]
            lines.append(
                f"| {r['run']} | {r['config'].get('lowmag', 0):g} | {r['best_epoch']} / "
                f"{r.get('epochs_run')} | {fmt(r['best_val_crop_auc'])} | {per} | "
                f"{fmt(val.get('all-idb1', {}).get('roc_auc'))} | "
                f"{fmt(val.get('kaggle-all', {}).get('roc_auc'))} |"
            )
    return [*lines, ""]


def _cross_summary(res: dict[str, Any]) -> str:
    parts = []
    recorded = res["whole_field"]["cross_recorded"]
    for key, c in res["cross"].items():
        m = c["seeds"]
        wf = recorded.get(key, {}).get("roc_auc")
        count = c["count_baseline"]["test"]["overall"].get("roc_auc")
        parts.append(
            f"{key}, cells AUC {fmt(m['mean'])} (seeds {fmt(m['min'])}-{fmt(m['max'])}), "
            f"whole-field {fmt(wf)}, count baseline {fmt(count)}"
        )
    return ("; ".join(parts) + ".") if parts else "(no cross-source runs)."


def _seed_note(res: dict[str, Any]) -> str:
    runs = res["cells"]
    parts = [
        f"{run_label(r, res)}: best epoch {r['best_epoch']} of {r.get('epochs_run')}, "
        f"validation crop AUC {fmt(r['best_val_crop_auc'])}, test AUC "
        f"{fmt(r['test']['overall'].get('roc_auc'))}"
        for r in runs
    ]
    return (
        "; ".join(parts) + ". The shipped run is the one with the best validation crop AUC"
        " (a rule fixed in the code before any test number existed)."
    )


def _training_recipe(run: dict[str, Any]) -> str:
    c = run.get("config", {})
    if not c:
        return ""
    return (
        f"Recipe (each seed): modified-Thanh at 128x128, Adam {c.get('learning_rate')}, batch "
        f"{c.get('batch_size')}, {c.get('epoch_size')} training crops drawn per epoch, at most "
        f"{c.get('max_epochs')} epochs with patience {c.get('patience')} on the validation crop "
        "AUC (mean of the per-source AUCs; the best epoch's weights kept), per-source class "
        "weights, the 8 flips/quarter turns of each crop"
        + (f", lower-magnification blur on {c.get('lowmag'):.0%}" if c.get("lowmag") else "")
        + f". kaggle-all: at most {c.get('kaggle_per_photo')} cells drawn per photo for training"
        f" and validation (seeded; a CPU budget), every cell of a photo for its slide score."
    )


def render(res: dict[str, Any], command: str | None = None) -> str:
    """COMPARE.md from compare.json's results.

    The "generated by" line quotes the command recorded in `res` (`res["command"]`);
    `command` stands in for results written before the command was recorded.
    """
    command = res.get("command", command)
    if command is None:
        raise ValueError("no command recorded in the results, and none given")
    ds = res["dataset"]
    cal = ds.get("kaggle_calibration", {})
    wf = res["whole_field"]
    lines = [
        "# Cell mode vs whole-field vs white-cell count",
        "",
        f"Generated by `{command}`; every number below comes from",
        "`compare.json`, written by the same run. Photos, groups and splits are the whole-field",
        "model's (`models/whole-field/split.csv`): the TEST photos here are exactly its test "
        "photos.",
        "",
        "## Which mode is better (test photos, ROC AUC)",
        "",
        *verdict(res),
        "",
        "## Test photos (slide-disjoint)",
        "",
        "Cut and band of each mode chosen on validation photos only (the whole-field model's",
        "are its manifest's). `photos decided` excludes retakes (no white cell detected);",
        "`indeterminate`, `sens./spec. decided` are the band's outcome. The whole-field",
        "model's AUC recomputed here on all test photos: "
        f"{fmt(wf['test']['overall'].get('roc_auc'))}"
        f" (its manifest records {fmt(wf['recorded_test_auc'])}).",
        "",
    ]
    for scope in TEST_SCOPES:
        lines += [f"### {scope}", "", main_table(res, scope), ""]
    lines += [
        "## Cell mode over the runs (test photos)",
        "",
        "Mean ± standard deviation (min-max).",
        "",
        seeds_table(res["cells_seeds"]),
        "",
        "## Cross-source",
        "",
        "Cells: trained on one source's train photos, slide model and band fitted on its",
        "validation photos, tested on the other source. Whole-field rows are the numbers",
        "recorded in `models/whole-field/manifest.json` (models trained without the held-out",
        "source, tested on all its photos).",
        "",
        cross_table(res),
        "",
        *ablation_section(res),
        "## Slide models (fitted on validation photos)",
        "",
        "score = sigmoid(bias + w_top_k * top_k_mean + w_density * log1p(density)"
        " + w_fraction * blast_fraction); density = white cells per 10,000 um^2;",
        "blast_fraction = share of the cells at p >= cell_cut. cell_cut chosen on validation",
        "photos among " + ", ".join(f"{c:g}" for c in CELL_CUTS) + " and the deciles of the"
        " validation cells' probabilities (best mean per-source validation AUC of the fitted"
        " score), with the weights fitted there too.",
        "",
        weights_table(res),
        "",
        "## Retakes (no white cell detected) per split, source and label",
        "",
        "| split / source / label | photos | retakes |",
        "|---|---:|---:|",
        *[f"| {k} | {v['photos']} | {v['retakes']} |" for k, v in res["retakes"].items()],
        "",
        "## The cell training set",
        "",
        f"- kaggle-all scale: the red-cell ruler worked on {cal.get('ruler_worked')} of "
        f"{cal.get('train_photos')} TRAIN photos; their median, "
        f"{fmt(cal.get('px_per_um'), 2)} px/um, is",
        "  the calibrated scale used where the ruler fails. Photos by scale used: "
        + ", ".join(f"{k}: {v}" for k, v in ds.get("scale_use", {}).items())
        + ".",
        f"- ALL-IDB2: {ds.get('all_idb2', {}).get('crops')} crops, "
        f"{ds.get('all_idb2', {}).get('unlocated')} unlocated (skipped); "
        + ", ".join(
            f"{k}: {v}"
            for k, v in ds.get("all_idb2", {}).items()
            if k not in ("crops", "unlocated")
        )
        + " (`agrees`: the detection there already had that label from .xyc or a healthy slide).",
        f"- Photos the split excludes (left out): {ds.get('excluded_photos')}.",
        "- Crops per split, source, label kind and label"
        " (1 blast, 0 other, -1 unknown, not trained on):",
        "",
        "| split source kind label | crops |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in ds.get("label_counts", {}).items()],
        "",
        "- ALL-IDB1 blasts are cropped at the detection matched to the annotated centroid"
        " (within 6 um), as the device crops them; centroids no detection matched, cropped"
        " at the centroid itself: "
        + str(sum(v for k, v in ds.get("label_counts", {}).items() if "xyc-centroid" in k))
        + ". Detections on ALL-IDB1 leukemia slides that match no centroid (`unknown`) are"
        " not training labels; they count in their photo's slide features.",
        "",
        _training_recipe(res["cells"][0]),
        "",
        "Training crops per run:",
        "",
        "| run | " + " | ".join(sorted(res["cells"][0]["crops"])) + " |",
        "|---|" + "---:|" * len(res["cells"][0]["crops"]),
        *[
            f"| {r['run']} | " + " | ".join(str(r["crops"][k]) for k in sorted(r["crops"])) + " |"
            for r in res["cells"]
        ],
        "",
        NOTES.format(
            count_aucs=", ".join(
                f"{scope} {fmt(res['count_baseline']['test'].get(scope, {}).get('roc_auc'))}"
                for scope in ("overall", *SOURCES)
            ),
            cross_summary=_cross_summary(res),
            seed_summary=_seed_note(res),
        ),
    ]
    return "\n".join(lines) + "\n"


NOTES = """\
## Read these numbers with care

- **Camera and slide confound (ALL-IDB1).** Every healthy ALL-IDB1 slide is from the
  2592x1944 camera; most leukemia slides are from the 1712x1368 one, and leukemia fields
  are crowded with blasts. Cell crops of "other" cells all come from healthy slides, so a
  cell classifier may learn the slide (stain, camera) rather than the cell, and ALL-IDB1's
  slide-level AUC is flattered for every mode. With 13 ALL-IDB1 test photos, its
  confidence intervals are wide.
- **The count baseline** (test AUC: {count_aucs}). Where white-cell density alone
  separates the photos (ALL-IDB1: leukemia fields crowded with blasts, healthy fields with
  one to three white cells) that reflects how those fields were chosen, not a diagnosis
  from one field's count; a mode that only matches it there has not shown it reads cells.
  On kaggle-all the photos are framed around cells, so the count says little.
- **kaggle-all labels are per photo.** Every cell of a leukemia photo is labelled blast,
  every cell of a benign (hematogone) photo other: lymphocytes and neutrophils in ALL
  photos are mislabelled, and hematogones look much like blasts. Its crop AUCs measure
  agreement with a noisy label.
- **kaggle-all scale.** Most photos use the calibrated scale; where the ruler does work it
  can still be wrong (about 1.4 px/um on some `pre` photos against 2.1 elsewhere), which
  changes crops and counts on those photos.
- **Retakes.** A photo with no white cell detected gets no verdict in cell mode; its AUC
  is over the photos it decides, and the whole-field row on the same photos is shown.
- **Cross-source.** The whole-field cross-source numbers are the manifest's (all photos of
  the held-out source); cell-mode cross-source runs are on the photos stated (the
  ALL-IDB1-only model is scored on kaggle-all's test photos, to save CPU time).
- **What the kaggle-all numbers may contain besides cells.** A kaggle-all cell carries its
  photo's label, stain and acquisition, so within kaggle-all a cell classifier can also
  learn "which kind of photo"; the within-source test cannot rule that out. The
  cross-source rows are the check: {cross_summary}
- **Seeds differ.** {seed_summary}
- **What was chosen after a test number was seen.** The first report (seed 0 alone, the
  cell cut fixed at 0.5) gave kaggle-all a test AUC near 0.5: every cell's probability sat
  near 0.6, so the blast fraction at 0.5 was 1 on every photo. Looking at that (and at
  per-photo aggregates on validation and test photos) led to choosing the cell cut on
  validation photos. The choice itself uses validation photos only, but the decision to
  add it was informed by a test result; a fresh test set would be the clean check.
"""


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """`leukoscope-tools cells compare`'s arguments."""
    ap.add_argument("data", type=Path, help="../shared/data")
    ap.add_argument("cells", type=Path, help="the `cells dataset` cache folder")
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--whole-field", type=Path, default=DEFAULT_WHOLE_FIELD)
    ap.add_argument("--out", type=Path, required=True, help="COMPARE.md (compare.json beside it)")
    ap.add_argument("--ablations", type=Path, default=None, help="ablation runs (validation only)")


def run_command(args: argparse.Namespace) -> int:
    """Evaluate the runs and write COMPARE.md + compare.json (with the command that ran)."""
    res = compare(args.data, load(args.cells), args.runs, args.whole_field, args.ablations)
    res["command"] = args.invocation
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(res))
    (args.out.parent / "compare.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    print("\n".join(verdict(res)))
    return 0
