"""The cell classifier judged cell by cell, per source, on cells it never saw.

Each run (`leukoscope-tools cells train`) leaves `p_blast.npy` over the crops it is judged
on: its own sources' validation and test photos, and the other sources' photos. From
those this report gives, per run:

- the cell cut, chosen on VALIDATION cells only: Youden's J with each negative source
  weighted the same (ALL-IDB1's non-blasts and PBC's normal cells), blasts from ALL-IDB1
  (cell labels); without ALL-IDB1 cell labels, kaggle-all's photo labels;
- held-out ALL-IDB1 slides (split by slide group): blasts are the annotated centroids (a
  centroid the detector missed is scored 0: a miss), non-blasts the white cells of healthy
  slides and those at `xyc-other` points; ROC AUC with a bootstrap interval, sensitivity
  and specificity at the cut with Wilson intervals;
- held-out PBC cells: the share called blast, of lymphocytes and of all;
- held-out kaggle-all photos: the photo's most suspicious cell against its photo label
  (an ALL photo holds a blast; a benign one should hold none), ROC AUC;
- leave-one-source-out: a run not trained on a source is judged on all of that source's
  photos (it never saw any of them).

    leukoscope-tools cells sources build/cells --runs build/cells/runs --out report.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from leukoscope.analysis.analysers import CellAnalyser
from leukoscope.analysis.cells import CellSettings, normalise
from leukoscope.analysis.decision import Thresholds
from leukoscope.model.bundle import load_bundle
from leukoscope_tools.data.cells import CELL_SOURCES, PBC, PRE, SOURCES, CellSet, PhotoRow, load
from leukoscope_tools.evaluate.cell_compare import cell_run
from leukoscope_tools.metrics import auc_ci, roc_auc, wilson
from leukoscope_tools.train.cell_cut import (
    choose_cell_cut,
    idb1_cells,
    kaggle_photos,
    pbc_cells,
    trained_sources,
)
from leukoscope_tools.train.slide import photo_features, scores


def _rate(k: int, n: int) -> dict[str, Any]:
    return {"k": k, "n": n, "rate": round(k / n, 4) if n else None, "ci": wilson(k, n)}


def _auc(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    a = roc_auc(y, p)
    return {
        "auc": None if a is None else round(a, 4),
        "ci": auc_ci(y, p) if a is not None else None,
    }


def judge_run(cs: CellSet, run: Path) -> dict[str, Any]:
    """One run's held-out cell results (see the module docstring)."""
    info = json.loads((run / "run.json").read_text())
    p = np.load(run / "p_blast.npy")
    trained = trained_sources(info["config"])
    config = {k: info["config"].get(k) for k in ("seed", "kaggle_labels", "hard_weight")}
    out = judge(cs, p, trained, choose_cell_cut(cs, p, trained), run.name, config)
    out["best_val_score"] = info.get("best_val_crop_auc")
    return out


def score_bundle(cs: CellSet, bundle_dir: Path) -> tuple[np.ndarray, float, dict[str, Any]]:
    """A cells bundle's int8 model on the crops this report reads, and its own cell cut.

    Bundles are trained on TRAIN photos of the same split: ALL-IDB1 and kaggle-all (the
    bundle before issue 13), and PBC's train cells where the manifest's training config
    names it (1.1.0 on). So their test photos are held out for them too, and so is all of
    PBC for a bundle that never saw it.
    """
    bundle = load_bundle(bundle_dir)
    analyser = bundle.analyser
    if not isinstance(analyser, CellAnalyser):
        raise ValueError(f"{bundle_dir}: not a cells bundle")
    m = bundle.manifest
    config = m.raw.get("training", {}).get("config") or {}
    trained = list(config.get("train_sources") or ["all-idb1", "kaggle-all"])
    src = np.array([cs.photos[c.photo].source for c in cs.cells])
    split = np.array([cs.photos[c.photo].split for c in cs.cells])
    y = cs.column("y_cell")
    want = (
        ((src == "all-idb1") & (y >= 0))
        | ((src == PBC) & ((split == "test") | (PBC not in trained)))
        | ((src == "kaggle-all") & (split == "test"))
    )
    idx = np.flatnonzero(want & cs.column("detected").astype(bool))
    p = np.full(len(cs.cells), np.nan)
    for at in range(0, len(idx), 64):
        chunk = idx[at : at + 64]
        p[chunk] = analyser.blast_probabilities(normalise(np.asarray(cs.crops[chunk]), PRE))
    test = [
        ph for ph in cs.photos if ph.source in ("all-idb1", "kaggle-all") and ph.split == "test"
    ]
    few = few_cell_healthy(cs, p, analyser.settings, analyser.thresholds, test)
    info = {"name": m.name, "version": m.version, "few": few, "trained": trained}
    return p, analyser.settings.cell_cut, info


def healthy_fields(cs: CellSet, p: np.ndarray, cut: float, trained: list[str]) -> dict[str, Any]:
    """Healthy held-out fields: detections per field and, of them, those called blast.

    Every detection on a healthy field is a non-blast or not a white cell at all (platelet
    clumps, debris): what is called blast here is what pushes a healthy field's score up.
    """
    out: dict[str, Any] = {}
    for source in SOURCES:
        splits = ("test",) if source in trained else ("train", "val", "test")
        n, called, fields = 0, 0, 0
        for ph in cs.photos:
            if ph.source != source or ph.label != "normal" or ph.split not in splits:
                continue
            q = p[ph.first : ph.first + ph.count]
            if np.isnan(q).any():
                continue
            fields += 1
            n += len(q)
            called += int((q >= cut).sum())
        if fields:
            out[source] = {
                "fields": fields,
                "detections_per_field": round(n / fields, 2),
                "called_blast_per_field": round(called / fields, 3),
            }
    return out


def judge(
    cs: CellSet,
    p: np.ndarray,
    trained: list[str],
    cut: float,
    name: str,
    config: dict[str, Any],
) -> dict[str, Any]:
    """Held-out cell results of blast probabilities `p` at `cut`, per source."""
    out: dict[str, Any] = {"run": name, "trained_on": trained, "cut": round(cut, 4)}
    out["config"] = config
    out["healthy_fields"] = healthy_fields(cs, p, cut, trained)
    for source in CELL_SOURCES:
        splits = ("test",) if source in trained else ("train", "val", "test")
        tag = "test" if source in trained else "left out"
        if source == "all-idb1":
            lab = idb1_cells(cs, p, splits)
            if not len(lab.y) or np.isnan(p[lab.idx]).all():
                continue
            pos, neg = lab.p[lab.y == 1], lab.p[lab.y == 0]
            out[f"all-idb1 ({tag})"] = {
                **_auc(lab.y, lab.p),
                "sensitivity": _rate(int((pos >= cut).sum()), len(pos)),
                "specificity": _rate(int((neg < cut).sum()), len(neg)),
            }
        elif source == PBC:
            lab, types = pbc_cells(cs, p, splits)
            if not len(lab.y) or np.isnan(p[lab.idx]).all():
                continue
            called = lab.p >= cut
            per_type = {
                f"called_blast {t}": _rate(int(called[types == t].sum()), int((types == t).sum()))
                for t in sorted(set(types.tolist()))
            }
            out[f"pbc ({tag})"] = {
                "called_blast": _rate(int(called.sum()), len(called)),
                **per_type,
            }
        else:
            y, top = kaggle_photos(cs, p, splits)
            if len(y):
                out[f"kaggle-all photos ({tag})"] = {**_auc(y, top), "n": len(y)}
    return out


def few_cell_healthy(
    cs: CellSet, p: np.ndarray, settings: CellSettings, band: Thresholds, test: list[PhotoRow]
) -> dict[str, Any]:
    """Healthy test fields with one or two white cells: their verdicts (none should refer)."""
    few = [ph for ph in test if ph.label == "normal" and ph.n_cells in (1, 2)]
    few = [ph for ph in few if not np.isnan(p[ph.first : ph.first + ph.count]).any()]
    sc = scores(photo_features(cs, p, few, settings), settings)
    verdicts = [band.decide(float(v)).value for v in sc]
    by_source = {
        src: sum(ph.source == src for ph in few) for src in sorted({ph.source for ph in few})
    }
    return {
        "fields": len(few),
        "by_source": by_source,
        "suspected": verdicts.count("leukemia-suspected"),
        "indeterminate": verdicts.count("indeterminate"),
        "no_leukemia": verdicts.count("no-leukemia-suspected"),
    }


def fields(cs: CellSet, run: Path) -> dict[str, Any]:
    """A run's field-level test results (its slide model and band fitted on validation)."""
    r = cell_run(cs, run)
    r.pop("_test_scores")
    trained = r["trained_on"]
    test = [ph for ph in cs.photos if ph.source in trained and ph.split == "test"]
    settings = CellSettings(**r["settings"])
    band = Thresholds(**r["thresholds"])
    keep = ("n", "roc_auc", "roc_auc_ci", "sensitivity", "specificity", "band")
    return {
        "run": run.name,
        "cell_cut": settings.cell_cut,
        "thresholds": r["thresholds"],
        "test": {k: {m: v[m] for m in keep if m in v} for k, v in r["test"].items()},
        "few_cell_healthy": few_cell_healthy(
            cs, np.load(run / "p_blast.npy"), settings, band, test
        ),
    }


def _fmt_rate(r: dict[str, Any] | None) -> str:
    if not r or r["rate"] is None:
        return "-"
    lo, hi = r["ci"]
    return f"{r['rate']:.3f} [{lo:.2f}, {hi:.2f}] ({r['k']}/{r['n']})"


def _fmt_auc(r: dict[str, Any] | None) -> str:
    if not r or r.get("auc") is None:
        return "-"
    ci = r.get("ci")
    return f"{r['auc']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _first(r: dict[str, Any], stem: str) -> Any:
    return r.get(f"{stem} (test)") or r.get(f"{stem} (left out)")


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.3f}-{max(values):.3f} (spread {max(values) - min(values):.3f})"


def report(results: list[dict[str, Any]], command: str) -> str:
    """The Markdown tables of every run's held-out cell results."""
    lines = [
        "# The cell classifier on cells it never saw, per source",
        "",
        f"Generated by `{command}`.",
        "",
        "Cut per run chosen on validation cells of its own sources only (a bundle: its own",
        "`cell_cut`). `(left out)`: the run never trained on that source, judged on all of",
        "its photos. 95% intervals: bootstrap for AUC, Wilson for rates.",
        "",
        "| run | trained on | kaggle labels | cut | ALL-IDB1 cell AUC | blast sens. @cut "
        "| non-blast spec. @cut | PBC lymphocytes called blast | PBC all called blast "
        "| kaggle-all photo AUC (top cell) |",
        "|---|---|---|---:|---|---|---|---|---|---|",
    ]
    for r in results:
        idb, pbc = _first(r, "all-idb1"), _first(r, "pbc")
        kag = _first(r, "kaggle-all photos")
        left = [k.split(" (")[0] for k in r if k.endswith("(left out)")]
        tags = f" ({', '.join(left)} left out)" if left else ""
        lines.append(
            f"| {r['run']} | {', '.join(r['trained_on'])}{tags} "
            f"| {r['config']['kaggle_labels']} | {r['cut']:.3f} | {_fmt_auc(idb)} "
            f"| {_fmt_rate(idb and idb['sensitivity'])} | {_fmt_rate(idb and idb['specificity'])} "
            f"| {_fmt_rate(pbc and pbc.get('called_blast lymphocyte'))} "
            f"| {_fmt_rate(pbc and pbc['called_blast'])} | {_fmt_auc(kag)} |"
        )
    mains = [
        r
        for r in results
        if r["config"]["kaggle_labels"] == "mil" and len(r["trained_on"]) == len(CELL_SOURCES)
    ]
    if len(mains) > 1:
        idb_aucs = [a["auc"] for r in mains if (a := r.get("all-idb1 (test)")) and a["auc"]]
        kag_aucs = [
            a["auc"] for r in mains if (a := r.get("kaggle-all photos (test)")) and a["auc"]
        ]
        lines += [
            "",
            f"Seeds of the shipped recipe ({', '.join(r['run'] for r in mains)}): ALL-IDB1 "
            f"held-out cell AUC {_spread(idb_aucs)}; kaggle-all photo AUC {_spread(kag_aucs)}.",
        ]
    lines += ["", "## PBC cells called blast, per type", ""]
    types = sorted(
        {
            k.split(" ", 1)[1]
            for r in results
            if (pbc := _first(r, "pbc"))
            for k in pbc
            if k != "called_blast"
        }
    )
    lines.append("| run | " + " | ".join(types) + " |")
    lines.append("|---|" + "---|" * len(types))
    for r in results:
        if pbc := _first(r, "pbc"):
            cells = " | ".join(_fmt_rate(pbc.get(f"called_blast {t}")) for t in types)
            lines.append(f"| {r['run']} | {cells} |")
    lines += [
        "",
        "## Healthy held-out fields: detections, and those called blast",
        "",
        "Every detection on a healthy field is a non-blast or no white cell at all (platelet",
        "clumps, debris); those called blast are what raise a healthy field's score.",
        "",
        "| run | source | fields | detections per field | called blast per field |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        for src, h in r.get("healthy_fields", {}).items():
            lines.append(
                f"| {r['run']} | {src} | {h['fields']} | {h['detections_per_field']} "
                f"| {h['called_blast_per_field']} |"
            )
    with_fields = [r for r in results if "fields" in r]
    if with_fields:
        lines += [
            "",
            "## Field level (test photos; slide model and band fitted on validation photos)",
            "",
            "| run | scope | photos | ROC AUC [95% CI] | sens. @cut | spec. @cut "
            "| indeterminate | sens. decided | spec. decided |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in with_fields:
            for scope, m in r["fields"].get("test", {}).items():
                band = m.get("band", {})
                ci = m.get("roc_auc_ci")
                auc = "-" if m.get("roc_auc") is None else f"{m['roc_auc']:.3f}"
                auc += f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
                lines.append(
                    f"| {r['run']} | {scope} | {m.get('n')} | {auc} "
                    f"| {_num(m.get('sensitivity'))} | {_num(m.get('specificity'))} "
                    f"| {_num(band.get('indeterminate_rate'))} "
                    f"| {_num(band.get('sensitivity_decided'))} "
                    f"| {_num(band.get('specificity_decided'))} |"
                )
        lines += [
            "",
            "Healthy test fields with one or two white cells, by verdict:",
            "",
            "| run | fields (per source) | leukemia suspected | indeterminate | no leukemia |",
            "|---|---|---:|---:|---:|",
        ]
        for r in with_fields:
            f = r["fields"]["few_cell_healthy"]
            per = ", ".join(f"{k} {v}" for k, v in f["by_source"].items())
            lines.append(
                f"| {r['run']} | {f['fields']} ({per}) | {f['suspected']} "
                f"| {f['indeterminate']} | {f['no_leukemia']} |"
            )
    return "\n".join(lines) + "\n"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """`leukoscope-tools cells sources`'s arguments."""
    ap.add_argument("cells", type=Path, help="the `cells dataset` cache folder")
    ap.add_argument("--runs", type=Path, nargs="*", default=[], help="run folders")
    ap.add_argument("--out", type=Path, required=True, help="the Markdown report")
    ap.add_argument(
        "--fields",
        type=Path,
        nargs="*",
        default=[],
        help="of --runs, those whose field-level test results are given too",
    )
    ap.add_argument(
        "--bundle",
        type=Path,
        nargs="*",
        default=[],
        help="cells bundles judged beside the runs (their int8 model, their own cell cut)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Judge each run on its held-out cells; write the report and its JSON beside it."""
    cs = load(args.cells)
    results = []
    for bundle_dir in args.bundle:
        p, cut, m = score_bundle(cs, bundle_dir)
        # Trained on the train photos of the sources its manifest names.
        config = {"seed": None, "kaggle_labels": "photo (bundle)", "hard_weight": None}
        name = f"bundle {m['name']} {m['version']}"
        results.append(judge(cs, p, m["trained"], cut, name, config))
        results[-1]["fields"] = {"test": {}, "few_cell_healthy": m["few"]}
    for run in args.runs:
        if (run / "run.json").is_file():
            results.append(judge_run(cs, run))
            if run in args.fields:
                results[-1]["fields"] = fields(cs, run)
    command = "leukoscope-tools cells sources " + " ".join(
        [str(args.cells), "--runs", *map(str, args.runs), "--out", str(args.out)]
        + (["--fields", *map(str, args.fields)] if args.fields else [])
        + (["--bundle", *map(str, args.bundle)] if args.bundle else [])
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(results, command))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print(args.out.read_text())
    return 0
