"""Validate the sample rule: cell error rates, simulated samples, the rule chosen, the report.

For a cells bundle and the split its photos come from (`models/whole-field/split.csv`):

1. The device's analysis (the bundle's analyser, as `pipeline.analyse` runs it; the quality
   gate measured but not enforced, as the cell tools do) on the validation and test
   photos of ALL-IDB1 and kaggle-all, and on PBC's normal single cells (never used for
   training). kaggle-all's 224x224 photos are analysed at its calibrated scale (the
   bundle's compare.json), as a rig with `[camera] px_per_um` would; ALL-IDB1 and PBC
   at the red-cell ruler's (PBC photos where it fails: the median of those where it works).
   Per-photo counts and every cell's blast probability are cached under `--cache`.
2. The classifier's cell-level rates at its cell cut, on VALIDATION cells with cell-level
   truth: sensitivity on ALL-IDB1 validation slides' annotated blasts (the detection each
   matches), specificity on the detected cells of healthy validation slides and on PBC's
   normal cells (the detection at the photo's centre), and on the cells of kaggle-all's
   benign validation photos: their labels are per photo, but a benign photo (hematogones,
   no ALL) holds no leukemic blast, so each of its cells is a true "not a blast". (A
   leukemia photo's cells are not all blasts: they are shown, never used as truth.)
3. Simulated samples (`evaluate.samples`): the rule chosen on validation pools, then
   judged on test pools, beside the bundle's per-field verdicts on the same test photos.

    leukoscope-tools cells samples ../shared/data --write-manifest

writes models/reports/samples.md and samples.json and, with --write-manifest, the
bundle manifest's `sample` object (the rule and the rates; no file hash covers
manifest.json, so nothing else changes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leukoscope.analysis.analysers import CellAnalyser
from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.differential import PERFECT, ErrorRates, SampleRule
from leukoscope.model.bundle import Bundle, load_bundle
from leukoscope.pipeline import analyse
from leukoscope_tools.data.annotations import MATCH_UM, match, read_xyc
from leukoscope_tools.data.cells import DEFAULT_SPLIT, SOURCES
from leukoscope_tools.data.photos import LEUKEMIA, NORMAL, Row, read_table
from leukoscope_tools.evaluate.samples import (
    CRITERION,
    MAX_WRONG,
    Field,
    best_try,
    choose_rule,
    evaluate_rule,
    rule_dict,
    rule_grid,
)
from leukoscope_tools.metrics import wilson

logger = logging.getLogger(__name__)

DEFAULT_BUNDLE = Path("models/default")
DEFAULT_OUT = Path("models/reports")
DEFAULT_CACHE = Path("build/samples")
#: kaggle-all's calibrated scale when the bundle records none (compare.json's value).
KAGGLE_PX_PER_UM = 2.13
PBC = "pbc-normal"
#: A PBC photo's cell is the detection nearest its centre, at most this far (um) from it.
PBC_CENTRE_UM = 12.0
#: The field-count curve on test: the chosen rule with these max_fields.
FIELD_CURVE = (1, 2, 5, 10, 20, 40, 80)
CACHE_VERSION = 1
#: No measured rates better than chance: the classifier's calls counted as they are.
UNCORRECTED = "uncorrected"


@dataclass
class PhotoResult:
    """One photo through the device's analysis: its verdict, counts and cells."""

    path: str
    source: str
    label: str
    cls: str
    group: str
    split: str
    verdict: str
    score: float | None
    gate_ok: bool
    gate_reasons: list[str]
    px_per_um: float | None
    n_found: int
    #: Cells classified and called blasts at the bundle's cell cut (0 for a retake).
    n_classified: int
    n_blasts: int
    #: Every classified cell: [x, y, p_blast].
    cells: list[list[float]]

    @property
    def retake(self) -> bool:
        """The device's analysis asked for a retake: the field counts nothing in a sample."""
        return self.verdict == Verdict.RETAKE.value

    @property
    def field(self) -> Field:
        """The counts a sample adds for this field."""
        return Field(self.n_classified, self.n_blasts)


def cache_dir(bundle: Bundle, root: Path) -> Path:
    """The cache for this model and its cell settings (a new model gets a new folder)."""
    raw = bundle.manifest.raw
    key = json.dumps([CACHE_VERSION, raw["files"]["model.tflite"], raw.get("cells")])
    return root / hashlib.sha256(key.encode()).hexdigest()[:12]


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[row["path"]] = row
    return out


def analyse_photo(data: Path, bundle: Bundle, row: Row, px_per_um: float | None) -> PhotoResult:
    """One photo through the pipeline (gate measured, not enforced)."""
    rgb = bundle.analyser.decode(data / row.path)
    a = analyse(rgb, bundle, None, gate=False, px_per_um=px_per_um)
    report = a.cells
    ok = a.verdict is not Verdict.RETAKE and report is not None
    return PhotoResult(
        path=row.path,
        source=row.source,
        label=row.label,
        cls=row.cls,
        group=row.group,
        split=row.split,
        verdict=a.verdict.value,
        score=a.p_leukemia,
        gate_ok=bool(a.quality is not None and a.quality.ok),
        gate_reasons=[r.value for r in a.quality.reasons] if a.quality else [],
        px_per_um=None if report is None else round(report.px_per_um, 4),
        n_found=0 if report is None else report.n_found,
        n_classified=report.n_classified if ok and report else 0,
        n_blasts=report.features.n_blasts if ok and report else 0,
        cells=[]
        if report is None
        else [[round(c.x, 1), round(c.y, 1), round(c.p_blast, 5)] for c in report.cells],
    )


def analyse_photos(
    data: Path, bundle: Bundle, rows: Sequence[Row], cache: Path, kaggle_px_per_um: float
) -> list[PhotoResult]:
    """Every photo's result, from the cache or analysed now (and appended to the cache)."""
    path = cache / "photos.jsonl"
    cached = _read_cache(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    t0 = time.perf_counter()
    with path.open("a") as f:
        for i, row in enumerate(rows):
            got = cached.get(row.path)
            if got is None:
                scale = kaggle_px_per_um if row.source == "kaggle-all" else None
                result = analyse_photo(data, bundle, row, scale)
                f.write(json.dumps(asdict(result)) + "\n")
                f.flush()
            else:
                result = PhotoResult(**got)
            out.append(result)
            if (i + 1) % 200 == 0:
                logger.info("%d/%d photos, %.0f s", i + 1, len(rows), time.perf_counter() - t0)
    return out


def _centre_cell(analyser: CellAnalyser, rgb: np.ndarray, px_per_um: float | None) -> Any:
    a = analyser.analyse_cells(rgb, px_per_um=px_per_um)
    if a.report is None:
        return None, None
    h, w = rgb.shape[:2]
    best = None
    for c in a.report.cells:
        d = float(np.hypot(c.x - w / 2, c.y - h / 2)) / a.report.px_per_um
        if d <= PBC_CENTRE_UM and (best is None or d < best[0]):
            best = (d, c.p_blast)
    return a.report.px_per_um, None if best is None else best[1]


def analyse_pbc(data: Path, bundle: Bundle, cache: Path) -> list[dict[str, Any]]:
    """PBC's normal cells as the device crops them: the centre cell's blast probability.

    The scale is the red-cell ruler's; where it fails, the median over the PBC photos
    where it worked (one camera and magnification for all of them).
    """
    path = cache / "pbc.json"
    if path.is_file():
        cached: list[dict[str, Any]] = json.loads(path.read_text())
        return cached
    analyser = bundle.analyser
    if not isinstance(analyser, CellAnalyser):
        raise ValueError(f"{bundle.root}: not a cells bundle")
    files = sorted((data / PBC).glob("*/*.jpg"))
    if not files:
        raise FileNotFoundError(f"{data / PBC}: no PBC photos")
    out: list[dict[str, Any]] = []
    failed = []
    for f in files:
        scale, p = _centre_cell(analyser, analyser.decode(f), None)
        row = {"file": f.relative_to(data).as_posix(), "cls": f.parent.name}
        if scale is None:
            failed.append((f, row))
            continue
        out.append({**row, "scale": "red-cells", "px_per_um": round(scale, 3), "p_blast": p})
    median = statistics.median(r["px_per_um"] for r in out)
    for f, row in failed:
        _, p = _centre_cell(analyser, analyser.decode(f), median)
        out.append({**row, "scale": "pbc-median", "px_per_um": round(median, 3), "p_blast": p})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=0) + "\n")
    return out


def _rate(k: int, n: int) -> dict[str, Any]:
    ci = wilson(k, n)
    return {
        "k": k,
        "n": n,
        "rate": round(k / n, 4) if n else None,
        "ci": None if ci is None else [round(ci[0], 4), round(ci[1], 4)],
    }


def idb1_blast_calls(data: Path, photos: Sequence[PhotoResult], cut: float) -> dict[str, Any]:
    """ALL-IDB1 leukemia slides: annotated blasts, those detected, and those called blasts."""
    annotated = detected = called = 0
    for ph in photos:
        blasts = read_xyc(data / "all-idb1" / "xyc" / f"{Path(ph.path).stem}.xyc")
        cells = np.asarray(ph.cells, np.float64).reshape(-1, 3)
        annotated += len(blasts)
        if ph.px_per_um is None or not len(cells):
            continue
        _, _, used = match(blasts, cells[:, :2], MATCH_UM * ph.px_per_um)
        detected += int(used.sum())
        called += int((cells[used, 2] >= cut).sum())
    return {
        "slides": len(photos),
        "annotated_blasts": annotated,
        "detected": detected,
        "sensitivity": _rate(called, detected),
    }


def cell_rates(
    data: Path, photos: Sequence[PhotoResult], pbc: Sequence[dict[str, Any]], cut: float
) -> dict[str, Any]:
    """The classifier's rates at `cut` on validation cells with cell-level truth, per source."""
    val_idb1 = [p for p in photos if p.source == "all-idb1" and p.split == "val"]
    blasts = idb1_blast_calls(data, [p for p in val_idb1 if p.label == LEUKEMIA], cut)
    healthy = [c[2] for p in val_idb1 if p.label == NORMAL and not p.retake for c in p.cells]
    idb1_tn = sum(v < cut for v in healthy)
    pbc_found = [r for r in pbc if r["p_blast"] is not None]
    pbc_tn = sum(r["p_blast"] < cut for r in pbc_found)
    per_class = {
        cls: _rate(
            sum(r["p_blast"] < cut for r in pbc_found if r["cls"] == cls),
            sum(r["cls"] == cls for r in pbc_found),
        )
        for cls in sorted({r["cls"] for r in pbc})
    }
    kaggle_benign = [
        c[2]
        for p in photos
        if p.source == "kaggle-all" and p.split == "val" and p.label == NORMAL
        for c in p.cells
        if not p.retake
    ]
    kaggle_leuk = [
        c[2]
        for p in photos
        if p.source == "kaggle-all" and p.split == "val" and p.label == LEUKEMIA
        for c in p.cells
        if not p.retake
    ]
    sens = blasts["sensitivity"]
    kaggle_tn = sum(v < cut for v in kaggle_benign)
    spec_k = idb1_tn + pbc_tn + kaggle_tn
    spec_n = len(healthy) + len(pbc_found) + len(kaggle_benign)
    result: dict[str, Any] = {
        "cell_cut": cut,
        "all-idb1": {
            "blasts": blasts,
            "healthy_slides": sum(p.label == NORMAL for p in val_idb1),
            "specificity": _rate(idb1_tn, len(healthy)),
        },
        PBC: {
            "photos": len(pbc),
            "centre_cell_found": len(pbc_found),
            "scale_from_median": sum(r["scale"] == "pbc-median" for r in pbc),
            "specificity": _rate(pbc_tn, len(pbc_found)),
            "specificity_by_class": per_class,
        },
        "kaggle-all": {
            "benign_photos": sum(
                p.source == "kaggle-all" and p.split == "val" and p.label == NORMAL for p in photos
            ),
            "specificity": _rate(kaggle_tn, len(kaggle_benign)),
            "leukemia_photos_cells_called_blast": _rate(
                sum(v >= cut for v in kaggle_leuk), len(kaggle_leuk)
            ),
        },
        "pooled": {
            "sensitivity": sens,
            "specificity": _rate(spec_k, spec_n),
        },
    }
    s, p = sens["rate"], result["pooled"]["specificity"]["rate"]
    checks = {
        "pooled": (s, p),
        "all-idb1": (s, result["all-idb1"]["specificity"]["rate"]),
        PBC: (s, result[PBC]["specificity"]["rate"]),
        "kaggle-all": (s, result["kaggle-all"]["specificity"]["rate"]),
    }
    result["better_than_chance"] = {
        k: None if a is None or b is None else bool(a + b > 1.0) for k, (a, b) in checks.items()
    }
    where = f"validation cells at cell cut {cut:g}: sensitivity on {sens['n']} detected " + (
        f"annotated blasts of {blasts['slides']} ALL-IDB1 slides; specificity on "
    )
    idb1_cells = (
        f"{len(healthy)} cells detected on {result['all-idb1']['healthy_slides']} healthy "
        "ALL-IDB1 slides"
    )
    kaggle_cells = (
        f"{len(kaggle_benign)} cells of {result['kaggle-all']['benign_photos']} kaggle-all "
        "benign photos"
    )
    result["candidates"] = {
        "all-idb1": {"specificity_from": "all-idb1", "measured_on": f"{where}{idb1_cells}"},
        "kaggle-all": {"specificity_from": "kaggle-all", "measured_on": f"{where}{kaggle_cells}"},
        "pooled": {
            "specificity_from": "pooled",
            "measured_on": f"{where}{spec_n} normal cells ({idb1_cells}, {len(pbc_found)} PBC "
            f"normal cells, {kaggle_cells})",
        },
    }
    return result


#: The least Youden index (sensitivity + specificity - 1) of rates a rule may correct by.
#: Rogan-Gladen divides by it: with sensitivity 0.91 and specificity 0.15 (kaggle-all's
#: benign cells under cells-thanh 1.1.0) every observed share below 85% corrects to 0, so
#: on a lab where the classifier does well a leukemic sample would be cleared.
MIN_YOUDEN = 0.5


def rate_candidates(rates: dict[str, Any]) -> dict[str, ErrorRates]:
    """The measured rates the rule may correct by: those well better than chance, by name.

    The sensitivity is ALL-IDB1's (the only cell-level blast truth); the specificity that
    of one source's normal cells (ALL-IDB1, kaggle-all) or of all of them pooled with PBC's.
    Rates whose Youden index is under `MIN_YOUDEN` are left out. None left: the classifier
    taken at its word ("uncorrected"), which no manifest can record.
    """
    s = rates["pooled"]["sensitivity"]["rate"]
    out = {}
    for name, c in rates["candidates"].items():
        p = rates[c["specificity_from"]]["specificity"]["rate"]
        if s is not None and p is not None and s + p - 1.0 >= MIN_YOUDEN:
            out[name] = ErrorRates(s, p)
    return out or {UNCORRECTED: PERFECT}


def pools_of(
    photos: Sequence[PhotoResult], split: str, *, by_group: bool = False
) -> dict[str, tuple[str, list[Field]]]:
    """The non-retake fields of `split` pooled by source and label (and group)."""
    pools: dict[str, tuple[str, list[Field]]] = {}
    for p in photos:
        if p.split != split or p.retake:
            continue
        name = f"{p.source} {p.label}" + (f" {p.group}" if by_group else "")
        pools.setdefault(name, (p.label, []))[1].append(p.field)
    return pools


def field_results(photos: Sequence[PhotoResult], split: str) -> dict[str, dict[str, Any]]:
    """The bundle's per-photo verdicts on `split`, per source and label."""
    out: dict[str, dict[str, Any]] = {}
    for source in SOURCES:
        for label in (LEUKEMIA, NORMAL):
            mine = [p for p in photos if p.split == split and p.source == source]
            mine = [p for p in mine if p.label == label]
            if not mine:
                continue
            v = Counter(p.verdict for p in mine)
            n = len(mine)
            refer = v[Verdict.LEUKEMIA_SUSPECTED.value]
            clear = v[Verdict.NO_LEUKEMIA_SUSPECTED.value]
            right, wrong = (refer, clear) if label == LEUKEMIA else (clear, refer)
            out[f"{source} {label}"] = {
                "label": label,
                "photos": n,
                "correct": _rate(right, n),
                "wrong": _rate(wrong, n),
                "indeterminate": _rate(v[Verdict.INDETERMINATE.value], n),
                "retake": _rate(v[Verdict.RETAKE.value], n),
                "gate_would_refuse": sum(not p.gate_ok for p in mine),
                "cells_per_field_median": float(statistics.median(p.n_classified for p in mine)),
            }
    return out


def validate(
    data: Path,
    bundle_dir: Path,
    split_path: Path,
    cache_root: Path,
    *,
    rounds: int,
    select_rounds: int,
    seed: int,
    kaggle_px_per_um: float | None,
) -> dict[str, Any]:
    """Every number of the report."""
    bundle = load_bundle(bundle_dir)
    if not isinstance(bundle.analyser, CellAnalyser):
        raise ValueError(f"{bundle_dir}: not a cells bundle")
    cut = bundle.analyser.settings.cell_cut
    if kaggle_px_per_um is None:
        kaggle_px_per_um = kaggle_scale(bundle_dir)
    rows = [r for r in read_table(split_path) if r.source in SOURCES and r.split in ("val", "test")]
    cache = cache_dir(bundle, cache_root)
    logger.info("%d photos; cache %s", len(rows), cache)
    photos = analyse_photos(data, bundle, rows, cache, kaggle_px_per_um)
    pbc = analyse_pbc(data, bundle, cache)
    rates = cell_rates(data, photos, pbc, cut)
    candidates = rate_candidates(rates)
    val_pools = pools_of(photos, "val")
    test_pools = pools_of(photos, "test")
    t0 = time.perf_counter()
    rule, rates_name, qualified, tried = choose_rule(
        val_pools, rule_grid(), candidates, select_rounds, seed
    )
    logger.info("%d rules tried in %.0f s", len(tried), time.perf_counter() - t0)
    used_rates = candidates[rates_name]
    chosen = next(t for t in tried if t["rule"] == rule_dict(rule) and t["rates"] == rates_name)
    curve = {}
    for mf in FIELD_CURVE:
        r = SampleRule(rule.threshold, rule.min_cells, rule.max_cells, mf)
        curve[str(mf)] = evaluate_rule(test_pools, r, used_rates, rounds, seed)
    group_pools = {
        k: v for k, v in pools_of(photos, "test", by_group=True).items() if k.startswith("all-idb1")
    }
    return {
        "bundle": {
            "path": str(bundle_dir),
            "name": bundle.manifest.name,
            "version": bundle.manifest.version,
            "model_sha256": bundle.manifest.raw["files"]["model.tflite"],
        },
        "split": str(split_path),
        "kaggle_px_per_um": kaggle_px_per_um,
        "seed": seed,
        "rounds": rounds,
        "select_rounds": select_rounds,
        "photos": {
            f"{s} {sp} {lab}": sum(
                p.source == s and p.split == sp and p.label == lab for p in photos
            )
            for s in SOURCES
            for sp in ("val", "test")
            for lab in (LEUKEMIA, NORMAL)
        },
        "retakes": {
            f"{s} {sp}": sum(p.source == s and p.split == sp and p.retake for p in photos)
            for s in SOURCES
            for sp in ("val", "test")
        },
        "cell_rates": rates,
        "rate_candidates": {k: asdict(v) for k, v in candidates.items()},
        "rates": rates_name,
        "rates_used": asdict(used_rates),
        "criterion": CRITERION,
        "rule": rule_dict(rule),
        "rule_qualified": qualified,
        "validation": {k: chosen[k] for k in ("worst_wrong", "mean_correct", "mean_fields")}
        | {"pools": chosen["pools"]},
        "grid": [
            {k: t[k] for k in ("rates", "rule", "worst_wrong", "mean_correct", "mean_fields")}
            for t in tried
        ],
        "test": evaluate_rule(test_pools, rule, used_rates, rounds, seed),
        "test_by_max_fields": curve,
        "test_idb1_one_group": evaluate_rule(group_pools, rule, used_rates, 1, seed),
        "per_field_test": field_results(photos, "test"),
    }


def kaggle_scale(bundle_dir: Path) -> float:
    """kaggle-all's calibrated scale as the bundle's compare.json records it."""
    path = bundle_dir / "compare.json"
    if path.is_file():
        cal = json.loads(path.read_text()).get("dataset", {}).get("kaggle_calibration", {})
        if cal.get("px_per_um"):
            return float(cal["px_per_um"])
    return KAGGLE_PX_PER_UM


def sample_object(result: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's `sample` object: the rule and the rates it was chosen with.

    None when the rule counts uncorrected (no measured rates better than chance): a
    manifest's rates must be measured ones.
    """
    name = result["rates"]
    if name == UNCORRECTED:
        return None
    used = result["rates_used"]
    return {
        **result["rule"],
        "sensitivity": used["sensitivity"],
        "specificity": used["specificity"],
        "measured_on": result["cell_rates"]["candidates"][name]["measured_on"],
    }


def write_manifest_sample(bundle_dir: Path, sample: dict[str, Any]) -> None:
    """Set the manifest's `sample` object, keeping its formatting (indent 2) and key order."""
    path = bundle_dir / "manifest.json"
    raw = json.loads(path.read_text())
    if "sample" in raw:
        raw["sample"] = sample
    else:
        # After `cells`, where a reader looks for the cell settings.
        out: dict[str, Any] = {}
        for k, v in raw.items():
            out[k] = v
            if k == "cells":
                out["sample"] = sample
        raw = out if "sample" in out else {**raw, "sample": sample}
    path.write_text(json.dumps(raw, indent=2) + "\n")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """`leukoscope-tools cells samples`'s arguments."""
    ap.add_argument("data", type=Path, help="the data root (../shared/data)")
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for samples.md/json")
    ap.add_argument("--rounds", type=int, default=200, help="shuffles per test pool")
    ap.add_argument(
        "--select-rounds", type=int, default=20, help="shuffles per validation pool and rule"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--kaggle-px-per-um",
        type=float,
        default=None,
        help="kaggle-all's calibrated scale (default: the bundle's compare.json)",
    )
    ap.add_argument(
        "--write-manifest",
        action="store_true",
        help="write the chosen rule and the rates into the bundle's manifest (`sample`)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Measure, simulate, choose, report; optionally write the manifest's `sample`."""
    result = validate(
        args.data,
        args.bundle,
        args.split,
        args.cache,
        rounds=args.rounds,
        select_rounds=args.select_rounds,
        seed=args.seed,
        kaggle_px_per_um=args.kaggle_px_per_um,
    )
    result["command"] = getattr(args, "invocation", "leukoscope-tools cells samples")
    sample = sample_object(result)
    result["manifest_sample"] = sample
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "samples.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "samples.md").write_text(render(result))
    print(f"wrote {args.out / 'samples.md'} and samples.json; rule {result['rule']}")
    if args.write_manifest:
        if sample is None:
            print("rates no better than chance: the manifest's sample object not written")
            return 1
        write_manifest_sample(args.bundle, sample)
        print(f"wrote the sample object into {args.bundle / 'manifest.json'}")
    return 0


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _ci_pct(ci: list[float] | None) -> str:
    return "" if not ci else f" [{100 * ci[0]:.0f}-{100 * ci[1]:.0f}]"


def _rate_cell(r: dict[str, Any]) -> str:
    return f"{r['k']}/{r['n']} = {_pct(r['rate'])}{_ci_pct(r['ci'])}"


def _pool_rows(pools: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    for name, p in pools.items():
        if not p.get("samples"):
            rows.append(f"| {name} | 0 | | | | | |")
            continue
        what = "sensitivity" if p["label"] == LEUKEMIA else "specificity"
        rows.append(
            f"| {name} | {p['samples_per_round']:g} | {what} {_pct(p['correct'])}"
            f"{_ci_pct(p['correct_ci'])} | {_pct(p['wrong'])}{_ci_pct(p['wrong_ci'])} | "
            f"{_pct(p['indeterminate'])} (ran out {_pct(p['ran_out'])}) | "
            f"{p['fields_mean']:g} (max {p['fields_max']}) | {p['cells_mean']:g} |"
        )
    return rows


#: What the simulation cannot show, said under every report.
CAVEATS = [
    "## What these numbers cannot show",
    "",
    "- A pool mixes the fields of many patients (kaggle-all has 89 patients and no patient "
    "ids; its validation and test photos may share patients), so a simulated sample is not a "
    "patient, and kaggle-all's test samples are optimistic for a new patient.",
    "- The rates differ widely by source (table 1): the corrected blast share is only as "
    "right as the rates are for the microscope in use. A new microscope needs its own rates, "
    "measured on its own validation cells, before a sample's percentage means anything.",
    "- ALL-IDB1's healthy slides show two or three white cells a field: their pools hold too "
    "few cells to reach min_cells, so the rule is not judged on them (indeterminate, ran out).",
    "- The interval ignores the uncertainty of the rates themselves (see table 1's intervals).",
]

POOL_HEAD = [
    "| pool | samples per round | right decision [95% CI] | wrong decision | indeterminate "
    "| fields, mean | cells, mean |",
    "|---|---|---|---|---|---|---|",
]


def render(res: dict[str, Any]) -> str:
    """samples.md: the rates, the rule and how it was chosen, the test samples and fields."""
    cr = res["cell_rates"]
    idb = cr["all-idb1"]
    pbc = cr[PBC]
    kag = cr["kaggle-all"]
    rule = res["rule"]
    lines = [
        "# Samples, not single fields: validation of the sample rule",
        "",
        f"Bundle `{res['bundle']['name']} {res['bundle']['version']}` (`{res['bundle']['path']}`,"
        f" model sha256 {res['bundle']['model_sha256'][:12]}...), photos from `{res['split']}`.",
        "Made by (every number here is in samples.json beside it):",
        "",
        f"    {res['command']}",
        "",
        "The device's analysis (the bundle's analyser; the quality gate measured, not "
        f"enforced) on each photo; kaggle-all at its calibrated {res['kaggle_px_per_um']:g} "
        "px/um, ALL-IDB1 and PBC at the red-cell ruler's scale. Retakes count nothing in a "
        "sample. Photos: "
        + ", ".join(f"{k} {v}" for k, v in res["photos"].items())
        + "; retakes among them: "
        + ", ".join(f"{k} {v}" for k, v in res["retakes"].items())
        + ".",
        "",
        f"## 1. The cell classifier's rates at its cell cut ({cr['cell_cut']:g}), validation cells",
        "",
        "| cells | truth | rate [95% Wilson CI] |",
        "|---|---|---|",
        f"| ALL-IDB1 annotated blasts ({idb['blasts']['annotated_blasts']} on "
        f"{idb['blasts']['slides']} slides, {idb['blasts']['detected']} detected) | blast | "
        f"sensitivity {_rate_cell(idb['blasts']['sensitivity'])} |",
        f"| ALL-IDB1 healthy slides ({idb['healthy_slides']}), detected cells | not blast | "
        f"specificity {_rate_cell(idb['specificity'])} |",
        f"| PBC normal cells (centre cell found in {pbc['centre_cell_found']} of {pbc['photos']}) "
        f"| not blast | specificity {_rate_cell(pbc['specificity'])} |",
    ]
    for cls, r in pbc["specificity_by_class"].items():
        lines.append(f"| PBC {cls} | not blast | specificity {_rate_cell(r)} |")
    lines += [
        f"| **pooled** | | sensitivity "
        f"{_rate_cell(cr['pooled']['sensitivity'])}, specificity "
        f"{_rate_cell(cr['pooled']['specificity'])} |",
        f"| kaggle-all benign photos' cells ({kag['benign_photos']} photos; hematogones among "
        f"them, no leukemic blast) | not blast | specificity {_rate_cell(kag['specificity'])} |",
        f"| kaggle-all leukemia photos' cells (photo labels) | (not cell truth) | called blast "
        f"{_rate_cell(kag['leukemia_photos_cells_called_blast'])} |",
        "",
    ]
    btc = cr["better_than_chance"]
    bad = [k for k, v in btc.items() if v is False]
    if bad:
        lines.append(
            f"**Sensitivity + specificity is at most 1 for: {', '.join(bad)}.** On those cells "
            "the classifier is no better than chance, and no correction can recover the true "
            "blast share from its calls."
        )
    used = res["rates_used"]
    if res["rates"] == UNCORRECTED:
        lines.append(
            "No measured rates are better than chance: the simulation counts the "
            "classifier's calls uncorrected and the manifest gets no `sample` object."
        )
    else:
        lines.append(
            "Candidate rates to correct by (Rogan-Gladen), chosen with the rule below: "
            + "; ".join(
                f"`{k}` (sensitivity {_pct(v['sensitivity'])}, specificity "
                f"{_pct(v['specificity'])})"
                for k, v in res["rate_candidates"].items()
            )
            + f". Chosen: **`{res['rates']}`** (sensitivity {_pct(used['sensitivity'])}, "
            f"specificity {_pct(used['specificity'])}), written to the manifest. Where a "
            "source's own rates differ from these, its corrected blast share is biased: the "
            "rule is judged with that bias in place."
        )
    lines += [
        "",
        "## 2. The rule, chosen on validation samples",
        "",
        f"Criterion: {res['criterion']}. Grid: {len(res['grid'])} rules and rates; "
        f"{res['select_rounds']} shuffles per validation pool.",
        "",
        f"Chosen: **threshold {100 * rule['threshold']:g}%, min_cells {rule['min_cells']}, "
        f"max_cells {rule['max_cells']}, max_fields {rule['max_fields']}**"
        + ("" if res["rule_qualified"] else " (**no rule met the 5% wrong-decision bound**)")
        + f"; worst pool wrong {_pct(res['validation']['worst_wrong'])}, mean right "
        f"{_pct(res['validation']['mean_correct'])}, mean fields "
        f"{res['validation']['mean_fields']:g}.",
        "",
        *POOL_HEAD,
        *_pool_rows(res["validation"]["pools"]),
        "",
        "The best rule for each candidate rates (validation):",
        "",
        "| rates | rule (threshold, min-max cells, max fields) | worst pool wrong "
        "| mean right | mean fields |",
        "|---|---|---|---|---|",
    ]
    for name in res["rate_candidates"]:
        b = best_try([t for t in res["grid"] if t["rates"] == name])
        r = b["rule"]
        bound = "" if b["worst_wrong"] <= MAX_WRONG else " (over the bound)"
        lines.append(
            f"| `{name}` | {100 * r['threshold']:g}%, {r['min_cells']}-{r['max_cells']}, "
            f"{r['max_fields']} | {_pct(b['worst_wrong'])}{bound} | {_pct(b['mean_correct'])} "
            f"| {b['mean_fields']:g} |"
        )
    lines += [
        "",
        f"## 3. Test samples ({res['rounds']} shuffles per pool, seed {res['seed']})",
        "",
        "A pool is the test photos of one source and label; samples within a shuffle share no "
        "field, and the interval uses the samples per shuffle as n.",
        "",
        *POOL_HEAD,
        *_pool_rows(res["test"]),
        "",
        "Per field, the bundle's own verdict on the same test photos:",
        "",
        "| photos | n | right | wrong | indeterminate | retake | white cells per field, median |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in res["per_field_test"].items():
        lines.append(
            f"| {name} | {f['photos']} | {_rate_cell(f['correct'])} | {_rate_cell(f['wrong'])} "
            f"| {_pct(f['indeterminate']['rate'])} | {_pct(f['retake']['rate'])} | "
            f"{f['cells_per_field_median']:g} |"
        )
    lines += [
        "",
        "Against the number of fields: the chosen rule with other max_fields, test pools "
        "(right decision / wrong / indeterminate, mean fields):",
        "",
        "| max_fields | " + " | ".join(res["test"]) + " |",
        "|---|" + "---|" * len(res["test"]),
    ]
    for mf, pools in res["test_by_max_fields"].items():
        cells = []
        for name in res["test"]:
            p = pools.get(name, {})
            cells.append(
                "-"
                if not p.get("samples")
                else f"{_pct(p['correct'])} / {_pct(p['wrong'])} / {_pct(p['indeterminate'])},"
                f" {p['fields_mean']:g}"
            )
        lines.append(f"| {mf} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "ALL-IDB1 test slide groups as their own samples (each group one sample, its photos in "
        "order; groups hold one to three photos):",
        "",
        "| group | verdict | fields | cells |",
        "|---|---|---|---|",
    ]
    for name, p in res["test_idb1_one_group"].items():
        verdict = (
            "referred" if p["correct"] and p["label"] == LEUKEMIA
            else "cleared" if p["correct"]
            else "WRONG" if p["wrong"]
            else "indeterminate" + (" (ran out)" if p["ran_out"] else "")
        )  # fmt: skip
        lines.append(f"| {name} | {verdict} | {p['fields_mean']:g} | {p['cells_mean']:g} |")
    lines += ["", *CAVEATS, ""]
    return "\n".join(lines)


def render_json(path: Path) -> str:
    """samples.md again from a samples.json (the report's wording changed, not its numbers)."""
    result: dict[str, Any] = json.loads(path.read_text())
    return render(result)
