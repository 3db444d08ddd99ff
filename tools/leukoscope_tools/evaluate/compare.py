"""The paper's comparison done honestly: three networks and several seeds on one split,
and the same recipe under the paper's protocol (augment first, then split) for contrast."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from leukoscope_tools.data.arrays import labels_of, load_uint8, normalise
from leukoscope_tools.data.augment import expand_with_copies
from leukoscope_tools.data.photos import EXCLUDED, SPLITS, Row, select
from leukoscope_tools.evaluate import figures
from leukoscope_tools.metrics import binary_metrics, choose_cut, fmt, fmt_ci
from leukoscope_tools.train.field import (
    TrainConfig,
    fit,
    load_run,
    positive_prob,
    save_run,
    train_on_table,
)
from leukoscope_tools.train.models import ARCHS

logger = logging.getLogger(__name__)

#: Augmented copies per image in the paper-protocol run (the paper grew its set this way).
PAPER_COPIES = 1
#: Share of the per-epoch training images and the most epochs each architecture gets: on
#: two CPU cores a basic-CNN image costs about 3x and an AlexNet image 8x a Thanh image.
BUDGET = {"thanh": (1.0, 1.0), "basic-cnn": (0.5, 0.5), "alexnet": (0.25, 0.27)}


def _score(model: Any, arch: str, rows: Sequence[Row], root: Path, cut: float) -> dict[str, Any]:
    spec = ARCHS[arch]
    p = positive_prob(model, normalise(load_uint8(root, rows, spec.params), spec.params))
    y = labels_of(rows)
    out = {"overall": binary_metrics(y, p, cut)}
    for source in sorted({r.source for r in rows}):
        idx = np.array([r.source == source for r in rows])
        out[source] = binary_metrics(y[idx], p[idx], cut)
    return out


def run_one(rows: Sequence[Row], root: Path, cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """Train (or reuse a finished run in `run_dir`) and score it on the test split."""
    if not (run_dir / "run.json").is_file():
        train_on_table(rows, root, cfg, run_dir)
    model, run, history = load_run(run_dir)
    val_rows, test_rows = select(rows, "val"), select(rows, "test")
    spec = ARCHS[cfg.arch]
    pv = positive_prob(model, normalise(load_uint8(root, val_rows, spec.params), spec.params))
    cut = choose_cut(labels_of(val_rows), pv)
    return {
        "arch": cfg.arch,
        "seed": cfg.seed,
        "run": run,
        "history": history,
        "cut": cut,
        "test": _score(model, cfg.arch, test_rows, root, cut),
    }


def paper_protocol(
    rows: Sequence[Row], root: Path, cfg: TrainConfig, run_dir: Path, seed: int = 0
) -> dict[str, Any]:
    """The paper's way: keep duplicates, augment every image, then split images at random.

    Augmented copies of one photo (and exact and near duplicates) land on both sides of
    the split, so the test score measures memory as much as generalisation.
    """
    spec = ARCHS[cfg.arch]
    # Every indexed file, duplicates included: the paper's split saw them all.
    all_rows = list(rows)
    x0 = load_uint8(root, all_rows, spec.params)
    x, origin = expand_with_copies(x0, PAPER_COPIES, seed)
    y = labels_of(all_rows)[origin]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    n_tr, n_va = int(0.6 * len(x)), int(0.2 * len(x))
    tr, va, te = perm[:n_tr], perm[n_tr : n_tr + n_va], perm[n_tr + n_va :]
    w = np.ones(len(x), np.float32)
    # Same class balancing as the honest runs, but over the augmented pool.
    for label in (0, 1):
        w[y == label] = len(y) / (2 * max(1, int((y == label).sum())))
    if not (run_dir / "run.json").is_file():
        # No online augmentation: the pool is already augmented, as in the paper.
        result = fit(x[tr], y[tr], w[tr], x[va], y[va], replace(cfg, augment=False))
        fake = [all_rows[int(i)] for i in origin[tr]]
        save_run(
            run_dir,
            result,
            replace(cfg, augment=False),
            fake,
            [all_rows[int(i)] for i in origin[va]],
        )
    model, run, history = load_run(run_dir)
    pv = positive_prob(model, normalise(x[va], spec.params))
    cut = choose_cut(y[va], pv)
    pt = positive_prob(model, normalise(x[te], spec.params))
    te_orig = set(origin[te].tolist())
    leaked = len(te_orig & set(origin[tr].tolist())) / max(1, len(te_orig))
    return {
        "arch": cfg.arch,
        "seed": cfg.seed,
        "run": run,
        "history": history,
        "cut": cut,
        "test": {"overall": binary_metrics(y[te], pt, cut)},
        "test_photos_also_in_training": round(leaked, 4),
    }


def _mean_sd(vals: list[float | None]) -> tuple[float, float]:
    got = [v for v in vals if v is not None]
    return (float(np.mean(got)), float(np.std(got))) if got else (float("nan"), 0.0)


def run_compare(
    rows: Sequence[Row],
    root: Path,
    out: Path,
    *,
    seeds: int = 3,
    archs: Sequence[str] = ("thanh", "basic-cnn", "alexnet"),
    max_epochs: int = 10,
    epoch_size: int = 1024,
) -> Path:
    """Run every configuration (reusing finished runs), write REPORT.md, results.json, PNGs."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = out / "runs"
    # Cheapest and most informative first, so that a partial report (written after every
    # run) already holds the seeds and the protocol contrast if the slow networks are cut.
    # Seed 0 last: it may be the shipped run, linked in from another folder.
    plan: list[tuple[str, int]] = [(archs[0], s) for s in reversed(range(seeds))]
    plan += [("paper", 0)] + [(arch, 0) for arch in archs[1:]]
    results: list[dict[str, Any]] = []
    paper: dict[str, Any] | None = None
    for arch, seed in plan:
        if arch == "paper":
            cfg = TrainConfig(
                arch=archs[0], seed=0, max_epochs=max_epochs, patience=4, epoch_size=epoch_size
            )
            logger.info("compare: the paper's protocol (%s)", archs[0])
            paper = paper_protocol(rows, root, cfg, runs_dir / f"paper-protocol-{archs[0]}-s0")
        else:
            share, epochs = BUDGET.get(arch, (1.0, 1.0))
            cfg = TrainConfig(
                arch=arch,
                seed=seed,
                max_epochs=max(2, round(max_epochs * epochs)),
                patience=4,
                epoch_size=int(epoch_size * share),
            )
            logger.info("compare: %s seed %d", arch, seed)
            results.append(run_one(rows, root, cfg, runs_dir / f"{arch}-s{seed}"))
        _write_json(out, results, paper)
        done = [a for a in archs if any(r["arch"] == a for r in results)]
        report = render(results, paper, rows, time.perf_counter() - t0, seeds, done)
        (out / "COMPARE.md").write_text(report)
        _write_figures(out, results, paper, done)
    return out / "COMPARE.md"


def _strip_hist(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k != "history"}


def _write_json(out: Path, results: list[dict[str, Any]], paper: dict[str, Any] | None) -> None:
    data = {
        "runs": [_strip_hist(r) for r in results],
        "paper_protocol": None if paper is None else _strip_hist(paper),
    }
    (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")


def _write_figures(
    out: Path, results: list[dict[str, Any]], paper: dict[str, Any] | None, archs: Sequence[str]
) -> None:
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    hist = {f"{r['arch']} s{r['seed']}": r["history"] for r in results}
    if paper is not None:
        hist["paper protocol"] = paper["history"]
    (fig_dir / "compare_training.png").write_bytes(figures.training_curves(hist))
    bars = {}
    for arch in archs:
        aucs = [r["test"]["overall"]["roc_auc"] for r in results if r["arch"] == arch]
        bars[f"{arch} (n={len(aucs)})"] = _mean_sd(aucs)
    if paper is not None:
        bars["paper protocol"] = (paper["test"]["overall"]["roc_auc"] or float("nan"), 0.0)
    (fig_dir / "compare_auc.png").write_bytes(
        figures.bars(bars, "test ROC AUC, mean and SD over seeds", "ROC AUC")
    )


def render(
    results: list[dict[str, Any]],
    paper: dict[str, Any] | None,
    rows: Sequence[Row],
    seconds: float,
    seeds: int,
    archs: Sequence[str],
) -> str:
    """The comparison report (Markdown)."""
    n = {s: sum(r.split == s for r in rows) for s in (*SPLITS, EXCLUDED)}
    train_s = sum(r["run"]["seconds"] for r in results) + (paper["run"]["seconds"] if paper else 0)
    lines = [
        "# Comparison: the paper's three networks, seeds, and the paper's protocol",
        "",
        f"Produced by `leukoscope-tools compare` on a shared 2-core CPU: "
        f"{train_s / 60:.0f} min of training (all runs), this report after {seconds / 60:.0f} "
        "min (finished runs are reused, not retrained). "
        f"Honest protocol: the group-disjoint split of `split.csv` (train {n['train']}, "
        f"validation {n['val']}, test {n['test']}; {n['excluded']} exact copies dropped), "
        "augmentation of the training split only, epoch and cut chosen on validation, "
        "scores on the test split (Keras float models). Intervals are 95%. The ALL-IDB1 "
        "column rests on a dozen test photos whose camera gives their label away (see the "
        "shipped model card's per-camera rows).",
        "",
        "| arch | seed | epochs (best) | val AUC | test accuracy | sensitivity | specificity |"
        " test AUC | AUC kaggle-all | AUC ALL-IDB1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["test"]
        lines.append(
            f"| {r['arch']} | {r['seed']} | {r['run']['epochs_run']} ({r['run']['best_epoch']}) "
            f"| {fmt(r['run']['best_val_auc'])} | {fmt_ci(t['overall'], 'accuracy')} | "
            f"{fmt_ci(t['overall'], 'sensitivity')} | {fmt_ci(t['overall'], 'specificity')} | "
            f"{fmt_ci(t['overall'], 'roc_auc')} | "
            f"{fmt(t.get('kaggle-all', {}).get('roc_auc'))} | "
            f"{fmt(t.get('all-idb1', {}).get('roc_auc'))} |"
        )
    lines += [
        "",
        "Mean and spread (SD) over seeds:",
        "",
        "| arch | runs | test AUC | test accuracy |",
        "|---|---|---|---|",
    ]
    for arch in archs:
        rs = [r for r in results if r["arch"] == arch]
        auc = _mean_sd([r["test"]["overall"]["roc_auc"] for r in rs])
        acc = _mean_sd([r["test"]["overall"]["accuracy"] for r in rs])
        lines.append(
            f"| {arch} | {len(rs)} | {auc[0]:.3f} ± {auc[1]:.3f} | {acc[0]:.3f} ± {acc[1]:.3f} |"
        )
    if paper is None:
        lines += ["", "## The paper's protocol", "", "(not run yet: see below)", ""]
    else:
        lines += paper_section(paper, results, archs[0])
    lines += [
        "![training](figures/compare_training.png) ![auc](figures/compare_auc.png)",
        "",
        "Training budget (CPU time on 2 cores): "
        + "; ".join(
            f"{r['arch']} at most {r['run']['config']['max_epochs']} epochs of "
            f"{r['run']['config']['epoch_size']} images"
            for r in results
            if r["seed"] == 0
        )
        + ", early stopping (patience 4) on validation AUC, best epoch kept. "
        f"Only {archs[0]} was run with {seeds} seeds; the others once each. The slower "
        "networks got less training, so their rows are a lower bound, not a verdict.",
        "",
    ]
    return "\n".join(lines)


def paper_section(paper: dict[str, Any], results: list[dict[str, Any]], arch: str) -> list[str]:
    """The protocol contrast: the paper's augment-then-split against the honest split."""
    po = paper["test"]["overall"]
    seeds = [r for r in results if r["arch"] == arch]
    ho = next(r for r in seeds if r["seed"] == 0)["test"]["overall"]
    acc = _mean_sd([r["test"]["overall"]["accuracy"] for r in seeds])
    auc = _mean_sd([r["test"]["overall"]["roc_auc"] for r in seeds])
    sens = _mean_sd([r["test"]["overall"]["sensitivity"] for r in seeds])
    spec = _mean_sd([r["test"]["overall"]["specificity"] for r in seeds])
    return [
        "",
        "## The paper's protocol (augment first, then split images at random)",
        "",
        f"Same network ({arch}) and training budget; every indexed photo including exact "
        f"copies, each plus {PAPER_COPIES} augmented copy, then a random 60/20/20 split of "
        f"the pool. {paper['test_photos_also_in_training']:.0%} of the test split's source "
        "photos also appear (augmented or as duplicates) in its training split.",
        "",
        "| protocol | test accuracy | sensitivity | specificity | test AUC |",
        "|---|---|---|---|---|",
        f"| paper (augment, then split) | {fmt_ci(po, 'accuracy')} | "
        f"{fmt_ci(po, 'sensitivity')} | {fmt_ci(po, 'specificity')} | {fmt_ci(po, 'roc_auc')} |",
        f"| honest (split by group, then augment), seed 0 | {fmt_ci(ho, 'accuracy')} | "
        f"{fmt_ci(ho, 'sensitivity')} | {fmt_ci(ho, 'specificity')} | {fmt_ci(ho, 'roc_auc')} |",
        f"| honest, mean ± SD of {len(seeds)} seeds | {acc[0]:.3f} ± {acc[1]:.3f} | "
        f"{sens[0]:.3f} ± {sens[1]:.3f} | {spec[0]:.3f} ± {spec[1]:.3f} | "
        f"{auc[0]:.3f} ± {auc[1]:.3f} |",
        "",
        f"Inflation over the honest mean: accuracy {(po['accuracy'] or 0) - acc[0]:+.3f}, "
        f"ROC AUC {(po['roc_auc'] or 0) - auc[0]:+.3f}; over the best honest seed: accuracy "
        f"{(po['accuracy'] or 0) - max(r['test']['overall']['accuracy'] or 0 for r in seeds):+.3f}"
        f", ROC AUC "
        f"{(po['roc_auc'] or 0) - max(r['test']['overall']['roc_auc'] or 0 for r in seeds):+.3f}. "
        "Seed 0 of the paper's protocol and seed 0 of the honest one share their initial "
        "weights; the honest runs' spread shows how much of any gap is seed luck.",
        "",
    ]
