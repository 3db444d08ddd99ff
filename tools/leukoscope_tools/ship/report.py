"""From a quantized run to a shipped bundle: thresholds, evaluation, figures, report, card."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leukoscope.analysis.decision import Thresholds
from leukoscope_tools.data.arrays import labels_of, load_uint8, normalise
from leukoscope_tools.data.photos import Row, select, split_counts, table_bytes
from leukoscope_tools.evaluate import figures
from leukoscope_tools.evaluate.field import SPLIT_FILE, breakdown, cross_source
from leukoscope_tools.metrics import choose_band, fmt, fmt_ci
from leukoscope_tools.ship.export import write_bundle
from leukoscope_tools.ship.quantize import MODEL_INT8, tflite_prob
from leukoscope_tools.train.field import load_run
from leukoscope_tools.train.models import ARCHS, LABELS, POSITIVE

logger = logging.getLogger(__name__)

CITATIONS = """\
- ALL-IDB1 (ALL-IDB, Università degli Studi di Milano): R. Donida Labati, V. Piuri,
  F. Scotti, "ALL-IDB: the acute lymphoblastic leukemia image database for image
  processing", IEEE ICIP 2011.
- Kaggle "Acute Lymphoblastic Leukemia (ALL) image dataset" (Taleqani Hospital, Tehran):
  M. Aria, M. Ghaderzadeh, D. Bashash et al., 2021; M. Ghaderzadeh et al., Int. J. Intell.
  Syst. 2022.
- Not used: ALL-IDB2 (single-cell crops cut from ALL-IDB1 slides: a whole-field model
  must not see them, and crops of a test slide in training would leak) and BCCD
  (no diagnosis label: not "normal")."""


def metrics_table(sections: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: one row per named metrics dict."""
    lines = [
        "| set | n (leuk/norm) | accuracy [95% CI] | sensitivity | specificity | ROC AUC |"
        " TN FP FN TP |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in sections.items():
        c = m["confusion"]
        lines.append(
            f"| {name} | {m['n']} ({m['n_leukemia']}/{m['n_normal']}) | "
            f"{fmt_ci(m, 'accuracy')} | {fmt_ci(m, 'sensitivity')} | "
            f"{fmt_ci(m, 'specificity')} | {fmt_ci(m, 'roc_auc')} | "
            f"{c['tn']} {c['fp']} {c['fn']} {c['tp']} |"
        )
    return "\n".join(lines)


def per_class_table(m: dict[str, Any]) -> str:
    """Per-class precision, recall, F1 and support (the paper's table)."""
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, c in m["per_class"].items():
        lines.append(
            f"| {name} | {fmt(c['precision'])} | {fmt(c['recall'])} | "
            f"{fmt(c['f1'])} | {c['support']} |"
        )
    return "\n".join(lines)


def _sections(b: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    out = {f"{prefix}all": b["overall"]}
    out.update({f"{prefix}{k}": v for k, v in b["per_source"].items()})
    out.update({f"{prefix}{k}": v for k, v in b["per_camera"].items()})
    return out


def _strip(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def make_bundle(
    run_dir: Path,
    rows: Sequence[Row],
    root: Path,
    out: Path,
    *,
    cross_runs: Sequence[Path] = (),
    version: str = "1.0.0",
    name: str = "whole-field-thanh",
) -> Path:
    """Evaluate a quantized run and write its bundle with report, card and figures."""
    model, run, history = load_run(run_dir)
    del model  # evaluation below is the int8 model's, as shipped
    cfg = run["config"]
    spec = ARCHS[cfg["arch"]]
    params = spec.params
    tflite = (run_dir / MODEL_INT8).read_bytes()
    parity = json.loads((run_dir / "quantize.json").read_text())
    sources = cfg["train_sources"]
    val_rows = select(rows, "val", sources)
    test_rows = select(rows, "test", sources)
    pv = tflite_prob(tflite, normalise(load_uint8(root, val_rows, params), params))
    cut, band = choose_band(labels_of(val_rows), pv)
    pt = tflite_prob(tflite, normalise(load_uint8(root, test_rows, params), params))
    test = breakdown(test_rows, pt.astype(np.float64), cut, band)
    val = breakdown(val_rows, pv.astype(np.float64), cut, band)
    cross = [cross_source(r, rows, root) for r in cross_runs]
    metrics = {
        "cut": round(cut, 6),
        "test": test,
        "validation": {"overall": val["overall"]},
        "cross_source": {
            f"{'+'.join(c['trained_on'])} -> {'+'.join(c['tested_on'])}": {
                k: v
                for k, v in _strip(c).items()
                if k in ("overall", "per_camera", "cut", "best_val_auc")
            }
            for c in cross
        },
        "parity": parity,
    }
    training = {
        "arch": cfg["arch"],
        "seed": cfg["seed"],
        "config": cfg,
        "best_epoch": run["best_epoch"],
        "epochs_run": run["epochs_run"],
        "seconds": run["seconds"],
        "best_val_auc": run["best_val_auc"],
        "data": "kaggle-all + ALL-IDB1 (../shared/data), split.csv",
        "split_counts": split_counts(rows),
        "split_seed_note": "split.csv holds the split",
    }
    figs = {
        "figures/training.png": figures.training_curves({run_dir.name: history}),
        "figures/confusion_test.png": figures.confusion(
            test["overall"]["confusion"], f"test split, int8, cut {cut:.3f}"
        ),
        "figures/roc.png": figures.roc(
            {
                "test (all)": (labels_of(test_rows), pt),
                **{
                    f"test {s}": (
                        labels_of([r for r in test_rows if r.source == s]),
                        pt[[r.source == s for r in test_rows]],
                    )
                    for s in sorted({r.source for r in test_rows})
                },
                **{f"cross -> {'+'.join(c['tested_on'])}": c["_probs"] for c in cross},
            },
            "ROC: held-out test split and cross-source",
        ),
    }
    report = render_report(name, version, cfg, run, parity, cut, band, test, val, cross, rows)
    card = render_card(name, version, cfg, run, cut, band, test, cross, rows)
    extra = {
        "MODEL_CARD.md": card.encode(),
        "REPORT.md": report.encode(),
        SPLIT_FILE: table_bytes(rows),
        "history.json": json.dumps(history).encode(),
        **figs,
    }
    return write_bundle(
        out,
        tflite,
        name=name,
        version=version,
        architecture=cfg["arch"],
        labels=LABELS,
        positive_label=POSITIVE,
        params=params,
        thresholds=band,
        training=training,
        metrics=metrics,
        extra_files=extra,
        overwrite=True,
    )


def failures(test: dict[str, Any], cross: Sequence[dict[str, Any]]) -> list[str]:
    """Plain statements of every subset where the model fails (AUC < 0.6, or a rate of 0)."""
    sets = {f"test {k}": v for k, v in {**test["per_source"], **test["per_camera"]}.items()}
    for c in cross:
        tag = f"cross-source {'+'.join(c['trained_on'])} -> {'+'.join(c['tested_on'])}"
        sets[tag] = c["overall"]
        sets.update({f"{tag}, {cam}": m for cam, m in c["per_camera"].items()})
    out = []
    for name, m in sets.items():
        bad = []
        if m["roc_auc"] is not None and m["roc_auc"] < 0.6:
            bad.append(f"ROC AUC {fmt_ci(m, 'roc_auc')} (0.5 is chance)")
        if m["sensitivity"] == 0.0:
            bad.append(f"every one of {m['n_leukemia']} leukemia images called negative")
        if m["specificity"] == 0.0:
            bad.append(f"every one of {m['n_normal']} normal images called positive")
        if bad:
            out.append(f"- **{name}** ({m['n']} images): " + "; ".join(bad) + ".")
    return out


def _cross_rows(cross: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for c in cross:
        tag = f"train {'+'.join(c['trained_on'])} -> test {'+'.join(c['tested_on'])}"
        out[f"{tag}: all"] = c["overall"]
        for cam, m in c["per_camera"].items():
            out[f"{tag}: {cam}"] = m
    return out


def render_report(
    name: str,
    version: str,
    cfg: dict[str, Any],
    run: dict[str, Any],
    parity: dict[str, Any],
    cut: float,
    band: Thresholds,
    test: dict[str, Any],
    val: dict[str, Any],
    cross: Sequence[dict[str, Any]],
    rows: Sequence[Row],
) -> str:
    """The evaluation report (Markdown) that ships in the bundle."""
    counts = split_counts(rows)
    parts = [
        f"# Evaluation report: {name} {version}",
        "",
        "All numbers are computed by `leukoscope-tools bundle` from the int8 model on images "
        "the model never saw; re-run `leukoscope-tools evaluate BUNDLE DATA` to reproduce the "
        "test rows. Intervals are 95% (Wilson for proportions, bootstrap for AUC).",
        "",
        "## Data and split",
        "",
        "Group-disjoint, stratified (source x label) 60/20/20 split (`split.csv`): byte-identical "
        "copies dropped, near duplicates (dHash) and overlapping ALL-IDB1 fields (ORB feature "
        "matching) kept in one group.",
        "",
        "| split | images | by source/label |",
        "|---|---|---|",
        *[
            f"| {k} | {sum(v.values())} | {', '.join(f'{s} {n}' for s, n in v.items())} |"
            for k, v in counts.items()
        ],
        "",
        f"Architecture `{cfg['arch']}`, seed {cfg['seed']}, best epoch {run['best_epoch']} of "
        f"{run['epochs_run']} (validation AUC {fmt(run['best_val_auc'])}), "
        f"{run['seconds']:.0f} s of training.",
        "",
        "## Decision thresholds (validation split only)",
        "",
        f"Cut (Youden's J on validation): {cut:.4f}. Indeterminate band: "
        f"[{band.low:.4f}, {band.high:.4f}): below it `no-leukemia-suspected`, at or above "
        "`leukemia-suspected`. The band keeps 95% of validation leukemia images above `low` "
        "and 95% of validation normals below `high`.",
        "",
        "## Held-out test split (int8 model)",
        "",
        metrics_table(_sections(test, "test ")),
        "",
        per_class_table(test["overall"]),
        "",
        f"With the band: indeterminate {fmt(test['overall']['band']['indeterminate_rate'])} of "
        f"test images; sensitivity among decided "
        f"{fmt(test['overall']['band']['sensitivity_decided'])}, specificity among decided "
        f"{fmt(test['overall']['band']['specificity_decided'])}; "
        f"{test['overall']['band']['missed_leukemia']} leukemia image(s) called negative.",
        "",
        "Validation (used to pick the epoch and thresholds, so optimistic):",
        "",
        metrics_table({"validation": val["overall"]}),
        "",
        "## Cross-source (trained without the source it is tested on)",
        "",
        "Separate runs of the same recipe trained on one source's training split, cut chosen on "
        "that source's validation split, tested on every image of the other source.",
        "",
        metrics_table(_cross_rows(cross)) if cross else "(no cross-source runs given)",
        "",
        "## int8 parity (test split)",
        "",
        f"Keras and int8 agree on {parity['agreement']:.2%} of {parity['n']} test images at 0.5; "
        f"largest probability difference {parity['max_abs_diff']:.4f}; model "
        f"{parity['bytes']} bytes.",
        "",
        "![training](figures/training.png) ![confusion](figures/confusion_test.png) "
        "![roc](figures/roc.png)",
        "",
    ]
    return "\n".join(parts)


def render_card(
    name: str,
    version: str,
    cfg: dict[str, Any],
    run: dict[str, Any],
    cut: float,
    band: Thresholds,
    test: dict[str, Any],
    cross: Sequence[dict[str, Any]],
    rows: Sequence[Row],
) -> str:
    """MODEL_CARD.md: intended use, data, protocol, metrics with intervals, failure modes."""
    o = test["overall"]
    cross_lines = []
    for c in cross:
        m = c["overall"]
        cross_lines.append(
            f"- Trained on {'+'.join(c['trained_on'])} only, tested on all of "
            f"{'+'.join(c['tested_on'])} ({m['n']} images): ROC AUC {fmt_ci(m, 'roc_auc')}, "
            f"sensitivity {fmt_ci(m, 'sensitivity')}, specificity {fmt_ci(m, 'specificity')}."
        )
        for cam, cm in c["per_camera"].items():
            cross_lines.append(
                f"  - {cam}: {cm['n']} images ({cm['n_leukemia']} leukemia), sensitivity "
                f"{fmt_ci(cm, 'sensitivity')}, specificity {fmt_ci(cm, 'specificity')}, "
                f"AUC {fmt_ci(cm, 'roc_auc')}."
            )
    summary = [
        f"- Held-out test split (same sources as training): ROC AUC {fmt_ci(o, 'roc_auc')}, "
        f"sensitivity {fmt_ci(o, 'sensitivity')}, specificity {fmt_ci(o, 'specificity')} "
        f"at the validation-chosen cut {cut:.4f}.",
        *[
            f"- Test, {src} only: ROC AUC {fmt_ci(m, 'roc_auc')}, sensitivity "
            f"{fmt_ci(m, 'sensitivity')}, specificity {fmt_ci(m, 'specificity')} ({m['n']} images)."
            for src, m in test["per_source"].items()
        ],
        *[
            f"- Cross-source, trained on {'+'.join(c['trained_on'])} only and tested on "
            f"{'+'.join(c['tested_on'])}: ROC AUC {fmt_ci(c['overall'], 'roc_auc')}."
            for c in cross
        ],
    ]
    parts = [
        f"# Model card: {name} {version}",
        "",
        "## Summary",
        "",
        *summary,
        "",
        "Failures observed on data the model never saw (listed automatically):",
        "",
        *(failures(test, cross) or ["- none flagged"]),
        "",
        "## Intended use",
        "",
        "A **screening aid** for trained laboratory staff looking at peripheral blood smears: it "
        "flags a whole microscope field as `leukemia-suspected`, `no-leukemia-suspected` or "
        "`indeterminate`. It is **not a diagnosis**. Every positive and every indeterminate "
        "result must be referred for review by a hematologist (smear review, flow cytometry). "
        "A negative result does not rule out leukemia. It is a research prototype, not a "
        "medical device, and has not been clinically validated.",
        "",
        "## Model",
        "",
        f"Modified Thanh et al. CNN (`{cfg['arch']}`; 5x5 valid convolutions of 16/32/64 "
        "filters, 2x2 max-pooling, one fully connected layer, softmax), whole-field input: the "
        "photo is resized to 256x256, median-filtered (3x3), sharpened (3x3) and resized to "
        "128x128 by the same `preprocess()` the device runs. Full-integer int8 TFLite, batch 1.",
        f"Decision: `leukemia-suspected` at p >= {band.high:.4f}, `no-leukemia-suspected` below "
        f"{band.low:.4f}, `indeterminate` between (chosen on the validation split only).",
        "",
        "## Training data",
        "",
        CITATIONS,
        "",
        f"Split: {len(rows)} indexed images; group-disjoint, stratified 60/20/20 by source and "
        "label, seeded; exact copies dropped; near duplicates and overlapping ALL-IDB1 fields "
        "kept in one group (see `split.csv`, which lists files and hashes, no images). "
        "Augmentation (flips, shifts, zoom, shear, nearest fill) only on the training split, "
        "after splitting.",
        "",
        "## Metrics (held-out test split, int8 model, 95% intervals)",
        "",
        metrics_table(_sections(test, "")),
        "",
        f"At the band: {fmt(o['band']['indeterminate_rate'])} of test images indeterminate; "
        f"{o['band']['missed_leukemia']} leukemia image(s) called negative.",
        "",
        "## Cross-source results (the important ones)",
        "",
        *cross_lines,
        "",
        "## Known failure modes and limits",
        "",
        "- **It does not transfer across microscopes, labs and stains.** The cross-source "
        "results above are what to expect on a new clinic's microscope: read them, not the "
        "within-source numbers. A new site must validate on its own labelled slides first.",
        "- Within-source test numbers are optimistic: kaggle-all has no patient ids (89 "
        "patients, several photos each), so photos of one patient can fall on both sides of "
        "the split; only near-identical photos are grouped.",
        "- ALL-IDB1 camera confound: every 1712x1368 photo is leukemia, and the healthy photos "
        "come from the other camera(s), so ALL-IDB1 accuracy can come from the camera. "
        "Per-camera rows are "
        "reported; the ALL-IDB1 test split has only a handful of images, hence the wide "
        "intervals.",
        "- kaggle-all's negatives are hematogones (benign B-cell precursors), not healthy "
        "blood; ALL-IDB1's are healthy donors. Whole-field scoring ignores where the cells are.",
        "- One threshold does not fit two sources: the cut is chosen on the pooled validation "
        "split, which is mostly kaggle-all, and ALL-IDB1 probabilities sit elsewhere.",
        "- Cross-source AUC pooled over ALL-IDB1's two cameras mixes camera and cells (one "
        "camera took only leukemia photos): read the per-camera rows, where a model can rank "
        "photos of one camera well and still have its cut in the wrong place for that source.",
        "- Training is unstable across seeds: `models/compare/shipped-budget/COMPARE.md` trains "
        f"other seeds with this run's budget and lists their validation and test results beside "
        f"this one (seed {cfg['seed']}, kept at the epoch with the best validation AUC); "
        "`models/compare/COMPARE.md` compares the three networks. The CPU training budget "
        f"({cfg['max_epochs']} epochs of {cfg['epoch_size']} images) under-trains the network.",
        "- Trained on still photos through a microscope at 300-500x: other magnifications, "
        "thick or badly stained smears, or non-smear images give meaningless outputs.",
        "",
    ]
    return "\n".join(parts)
