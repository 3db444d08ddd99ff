"""Ship the cell classifier: int8 export (dynamic batch), the `cells` bundle, the model card.

The seed with the best validation crop AUC (`compare.json`'s `best_seed`) is exported with
`to_int8_tflite(..., batch=None)`, its slide model and band (fitted on validation photos)
go into the manifest's `cells` object and thresholds, and `write_cells_bundle` writes and
verifies the bundle. Then the bundle is loaded as the device loads it (`load_bundle`) and
run through its cell analysis on every TEST photo; its slide scores and verdicts are
compared with the float model's, and that agreement goes into the model card.

    leukoscope-tools cells ship ../shared/data build/cells --runs build/cells/runs \
        --compare build/cells/report/COMPARE.md --out models/default

COMPARE.md and compare.json (from `leukoscope-tools cells compare`) ship inside the bundle,
hash-listed.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np

from leukoscope.analysis.analysers import CellAnalyser
from leukoscope.analysis.cells import CellSettings, normalise
from leukoscope.analysis.decision import Thresholds
from leukoscope.model.bundle import load_bundle
from leukoscope_tools.data.cells import CELL_SOURCES, PRE, SOURCES, CellSet, PhotoRow, load, y_of
from leukoscope_tools.evaluate.cell_compare import (
    cross_table,
    fmt,
    is_shipped,
    main_table,
    seeds_table,
    verdict,
)
from leukoscope_tools.metrics import roc_auc
from leukoscope_tools.ship.export import to_int8_tflite, write_cells_bundle
from leukoscope_tools.train.cells import select
from leukoscope_tools.train.slide import photo_features, scores

logger = logging.getLogger(__name__)

NAME = "cells-thanh"
#: The bundle version `cells ship` writes (1.0.0: best epoch, photo labels, no PBC, no check;
#: 1.1.0: the mean of the last epochs' weights, PBC's normal cells, the not-a-white-cell check).
VERSION = "1.1.0"
#: Training crops used to calibrate the int8 ranges.
N_REPRESENTATIVE = 300


def float_scores(
    cs: CellSet, run_dir: Path, photos: list[PhotoRow], settings: CellSettings
) -> np.ndarray:
    """The float model's slide scores (nan for retakes), from its saved probabilities."""
    p = np.load(run_dir / "p_blast.npy")
    return scores(photo_features(cs, p, photos, settings), settings)


def parity(
    data: Path, bundle_dir: Path, photos: list[PhotoRow], float_score: np.ndarray
) -> dict[str, Any]:
    """The bundle through the device's cell analysis against the float scores, per photo.

    Each photo is analysed at the scale the training set recorded for it (the red-cell
    ruler's, or kaggle-all's calibrated value, as a configured `px_per_um` would give).
    """
    bundle = load_bundle(bundle_dir)
    analyser = bundle.analyser
    if not isinstance(analyser, CellAnalyser):
        raise ValueError(f"{bundle_dir}: not a cells bundle")
    th = bundle.manifest.thresholds
    diffs, agree, retake_agree, n = [], 0, 0, 0
    ms: list[float] = []
    device = np.full(len(photos), np.nan)
    for i, (ph, fs) in enumerate(zip(photos, float_score, strict=True)):
        rgb = analyser.decode(data / ph.path)
        a = analyser.analyse_cells(rgb, px_per_um=ph.px_per_um)
        device_retake = a.retake is not None
        retake_agree += int(device_retake == bool(np.isnan(fs)))
        n += 1
        if a.report is not None and not device_retake:
            device[i] = a.report.score
        if device_retake or np.isnan(fs) or a.report is None:
            continue
        ms.append(sum(a.timings_ms.values()))
        diffs.append(abs(a.report.score - float(fs)))
        agree += int(th.decide(a.report.score) == th.decide(float(fs)))
    d = np.asarray(diffs)
    y = y_of(photos)
    src = np.array([ph.source for ph in photos])
    ok = ~np.isnan(device)
    auc = {
        scope: roc_auc(y[ok & mine], device[ok & mine])
        for scope, mine in (("overall", np.ones(len(y), bool)), *((s, src == s) for s in SOURCES))
    }
    return {
        "int8_test_auc": {k: None if v is None else round(v, 4) for k, v in auc.items()},
        "photos": n,
        "retake_agreement": round(retake_agree / n, 4) if n else None,
        "scored": len(diffs),
        "verdict_agreement": round(agree / len(diffs), 4) if diffs else None,
        "score_abs_diff_max": round(float(d.max()), 4) if len(d) else None,
        "score_abs_diff_mean": round(float(d.mean()), 4) if len(d) else None,
        "analysis_ms_median": round(float(np.median(ms)), 1) if ms else None,
    }


def weights_line(config: dict[str, Any], best_epoch: int) -> str:
    """How the run's final weights were chosen, in the card's words."""
    k = int(config.get("average_last", 0) or 0)
    if k > 0:
        return (
            f"the mean of the last {k} of {config.get('max_epochs')} epochs' weights (cosine "
            "learning rate; no epoch chosen by validation)"
        )
    return f"epoch {best_epoch} (the best on validation)"


def render_card(res: dict[str, Any], best: dict[str, Any], par: dict[str, Any] | None) -> str:
    """MODEL_CARD.md: what the bundle is, and the comparison quoted from COMPARE.md."""
    s = best["settings"]
    th = best["thresholds"]
    ds = res["dataset"]
    # The command recorded with the results; older results name the step only.
    generated_by = res.get("command", "leukoscope-tools cells compare")
    lines = [
        f"# Model card: {NAME} {VERSION} (analysis mode `cells`)",
        "",
        "## Summary",
        "",
        "For each photo the appliance finds the white cells",
        "(`leukoscope.analysis.detection`), classifies",
        "each 24 um crop as blast or other with this modified-Thanh CNN (128x128, int8,",
        "dynamic batch: one invoke per field), and scores the field with a logistic model",
        "over the cells (mean of the 3 most suspicious, white-cell density, blast fraction).",
        "A field with no white cell is a retake. It is a **screening aid, not a diagnosis**:",
        "every positive and indeterminate result goes to a hematologist; a negative one does",
        "not rule leukemia out. Research prototype, not a medical device, not clinically",
        "validated.",
        "",
        "Comparison on the whole-field model's own slide-disjoint test photos "
        f"(quoted from `COMPARE.md`, generated by `{generated_by}`):",
        "",
        *verdict(res),
        "",
    ]
    for scope in ("overall", *SOURCES):
        lines += [f"### Test, {scope}", "", main_table(res, scope), ""]
    lines += [
        "Per ALL-IDB1 camera and the full tables: `COMPARE.md`.",
        "",
        "### Cell mode, mean over the runs compared (test)",
        "",
        seeds_table(res["cells_seeds"]),
        "",
        "### Cross-source",
        "",
        cross_table(res),
        "",
        "## This bundle",
        "",
        f"- Cell classifier: {best['run']}, seed {best['seed']} (best validation crop AUC of "
        f"the {len(res['cells'])} runs, "
        f"{fmt(best['best_val_crop_auc'])}, mean of the per-source AUCs), "
        + weights_line(best.get("config", {}), best["best_epoch"])
        + "; full-integer int8 TFLite, input [-1, 128, 128, 3].",
        f"- Detections that are small and pale (nucleus under {s.get('reject_small_um2', 0):g}"
        f" um^2, mean stain under {s.get('reject_max_stain', 0):g} and under "
        f"{s.get('reject_relative_stain', 0):g} of the field's densest) are not white cells:",
        "  not counted, not classified (`leukoscope.analysis.cell_check`; off when the first",
        "  number is 0).",
        "- Crops: `cellmode.cell_crops` (24 um square, 128x128, white-balanced to glass 235,",
        "  median 3x3 + sharpen), as in training.",
        f"- Slide score = sigmoid({s['bias']:.3f} + {s['w_top_k']:.3f} * top_3_mean + "
        f"{s['w_density']:.3f} * log1p(density) + {s['w_fraction']:.3f} * blast_fraction),",
        "  fitted on validation photos only, each source and label given equal weight.",
        f"- `leukemia-suspected` at score >= {th['high']:.4f}, `no-leukemia-suspected` below "
        f"{th['low']:.4f}, `indeterminate` between (chosen on validation photos only, as the",
        "  whole-field model's band).",
        "- Scale: red cells measured on the photo, or the configured `px_per_um`. kaggle-all's",
        "  224x224 photos mostly defeat the red-cell ruler: such a microscope needs",
        f"  `px_per_um` configured (kaggle-all's calibrated value: "
        f"{fmt(ds.get('kaggle_calibration', {}).get('px_per_um'), 2)} px/um).",
        "",
    ]
    if par:
        lines += [
            "## int8 on the device path vs the float model (test photos)",
            "",
            f"`load_bundle` + `Bundle.analyse_cells` on {par['photos']} test photos: retake "
            f"agreement {fmt(par['retake_agreement'])}; on {par['scored']} scored photos, "
            f"verdict agreement {fmt(par['verdict_agreement'])}, slide score difference "
            f"mean {fmt(par['score_abs_diff_mean'], 4)}, max {fmt(par['score_abs_diff_max'], 4)}; "
            f"median analysis time {fmt(par['analysis_ms_median'], 1)} ms per photo "
            "(this machine, under load). Test ROC AUC of the int8 bundle itself: "
            + ", ".join(f"{k} {fmt(v)}" for k, v in par["int8_test_auc"].items())
            + " (the tables above are the float model's).",
            "",
        ]
    lines += [
        "## Training data",
        "",
        "- ALL-IDB1 (blast centroids from its .xyc files; cells of healthy slides as `other`)",
        "  and ALL-IDB2 (located on its ALL-IDB1 slides: "
        + ", ".join(f"{k} {v}" for k, v in ds.get("all_idb2", {}).items())
        + "; `agrees`: the cell already had that label, so ALL-IDB2 added no new one):",
        '  R. Donida Labati, V. Piuri, F. Scotti, "ALL-IDB: the acute lymphoblastic',
        '  leukemia image database for image processing", IEEE ICIP 2011.',
        "- kaggle-all (Taleqani Hospital): M. Aria, M. Ghaderzadeh, D. Bashash et al., 2021;",
        "  Ghaderzadeh et al., Int. J. Intell. Syst. 2022. Cells labelled by their photo's",
        "  class (benign -> other, early/pre/pro -> blast): **label noise**.",
        "- PBC (Acevedo et al., Data in Brief 30, 2020; Hospital Clinic of Barcelona,",
        "  CellaVision DM96): normal white cells of healthy people as `other`, lymphocytes,",
        "  immature granulocytes and nucleated red cells weighted as hard negatives, when the",
        "  run was trained on it (trained here on "
        + ", ".join(best.get("config", {}).get("train_sources", []))
        + "; PBC has no",
        "  fields, so it is not in the field tables).",
        "- Split: the whole-field model's `models/whole-field/split.csv` (group-disjoint), so",
        "  both modes are tested on the same photos.",
        "",
        "## Limits",
        "",
        "- ALL-IDB1 confounds camera with label, and its `other` cells all come from healthy",
        "  slides; its test set is 13 photos. The white-cell count alone scores high there.",
        "- kaggle-all's cell labels are per photo, and its scale is mostly the calibrated one;",
        "  a kaggle-all cell also carries its photo's stain and acquisition (see COMPARE.md's",
        "  notes and the cross-source rows).",
        "- int8: a cell whose probability sits near `cell_cut` can flip between int8 and",
        "  float, moving the blast fraction and so the slide score (see the largest",
        "  difference above); verdicts agree on the share stated.",
        "- Not tested on a Raspberry Pi camera, other stains or other microscopes. A lab",
        "  whose cells it never saw can fare much worse than these tables: the recipe of",
        "  cells-thanh 1.1.0 trained without PBC called 60% of PBC's lymphocytes blasts",
        "  (`models/reports/cell-sources.md`). Measure it on your own labelled cells",
        "  (`leukoscope classify-cells`) before relying on it.",
        "",
    ]
    return "\n".join(lines) + "\n"


def ship(data: Path, cells_dir: Path, runs: Path, compare_md: Path, out: Path) -> dict[str, Any]:
    """Export, write and verify the bundle; returns the parity numbers."""
    res = json.loads((compare_md.parent / "compare.json").read_text())
    best = next(r for r in res["cells"] if is_shipped(r, res))
    run_dir = runs / best["run"]
    cs = load(cells_dir)
    model = keras.models.load_model(run_dir / "model.keras")
    idx = select(cs, "train", list(CELL_SOURCES), 2, 0)
    pick = np.sort(np.random.default_rng(0).choice(idx, min(N_REPRESENTATIVE, len(idx)), False))
    reps = normalise(np.asarray(cs.crops[pick]), PRE)
    tflite = to_int8_tflite(model, list(reps), batch=None)
    settings = CellSettings(**best["settings"])
    thresholds = Thresholds(**best["thresholds"])
    test = [ph for ph in cs.photos if ph.source in SOURCES and ph.split == "test"]
    fscore = float_scores(cs, run_dir, test, settings)
    training = {
        "arch": "thanh",
        "seed": best["seed"],
        "best_epoch": best["best_epoch"],
        "best_val_crop_auc": best["best_val_crop_auc"],
        "crops": best["crops"],
        "data": " + ".join(best["config"].get("train_sources", list(CELL_SOURCES)))
        + " (../shared/data; ALL-IDB2 located on ALL-IDB1), models/whole-field/split.csv",
        "config": best.get("config", {}),
        "dataset": {k: v for k, v in res["dataset"].items() if k != "label_counts"},
    }
    metrics: dict[str, Any] = {
        "cut": best["cut"],
        "test": best["test"],
        "validation": best["validation"],
        "cells_seeds": res["cells_seeds"],
        "count_baseline_test": res["count_baseline"]["test"],
        "whole_field_test_same_photos": res["whole_field"].get("test_cells_decided"),
        "cross_source": {
            k: {"seeds": v["seeds"], "runs": [r["cross"] for r in v["cells"]]}
            for k, v in res["cross"].items()
        },
    }
    extra = {
        "COMPARE.md": compare_md.read_bytes(),
        "compare.json": (compare_md.parent / "compare.json").read_bytes(),
    }
    par: dict[str, Any] | None = None
    for _ in range(2):
        # Written twice: the card quotes the int8 parity, measured on the written bundle.
        card = render_card(res, best, par).encode()
        write_cells_bundle(
            out,
            tflite,
            name=NAME,
            version=VERSION,
            architecture="thanh",
            params=PRE,
            cells=settings,
            thresholds=thresholds,
            training=training,
            metrics={**metrics, "parity": par},
            extra_files={**extra, "MODEL_CARD.md": card},
            overwrite=True,
        )
        if par is None:
            par = parity(data, out, test, fscore)
            logger.info("int8 parity: %s", par)
    assert par is not None
    return par


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """`leukoscope-tools cells ship`'s arguments."""
    ap.add_argument("data", type=Path)
    ap.add_argument("cells", type=Path)
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--compare", type=Path, required=True, help="COMPARE.md (compare.json beside)")
    ap.add_argument("--out", type=Path, required=True)


def run_command(args: argparse.Namespace) -> int:
    """Export the best-on-validation seed and write the cells bundle."""
    print(json.dumps(ship(args.data, args.cells, args.runs, args.compare, args.out), indent=1))
    return 0
