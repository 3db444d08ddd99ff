"""Measure white-cell detection on ALL-IDB1: recall of annotated blasts, detections per slide.

ALL-IDB1's `xyc/ImNNN_1.xyc` files list blast centroids ("x y" per line); the healthy
slides' files are empty, so every detection there is a normal white cell or a false
detection. Slides are split into tuning and held-out sets by group (overlapping fields
stay together), seeded and written to a file, so the held-out numbers are never tuned on.

    leukoscope-tools cells eval ../shared/data \
        --report models/reports/cell-detection.md
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from leukoscope.analysis.detection import (
    DEFAULT_PARAMS,
    DetectParams,
    detect_white_cells,
    estimate_scale,
)
from leukoscope.core.imageio import load_image
from leukoscope_tools.data.annotations import MATCH_UM, match, read_xyc
from leukoscope_tools.data.idb2_sources import read_idb2_sources
from leukoscope_tools.data.photos import read_table

logger = logging.getLogger(__name__)

#: Fields that photograph overlapping parts of one smear (data README), plus the link
#: from Im005 to the Im013 and Im020 groups that the training tools' feature matching
#: found; Im108 is a byte-identical copy of Im093 and is left out.
OVERLAP_GROUPS = (
    ("Im005", "Im013", "Im014", "Im015", "Im020", "Im021", "Im022", "Im050"),
    ("Im009", "Im010", "Im011"),
    ("Im036", "Im103"),
    ("Im039", "Im044"),
    ("Im078", "Im089"),
)
EXCLUDED = frozenset({"Im108"})
#: A stricter radius (um), reported beside it: is the hit on the nucleus's centre?
STRICT_UM = 4.0
NOTES = """\
## How to read these numbers

- **Method** (`leukoscope.analysis.detection`): white balance by the glass's colour,
  optical density,
  nucleus stain = OD(green) - OD(blue); scale from the median diameter of isolated round
  red cells (taken as 7.5 um); detection at 2 px/um; touching nuclei split at markers in
  their dense cores (a pixel goes to the nearest marker of its own blob); neutrophil lobes
  joined; nuclei under 12 um^2 (platelets) dropped. Parameters were chosen on the `tune`
  slides only (a handful of settings compared, and every overlay looked at was of a
  tuning slide, except Im001 viewed once before the split was drawn). The `held-out`
  numbers were first computed after tuning (161 of 161 blasts found); later changes
  (speed, the scale ruler's refusals) were judged on the tuning slides, and this
  report was regenerated with each. Nothing was chosen on held-out results.
- **Recall is of blast centroids only.** ALL-IDB1 annotates blasts, not other white cells,
  so the recall of normal white cells is not measured here (the synthetic tests do that).
- **False detections are bounded, not counted exactly.** A healthy field at this
  magnification usually shows one to three real white cells, so "detections per healthy
  slide" is an upper bound on false detections. Looking at tuning slides, the extra ones
  are large platelets or platelet clumps and a neutrophil cut in two.
- **Over-splitting:** "blasts split in two" counts annotated blasts with two detections
  within the match radius: the cell is found, but counted twice. A slide decision from
  blast fractions must allow for it. Keeping one marker per connected core, to stop
  it, found only 84% of the tuning blasts (touching blasts' cores often join), and a
  larger minimum split distance also cost recall (97% at 6 um, 94% at 7 um).
- **One dataset, two cameras.** ALL-IDB1 is the only set with cell positions; how the
  detector does on other microscopes and stains is not measured (last table: behaviour
  only). There the red-cell ruler mostly refuses: kaggle-all's 224x224 photos show few
  isolated red cells (about 15 px across), BCCD's red cells overlap, ALL-IDB2 crops hold
  too few. When it refuses, the caller must supply the microscope's calibrated scale
  (`px_per_um=` or `default_px_per_um=`); a wrong scale gives wrong splits and sizes.
  It can still be wrong without refusing (2 kaggle-all/pre photos at 1.4 px/um where
  kaggle-all/pro gives 2.1).
- The scale estimate has no ground truth; it is consistent within each camera (table
  below), and within 5% on synthetic fields of known scale (10% below 3 px/um;
  tests/test_cells.py)."""

#: The section `cells check-eval` (evaluate/detector_check.py) writes into the report,
#: which `--report` here carries over when it rewrites the rest.
SECTION_START = "<!-- detector-check: written by leukoscope-tools cells check-eval -->"
SECTION_END = "<!-- /detector-check -->"
#: The detector's own tune/held-out split of ALL-IDB1, relative to the current folder
#: (the repository root, where the README's commands run).
DEFAULT_SPLIT = Path("models/reports/cell-detection-split.csv")


@dataclass(frozen=True)
class Slide:
    """One ALL-IDB1 image and its annotation."""

    name: str  # e.g. "Im001_1"
    path: Path
    label: str  # "all" or "normal"
    blasts: np.ndarray  # K x 2 (x, y)
    group: str = ""
    split: str = ""


@dataclass
class SlideResult:
    """Detection outcome on one slide."""

    name: str
    label: str
    split: str
    size: str
    px_per_um: float
    n_blasts: int
    found: int
    found_strict: int
    over_split: int  # annotated blasts with two or more detections within MATCH_UM
    detections: int
    unmatched: int
    seconds: float
    missed: list[tuple[float, float]] = field(default_factory=list)


def list_slides(data: Path) -> list[Slide]:
    """Every ALL-IDB1 slide with its annotation (the byte-identical copy excluded)."""
    root = data / "all-idb1"
    slides = []
    for label in ("all", "normal"):
        for path in sorted((root / label).glob("*.jpg")):
            stem = path.stem
            if stem.split("_")[0] in EXCLUDED:
                continue
            slides.append(Slide(stem, path, label, read_xyc(root / "xyc" / f"{stem}.xyc")))
    if not slides:
        raise FileNotFoundError(f"no ALL-IDB1 images under {root}")
    return slides


def group_of(name: str) -> str:
    """The overlap group of a slide: its first member's number, or its own."""
    number = name.split("_")[0]
    for members in OVERLAP_GROUPS:
        if number in members:
            return members[0]
    return number


def make_split(slides: list[Slide], seed: int, held_out: float = 0.5) -> dict[str, str]:
    """Seeded group -> "tune"/"held-out", stratified by label and image size.

    Groups are dealt in a seeded order to whichever side is further below its share of
    the stratum's slides, so whole groups move and both sides see both cameras.
    """
    # A group's stratum is that of its first slide (Im005's group spans both sizes).
    strata: dict[tuple[str, tuple[int, int]], dict[str, int]] = defaultdict(dict)
    stratum_of: dict[str, tuple[str, tuple[int, int]]] = {}
    for s in slides:
        g = group_of(s.name)
        if g not in stratum_of:
            with Image.open(s.path) as im:
                stratum_of[g] = (s.label, im.size)
        members = strata[stratum_of[g]]
        members[g] = members.get(g, 0) + 1
    rng = np.random.default_rng(seed)
    out = {}
    for key in sorted(strata):
        groups = sorted(strata[key])
        total = sum(strata[key].values())
        filled = {"held-out": 0, "tune": 0}
        target = {"held-out": held_out * total, "tune": (1 - held_out) * total}
        for k in rng.permutation(len(groups)):
            g = groups[int(k)]
            side = max(filled, key=lambda s: (target[s] - filled[s], s))
            out[g] = side
            filled[side] += strata[key][g]
    return out


def write_split(path: Path, slides: list[Slide], split: dict[str, str], seed: int) -> None:
    """The split file: slide, group, split (and the seed in a comment line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        f.write(
            f"# ALL-IDB1 slide split for cell detection; seed {seed}; leukoscope-tools cells eval\n"
        )
        w = csv.writer(f)
        w.writerow(["slide", "group", "split"])
        for s in slides:
            g = group_of(s.name)
            w.writerow([s.name, g, split[g]])


def read_split(path: Path) -> dict[str, str]:
    """slide name -> split, from a split file."""
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    return {row["slide"]: row["split"] for row in csv.DictReader(lines)}


def whole_field_split(split_csv: Path) -> dict[str, str]:
    """ALL-IDB1 slide name -> its split (train/val/test/excluded) in a bundle's split.csv.

    The cell classifier is trained on the whole-field model's split, so detection is
    also judged on that split's test slides.
    """
    return {Path(r.path).stem: r.split for r in read_table(split_csv) if r.source == "all-idb1"}


def format_whole_field_split(
    results: list[SlideResult], split_csv: Path, tune: dict[str, str]
) -> str:
    """Detection per split of the whole-field model's split, and its overlap with tuning."""
    lines = [
        "",
        f"## On the whole-field model's split (`{split_csv.name}` of the shipped bundles)",
        "",
        "The cell classifier is trained and tested on this split, not on the detector's own.",
        "The detector's thresholds were tuned on its `tune` slides; the last column says how",
        "many of each split's slides were among them (those numbers are not held out).",
        "",
        "| split | ALL slides | blasts | found | recall | worst slide | healthy slides "
        "| detections per healthy slide (mean, max) | unmatched per ALL slide (mean) "
        "| slides the detector was tuned on | recall on the others (found / blasts) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for split in ("train", "val", "test"):
        rows = [r for r in results if r.split == split]
        if not rows:
            continue
        m = summarise(results, split)
        tuned = sum(1 for r in rows if tune.get(r.name) == "tune")
        fresh = [r for r in rows if tune.get(r.name) != "tune" and r.label == "all"]
        fresh_blasts = sum(r.n_blasts for r in fresh)
        fresh_found = sum(r.found for r in fresh)
        lines.append(
            f"| {split} | {m['slides_all']} | {m['blasts']} | {m['found']} "
            f"| {m['recall']:.3f} | {m['worst_slide_recall']:.3f} | {m['slides_normal']} "
            f"| {m['healthy_detections_mean']:.1f}, {m['healthy_detections_max']} "
            f"| {m['all_unmatched_mean']:.1f} | {tuned} of {len(rows)} "
            f"| {fresh_found} / {fresh_blasts} |"
        )
    return "\n".join(lines) + "\n"


def evaluate_slide(slide: Slide, params: DetectParams) -> SlideResult:
    """Detect on one slide and match against its blasts."""
    rgb = load_image(slide.path)
    t0 = time.perf_counter()
    det = detect_white_cells(rgb, params=params)
    seconds = time.perf_counter() - t0
    centres = np.array([(c.x, c.y) for c in det.cells], np.float64).reshape(-1, 2)
    radius = MATCH_UM * det.scale.px_per_um
    found, missed, used = match(slide.blasts, centres, radius)
    found_strict = match(slide.blasts, centres, STRICT_UM * det.scale.px_per_um)[0]
    over_split = 0
    if len(slide.blasts) and len(centres):
        d = np.linalg.norm(slide.blasts[:, None, :] - centres[None, :, :], axis=2)
        over_split = int(((d <= radius).sum(axis=1) >= 2).sum())
    return SlideResult(
        name=slide.name,
        label=slide.label,
        split=slide.split,
        size=f"{rgb.shape[1]}x{rgb.shape[0]}",
        px_per_um=round(det.scale.px_per_um, 2),
        n_blasts=len(slide.blasts),
        found=found,
        found_strict=found_strict,
        over_split=over_split,
        detections=len(det.cells),
        unmatched=int((~used).sum()),
        seconds=round(seconds, 3),
        missed=[(float(slide.blasts[i, 0]), float(slide.blasts[i, 1])) for i in missed],
    )


def summarise(results: list[SlideResult], split: str) -> dict[str, float | int]:
    """Recall and detections per slide for one split."""
    rows = [r for r in results if r.split == split]
    leuk = [r for r in rows if r.label == "all"]
    healthy = [r for r in rows if r.label == "normal"]
    blasts = sum(r.n_blasts for r in leuk)
    found = sum(r.found for r in leuk)
    return {
        "slides_all": len(leuk),
        "slides_normal": len(healthy),
        "blasts": blasts,
        "found": found,
        "recall": found / blasts if blasts else float("nan"),
        "recall_strict": sum(r.found_strict for r in leuk) / blasts if blasts else float("nan"),
        "blasts_split": sum(r.over_split for r in leuk),
        "worst_slide_recall": min((r.found / r.n_blasts for r in leuk if r.n_blasts), default=1.0),
        "healthy_detections_median": statistics.median(r.detections for r in healthy)
        if healthy
        else 0,
        "healthy_detections_mean": statistics.fmean(r.detections for r in healthy)
        if healthy
        else 0,
        "healthy_detections_max": max((r.detections for r in healthy), default=0),
        "all_unmatched_mean": statistics.fmean(r.unmatched for r in leuk) if leuk else 0,
    }


def run(
    data: Path, split_file: Path, seed: int, params: DetectParams, splits: tuple[str, ...]
) -> list[SlideResult]:
    """Evaluate every slide of the chosen splits (making the split file if absent)."""
    slides = list_slides(data)
    if not split_file.exists():
        write_split(split_file, slides, make_split(slides, seed), seed)
        logger.info("wrote a new split to %s", split_file)
    split = read_split(split_file)
    missing = [s.name for s in slides if s.name not in split]
    if missing:
        raise ValueError(f"{split_file} has no split for {missing}")
    chosen = [
        Slide(s.name, s.path, s.label, s.blasts, group_of(s.name), split[s.name])
        for s in slides
        if split[s.name] in splits
    ]
    return [evaluate_slide(s, params) for s in chosen]


def cross_source_survey(
    data: Path, per_source: int, seed: int, params: DetectParams
) -> list[dict[str, str | int | float]]:
    """Scale found, and detections per photo, on sources without cell positions.

    No recall can be measured there; this shows whether the ruler and the detector
    behave at all on other microscopes and stains (a seeded sample of each folder).
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, str | int | float]] = []
    for folder in (
        "kaggle-all/benign",
        "kaggle-all/early",
        "kaggle-all/pre",
        "kaggle-all/pro",
        "bccd-unlabelled",
        "all-idb2/blast",
        "all-idb2/normal",
    ):
        paths = sorted(p for p in (data / folder).glob("*") if p.is_file())
        if not paths:
            continue
        pick = rng.choice(len(paths), size=min(per_source, len(paths)), replace=False)
        scales, counts, found = [], [], 0
        for k in sorted(pick):
            rgb = load_image(paths[int(k)])
            est = estimate_scale(rgb, default=-1.0)
            if est.source == "red-cells":
                found += 1
                scales.append(est.px_per_um)
                counts.append(
                    len(detect_white_cells(rgb, px_per_um=est.px_per_um, params=params).cells)
                )
        rows.append(
            {
                "source": folder,
                "size": "x".join(str(v) for v in rgb.shape[1::-1]),
                "photos": len(pick),
                "scale_found": found,
                "px_per_um_median": statistics.median(scales) if scales else float("nan"),
                "px_per_um_iqr": (
                    f"{np.percentile(scales, 25):.2f}-{np.percentile(scales, 75):.2f}"
                    if scales
                    else "-"
                ),
                "detections_median": statistics.median(counts) if counts else float("nan"),
            }
        )
    return rows


def idb2_centre_recall(
    data: Path, sources: Path, split_file: Path, params: DetectParams
) -> dict[tuple[str, str], tuple[int, int]]:
    """(split, label) -> (crops, found): is each ALL-IDB2 crop's centre cell detected?

    `sources` (`leukoscope-tools cells idb2-sources`) places every crop on its ALL-IDB1
    slide. Unlike the .xyc files this covers normal white cells too (those ALL-IDB2 chose,
    all on healthy slides). Im108 is Im093's byte-identical copy and counts as Im093.
    """
    split = read_split(split_file)
    rows = read_idb2_sources(sources)
    paths = {p.stem: p for p in (data / "all-idb1").glob("*/*.jpg")}
    out: dict[tuple[str, str], tuple[int, int]] = defaultdict(lambda: (0, 0))
    for name in sorted({r["slide"] for r in rows}):
        det = detect_white_cells(load_image(paths[name]), params=params)
        centres = np.array([(c.x, c.y) for c in det.cells], np.float64).reshape(-1, 2)
        side = split.get(name) or split["Im093_0" if name == "Im108_0" else name]
        for r in (r for r in rows if r["slide"] == name):
            d = np.hypot(centres[:, 0] - float(r["x"]), centres[:, 1] - float(r["y"]))
            hit = bool(len(d)) and float(d.min()) <= MATCH_UM * det.scale.px_per_um
            n, k = out[(side, r["label"])]
            out[(side, r["label"])] = (n + 1, k + int(hit))
    return dict(out)


def format_idb2(found: dict[tuple[str, str], tuple[int, int]]) -> str:
    """The ALL-IDB2 centre-cell check as a Markdown section."""
    lines = [
        "## ALL-IDB2 centre cells (normal white cells too)",
        "",
        "ALL-IDB2's 198 crops, each centred on one cell, were located on their ALL-IDB1",
        "slides by template matching (`all-idb2-sources.csv`; every match scored >= 0.98).",
        "Every `normal` crop comes from a healthy slide and every `blast` crop from a",
        "leukemia slide. A centre cell is found when a detection lies within "
        f"{MATCH_UM:g} um of it.",
        "",
        "| split | label | crops | found | share |",
        "|---|---|---:|---:|---:|",
    ]
    for (side, label), (n, k) in sorted(found.items()):
        lines.append(f"| {side} | {label} | {n} | {k} | {k / n:.0%} |")
    lines += [
        "",
        "The missed `normal` centres are small granular purple bodies, smaller than a red",
        "cell: they look like giant platelets, which the 12 um^2 size filter drops on",
        "purpose (a hematologist should confirm). Five pairs of ALL-IDB2 crops show the same",
        "cell (Im093 and its copy Im108) and three more pairs the same cell in overlapping",
        "fields: ALL-IDB2 has near-duplicates of its own.",
    ]
    return "\n".join(lines) + "\n"


def format_survey(rows: list[dict[str, str | int | float]]) -> str:
    """The cross-source survey as a Markdown section."""
    lines = [
        "## Other sources (no cell positions: behaviour only)",
        "",
        "A seeded sample per folder. `scale found`: photos where enough isolated red cells",
        "were measured; detections are counted on those photos only, at the estimated scale.",
        "",
        "| source | size | photos | scale found | px/um median | px/um IQR | "
        "detections per photo (median) |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['source']} | {r['size']} | {r['photos']} | {r['scale_found']} | "
            f"{r['px_per_um_median']:.2f} | {r['px_per_um_iqr']} | {r['detections_median']:g} |"
        )
    return "\n".join(lines) + "\n"


def format_report(
    results: list[SlideResult], params: DetectParams, split_file: Path, command: str
) -> str:
    """The measured numbers as Markdown (no images); `command` is the one that measured them."""
    lines = [
        "# White-cell detection on ALL-IDB1",
        "",
        f"Measured by `{command}` (device code",
        "`leukoscope.analysis.detection`). A blast counts as",
        f"found when a detection's centre lies within {MATCH_UM:g} um of its annotated centroid",
        "(one detection per blast, greedy nearest first; um from the scale estimated on that",
        "slide). Healthy slides have no annotations: their detections are normal white cells",
        "or false detections. On leukemia slides, `unmatched` counts detections that are not",
        "an annotated blast (other white cells, smudge cells, or false detections).",
        "",
        f"Split: `{split_file.name}` (groups of overlapping fields kept together).",
        f"Parameters: `{json.dumps(asdict(params))}`",
        "",
        "| split | ALL slides | blasts | found | recall | worst slide | "
        f"recall within {STRICT_UM:g} um | blasts split in two | healthy slides | "
        "detections per healthy slide (median / mean / max) | unmatched per ALL slide (mean) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for split in ("tune", "held-out"):
        if not any(r.split == split for r in results):
            continue
        s = summarise(results, split)
        lines.append(
            f"| {split} | {s['slides_all']} | {s['blasts']} | {s['found']} | "
            f"{s['recall']:.1%} | {s['worst_slide_recall']:.0%} | {s['recall_strict']:.1%} | "
            f"{s['blasts_split']} | {s['slides_normal']} | "
            f"{s['healthy_detections_median']:g} / {s['healthy_detections_mean']:.1f} / "
            f"{s['healthy_detections_max']} | {s['all_unmatched_mean']:.1f} |"
        )
    lines += ["", *NOTES.splitlines(), "", "## Scale estimated from red cells, per image size", ""]
    by_size: dict[str, list[float]] = defaultdict(list)
    for r in results:
        by_size[r.size].append(r.px_per_um)
    lines += ["| image size | slides | px/um median | min | max |", "|---|---:|---:|---:|---:|"]
    for size, vals in sorted(by_size.items()):
        lines.append(
            f"| {size} | {len(vals)} | {statistics.median(vals):.2f} | {min(vals):.2f} | "
            f"{max(vals):.2f} |"
        )
    lines += [
        "",
        "## Per slide",
        "",
        "| slide | split | size | px/um | blasts | found | split in two | detections | unmatched |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (r.split, r.name)):
        lines.append(
            f"| {r.name} | {r.split} | {r.size} | {r.px_per_um:.2f} | {r.n_blasts} | "
            f"{r.found} | {r.over_split} | {r.detections} | {r.unmatched} |"
        )
    return "\n".join(lines) + "\n"


def keep_section(old: str, new: str) -> str:
    """`new` report text with `old`'s detector-check section carried over (if any)."""
    m = re.search(re.escape(SECTION_START) + r".*?" + re.escape(SECTION_END) + r"\n?", old, re.S)
    if not m or SECTION_START in new:
        return new
    return new.rstrip("\n") + "\n\n" + m.group(0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`leukoscope-tools cells eval`'s arguments."""
    p.add_argument("data", type=Path, help="the shared data folder (holds all-idb1/)")
    p.add_argument("--split-file", type=Path, default=DEFAULT_SPLIT)
    p.add_argument("--seed", type=int, default=8)
    p.add_argument("--splits", default="tune,held-out", help="comma-separated")
    p.add_argument("--params", default="{}", help="JSON overrides of DetectParams")
    p.add_argument("--report", type=Path, default=None, help="write Markdown here")
    p.add_argument("--json", type=Path, default=None, help="write per-slide results here")
    p.add_argument(
        "--survey", type=int, default=0, help="also survey N photos of each other source"
    )
    p.add_argument(
        "--idb2-sources", type=Path, default=None, help="also check ALL-IDB2 centre cells"
    )
    p.add_argument(
        "--whole-field-split",
        type=Path,
        default=None,
        help="judge detection on this split.csv's ALL-IDB1 splits instead (prints Markdown)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Evaluate, print the summary, optionally write the report."""
    params = DetectParams(**{**asdict(DEFAULT_PARAMS), **json.loads(args.params)})
    if args.whole_field_split is not None:
        wf = whole_field_split(args.whole_field_split)
        slides = [s for s in list_slides(args.data) if wf.get(s.name) in ("train", "val", "test")]
        results = [
            evaluate_slide(
                Slide(s.name, s.path, s.label, s.blasts, group_of(s.name), wf[s.name]), params
            )
            for s in slides
        ]
        text = format_whole_field_split(
            results, args.whole_field_split, read_split(args.split_file)
        )
        print(text, end="")
        if args.report:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(text)
        return 0
    results = run(args.data, args.split_file, args.seed, params, tuple(args.splits.split(",")))
    for split in ("tune", "held-out"):
        if any(r.split == split for r in results):
            print(split, json.dumps(summarise(results, split)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    if args.report:
        text = format_report(results, params, args.split_file, args.invocation)
        if args.idb2_sources:
            text += "\n" + format_idb2(
                idb2_centre_recall(args.data, args.idb2_sources, args.split_file, params)
            )
        if args.survey:
            text += "\n" + format_survey(
                cross_source_survey(args.data, args.survey, args.seed, params)
            )
        args.report.parent.mkdir(parents=True, exist_ok=True)
        old = args.report.read_text() if args.report.exists() else ""
        # `cells check-eval` writes its own section into this report: keep it.
        args.report.write_text(keep_section(old, text))
        print(f"report written to {args.report}")
    return 0
