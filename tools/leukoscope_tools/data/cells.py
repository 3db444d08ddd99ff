"""The cell-mode training set: every detected white cell of every photo, as the device crops it.

Crops are made only through `leukoscope.analysis.cells` (`select_cells` + `cell_crops`, default
`CellSettings`: 24 um square, 128x128, white-balanced, the paper's filters), so the host
trains on exactly what the device will feed the model. Photos keep the group and split of
the whole-field model (`models/whole-field/split.csv`), so both modes are judged on the same
slide-disjoint test photos; photos that split excludes stay out.

Cell labels (1 blast, 0 other, -1 unknown) and where they come from (`kind`):

- `xyc`: an ALL-IDB1 leukemia slide's detection matched to an annotated blast centroid
  (within `MATCH_UM`); the crop is the matched detection's, as on the device. A centroid
  no detection matches is cropped at the centroid itself (`xyc-centroid`).
- `healthy-slide`: any detection on a healthy ALL-IDB1 slide (other white cells, and the
  occasional platelet clump the detector keeps).
- `all-idb2`: an ALL-IDB2 crop located on its ALL-IDB1 slide (`all-idb2-sources.csv`)
  labels the detection at that position; crops not located, or with no detection there,
  are counted and skipped.
- `kaggle-photo`: every detection on a kaggle-all photo gets the photo's class
  (benign -> other; early/pre/pro -> blast). This is label noise: a leukemia photo's
  lymphocytes and neutrophils are called blasts.
- `xyc-other`: a detection on an ALL-IDB1 leukemia slide at one of ALL-IDB Patches' other
  marked points (`all-idb1/xyc-other/`, within `MATCH_UM`) and at no blast centroid: a
  non-blast white cell (most of those points are platelets, which the detector does not
  keep; the white cells among them are what a detection there finds).
- `unknown` (-1): the other detections on ALL-IDB1 leukemia slides; not training labels,
  but part of the photo's slide features.
- `pbc` (source `pbc`): one PBC cell image (a healthy person's white cell, another lab,
  stain and camera), cropped around its centre cell by `leukoscope.analysis.single_cell`
  exactly as `leukoscope classify-cells` crops a user's cell. Each image is a one-cell
  "photo" of its own group (PBC has no patient ids), split 60/20/20 per cell type with a
  fixed seed. Its cell type is the photo's `cls`.

Scale: ALL-IDB1 photos use the red-cell ruler. kaggle-all's 224x224 photos mostly defeat
it, so a calibrated kaggle scale (the median ruler value over kaggle TRAIN photos where it
works) is used on photos where the ruler fails; each photo records which.

    leukoscope-tools cells dataset ../shared/data --out build/cells
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from leukoscope.analysis.cells import CellSettings, cell_crops, field_area_um2, select_cells
from leukoscope.analysis.detection import Detection, WhiteCell, detect_white_cells, estimate_scale
from leukoscope.analysis.preprocess import PreprocessParams
from leukoscope.analysis.single_cell import centre_cell
from leukoscope.core.errors import ImageError
from leukoscope.core.imageio import load_image
from leukoscope_tools.data.annotations import MATCH_UM, match, read_xyc
from leukoscope_tools.data.idb2_sources import read_idb2_sources
from leukoscope_tools.data.photos import LEUKEMIA, SPLITS, Row, read_table

logger = logging.getLogger(__name__)

#: The whole-field bundle's split and the located ALL-IDB2 crops, relative to the
#: current folder (the repository root, where the README's commands run).
DEFAULT_SPLIT = Path("models/whole-field/split.csv")
DEFAULT_IDB2 = Path("models/reports/all-idb2-sources.csv")
#: The photo sources cell mode trains and judges on (whole fields: the slide model's).
SOURCES = ("all-idb1", "kaggle-all")
#: PBC's single normal cells: a cell-level source only (no fields, no slide features).
PBC = "pbc"
#: Every source a cell classifier may be trained or tested on.
CELL_SOURCES = (*SOURCES, PBC)
#: PBC's folder under the data root, and the seed of its 60/20/20 split.
PBC_DIR = "pbc-normal"
PBC_SPLIT_SEED = 2026
#: A located ALL-IDB2 crop: its template match scored at least this.
IDB2_MIN_SCORE = 0.9
#: Bump when the cache's content changes meaning.
CACHE_VERSION = 2
#: The cell model's preprocessing: crops cut at 128x128, then the paper's filters.
PRE = PreprocessParams(resize=(128, 128), input_size=(128, 128))
KAGGLE_BENIGN = "benign"

PHOTO_FIELDS = [
    "photo",
    "path",
    "source",
    "label",
    "cls",
    "group",
    "split",
    "width",
    "height",
    "px_per_um",
    "scale_source",
    "n_detected",
    "n_cells",
    "area_um2",
    "first",
    "count",
]
CELL_FIELDS = ["photo", "x", "y", "area_um2", "clump", "y_cell", "kind", "detected"]


@dataclass
class PhotoRow:
    """One photo (slide field) and where its crops lie in the crop array."""

    photo: int
    path: str
    source: str
    label: str  # "leukemia" or "normal" (the photo's label)
    cls: str
    group: str
    split: str
    width: int
    height: int
    px_per_um: float
    scale_source: str  # "red-cells" or "calibrated"
    n_detected: int  # white cells detected
    n_cells: int  # of them, classified (select_cells, max_cells)
    area_um2: float
    first: int  # first crop row of this photo's detected cells
    count: int  # crops of detected cells (= n_cells)


@dataclass
class CellRow:
    """One crop: a detected cell (or an annotated centroid no detection matched)."""

    photo: int
    x: float
    y: float
    area_um2: float
    clump: bool
    y_cell: int  # 1 blast, 0 other, -1 unknown
    kind: str
    detected: bool  # False: an extra crop at an annotation, not one of the photo's cells


@dataclass
class CellSet:
    """The cached set: crops (N x 128 x 128 x 3 uint8), their rows and the photos."""

    crops: np.ndarray
    cells: list[CellRow]
    photos: list[PhotoRow]
    summary: dict[str, object]

    def column(self, name: str) -> np.ndarray:
        """One CellRow field over all crops."""
        return np.asarray([getattr(c, name) for c in self.cells])


def y_of(photos: Sequence[PhotoRow]) -> np.ndarray:
    """1 for a leukemia photo, 0 for a normal one."""
    return np.array([int(p.label == LEUKEMIA) for p in photos], np.int64)


def kaggle_label(cls: str) -> int:
    """A kaggle-all photo's class as a (noisy) cell label: benign -> 0, else 1."""
    return 0 if cls == KAGGLE_BENIGN else 1


def label_idb1_cells(
    detected: np.ndarray,
    blasts: np.ndarray,
    px_per_um: float,
    healthy: bool,
    others: np.ndarray | None = None,
) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Cell labels of one ALL-IDB1 slide's detections and the centroids no detection matched.

    Healthy slide: every detection is `other` (0). Leukemia slide: detections matched to an
    annotated blast are 1; of the rest, those matched to an `xyc-other` point are 0 (a
    marked non-blast cell), the others unknown (-1). Also returns which were xyc-other.
    """
    xy = detected.reshape(-1, 2)
    at_other = np.zeros(len(xy), bool)
    if healthy:
        return np.zeros(len(xy), np.int64), [], at_other
    radius = MATCH_UM * px_per_um
    _, missed, used = match(blasts, xy, radius)
    if others is not None and len(others):
        rest = np.flatnonzero(~used)
        _, _, hit = match(others, xy[rest], radius)
        at_other[rest[hit]] = True
    y = np.where(used, 1, np.where(at_other, 0, -1)).astype(np.int64)
    return y, missed, at_other


def read_xyc_other(path: Path) -> np.ndarray:
    """ALL-IDB Patches' other marked points of one slide (none if the file is absent)."""
    return read_xyc(path) if path.is_file() else np.zeros((0, 2))


def pbc_table(data: Path) -> list[tuple[str, str, str]]:
    """PBC's images as (path relative to data, cell type, split), split 60/20/20 per type.

    Seeded (`PBC_SPLIT_SEED`) over the sorted file names, so the split is the same on
    every machine. PBC has no patient ids: each image is its own group.
    """
    rng = np.random.default_rng(PBC_SPLIT_SEED)
    out = []
    for folder in sorted(p for p in (data / PBC_DIR).iterdir() if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        order = rng.permutation(len(files))
        n_train, n_val = round(0.6 * len(files)), round(0.2 * len(files))
        for rank, k in enumerate(order):
            split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            out.append((str(files[k].relative_to(data)), folder.name, split))
    return sorted(out)


def calibrate_kaggle(data: Path, rows: Sequence[Row]) -> tuple[float, dict[str, int]]:
    """Median red-cell scale over kaggle-all TRAIN photos where the ruler works."""
    values = []
    tried = 0
    for r in rows:
        if r.source != "kaggle-all" or r.split != "train":
            continue
        tried += 1
        try:
            values.append(estimate_scale(load_image(data / r.path)).px_per_um)
        except ImageError:
            continue
    if not values:
        raise ValueError("the red-cell ruler works on no kaggle-all training photo")
    return float(np.median(values)), {"train_photos": tried, "ruler_worked": len(values)}


def _crops(rgb: np.ndarray, cells: list[WhiteCell], det: Detection) -> np.ndarray:
    return cell_crops(rgb, cells, det, CellSettings(), PRE)


def build(
    data: Path,
    *,
    split_path: Path = DEFAULT_SPLIT,
    idb2_path: Path = DEFAULT_IDB2,
    sources: tuple[str, ...] = CELL_SOURCES,
    limit: int = 0,
) -> CellSet:
    """Detect, label and crop every photo of `sources` in the split (limit: photos per source)."""
    settings = CellSettings()
    for source in sources:
        if not (data / (PBC_DIR if source == PBC else source)).is_dir():
            raise FileNotFoundError(f"{data / source}: no such folder (the data root?)")
    table = [r for r in read_table(split_path) if r.source in sources]
    excluded = Counter(r.source for r in table if r.split not in SPLITS)
    table = [r for r in table if r.split in SPLITS]
    if limit:
        table = [r for s in sources for r in [t for t in table if t.source == s][:limit]]
    summary: dict[str, object] = {"version": CACHE_VERSION, "excluded_photos": dict(excluded)}
    kaggle_scale = None
    if "kaggle-all" in sources:
        kaggle_scale, info = calibrate_kaggle(data, table)
        summary["kaggle_calibration"] = {**info, "px_per_um": round(kaggle_scale, 4)}
        logger.info("kaggle-all calibrated scale %.3f px/um (%s)", kaggle_scale, info)
    idb2 = read_idb2_sources(idb2_path) if "all-idb1" in sources else []
    idb2_by_slide: dict[str, list[dict[str, str]]] = {}
    for located in idb2:
        if float(located["score"]) >= IDB2_MIN_SCORE:
            idb2_by_slide.setdefault(located["slide"], []).append(located)
    summary["all_idb2"] = {
        "crops": len(idb2),
        "unlocated": sum(float(loc["score"]) < IDB2_MIN_SCORE for loc in idb2),
    }
    idb2_stats: Counter[str] = Counter()
    crops: list[np.ndarray] = []
    cells: list[CellRow] = []
    photos: list[PhotoRow] = []
    scale_use: Counter[str] = Counter()
    t0 = time.perf_counter()
    n_crops = 0
    for i, r in enumerate(table):
        rgb = load_image(data / r.path)
        if r.source == "kaggle-all":
            assert kaggle_scale is not None
            det = detect_white_cells(rgb, default_px_per_um=kaggle_scale)
        else:
            det = detect_white_cells(rgb)
        scale_source = "calibrated" if det.scale.source == "default" else det.scale.source
        scale_use[f"{r.source} {scale_source}"] += 1
        chosen = select_cells(det.cells, settings.max_cells)
        xy = np.array([(c.x, c.y) for c in chosen], np.float64).reshape(-1, 2)
        stem = Path(r.path).stem
        if r.source == "kaggle-all":
            y_cells = np.full(len(chosen), kaggle_label(r.cls), np.int64)
            kinds = ["kaggle-photo"] * len(chosen)
            extra: list[WhiteCell] = []
        else:
            healthy = r.label == "normal"
            blasts = read_xyc(data / "all-idb1" / "xyc" / f"{stem}.xyc")
            others = read_xyc_other(data / "all-idb1" / "xyc-other" / f"{stem}.xyc")
            y_cells, missed, at_other = label_idb1_cells(
                xy, blasts, det.scale.px_per_um, healthy, others
            )
            kinds = [
                "healthy-slide"
                if healthy
                else ("xyc" if v == 1 else "xyc-other" if o else "unknown")
                for v, o in zip(y_cells, at_other, strict=True)
            ]
            radius = 4.0 * det.scale.px_per_um
            extra = [
                WhiteCell(float(blasts[k, 0]), float(blasts[k, 1]), np.pi * 16.0, radius)
                for k in missed
            ]
            for s in idb2_by_slide.get(stem, []):
                pos = np.array([[float(s["x"]), float(s["y"])]])
                _, _, used = match(pos, xy, MATCH_UM * det.scale.px_per_um)
                if not used.any():
                    idb2_stats[f"{s['label']} no detection"] += 1
                    continue
                j = int(np.flatnonzero(used)[0])
                want = 1 if s["label"] == "blast" else 0
                if y_cells[j] == -1:
                    y_cells[j], kinds[j] = want, "all-idb2"
                    idb2_stats[f"{s['label']} new label"] += 1
                elif y_cells[j] == want:
                    idb2_stats[f"{s['label']} agrees"] += 1
                else:
                    idb2_stats[f"{s['label']} disagrees (kept {kinds[j]})"] += 1
        c = _crops(rgb, chosen, det)
        crops.append(c)
        for cell, yv, kind in zip(chosen, y_cells, kinds, strict=True):
            cells.append(
                CellRow(len(photos), cell.x, cell.y, cell.area_um2, cell.clump, int(yv), kind, True)
            )
        if extra:
            crops.append(_crops(rgb, extra, det))
            for cell in extra:
                cells.append(
                    CellRow(
                        len(photos), cell.x, cell.y, cell.area_um2, False, 1, "xyc-centroid", False
                    )
                )
        photos.append(
            PhotoRow(
                photo=len(photos),
                path=r.path,
                source=r.source,
                label=r.label,
                cls=r.cls,
                group=r.group,
                split=r.split,
                width=rgb.shape[1],
                height=rgb.shape[0],
                px_per_um=round(det.scale.px_per_um, 4),
                scale_source=scale_source,
                n_detected=len(det.cells),
                n_cells=len(chosen),
                area_um2=round(field_area_um2(rgb.shape, det.scale.px_per_um), 2),
                first=n_crops,
                count=len(chosen),
            )
        )
        n_crops += len(chosen) + len(extra)
        if (i + 1) % 250 == 0:
            logger.info(
                "%d/%d photos, %d crops, %.0f s",
                i + 1,
                len(table),
                n_crops,
                time.perf_counter() - t0,
            )
    if PBC in sources:
        n_crops = _add_pbc(data, crops, cells, photos, scale_use, n_crops, limit)
    summary["scale_use"] = dict(sorted(scale_use.items()))
    summary["all_idb2"] = {**summary["all_idb2"], **dict(sorted(idb2_stats.items()))}  # type: ignore[dict-item]
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    arr = np.concatenate(crops) if crops else np.zeros((0, 128, 128, 3), np.uint8)
    out = CellSet(arr, cells, photos, summary)
    summary["label_counts"] = label_counts(out)
    return out


def _add_pbc(
    data: Path,
    crops: list[np.ndarray],
    cells: list[CellRow],
    photos: list[PhotoRow],
    scale_use: Counter[str],
    n_crops: int,
    limit: int,
) -> int:
    """Append PBC's cells (one crop per image, label 0) and their one-cell photos."""
    settings = CellSettings()
    table = pbc_table(data)
    if limit:
        table = table[:limit]
    ruler = []
    for path, _, split in table:
        if split == "train":
            try:
                ruler.append(estimate_scale(load_image(data / path)).px_per_um)
            except ImageError:
                continue
    # Where its few red cells cannot be measured, a PBC image takes the analyser's
    # calibrated scale: the median ruler value over PBC training images (one camera).
    calibrated = float(np.median(ruler)) if ruler else None
    for path, cls, split in table:
        rgb = load_image(data / path)
        cc = centre_cell(rgb, settings, PRE, default_px_per_um=calibrated)
        scale_use[f"{PBC} {cc.scale_source}"] += 1
        crops.append(cc.crop[None])
        cells.append(
            CellRow(len(photos), cc.cell.x, cc.cell.y, cc.cell.area_um2, False, 0, PBC, True)
        )
        photos.append(
            PhotoRow(
                photo=len(photos),
                path=path,
                source=PBC,
                label="normal",
                cls=cls,
                group=f"{PBC}:{Path(path).stem}",
                split=split,
                width=rgb.shape[1],
                height=rgb.shape[0],
                px_per_um=round(cc.px_per_um, 4),
                scale_source=cc.scale_source,
                n_detected=int(cc.detected),
                n_cells=1,
                area_um2=round(field_area_um2(rgb.shape, cc.px_per_um), 2),
                first=n_crops,
                count=1,
            )
        )
        n_crops += 1
    return n_crops


def label_counts(cs: CellSet) -> dict[str, int]:
    """Crops per split, source, label kind and label."""
    counts: Counter[str] = Counter()
    for c in cs.cells:
        p = cs.photos[c.photo]
        counts[f"{p.split} {p.source} {c.kind} {c.y_cell}"] += 1
    return dict(sorted(counts.items()))


def save(cs: CellSet, out: Path) -> None:
    """Write crops.npy, cells.csv, photos.csv and summary.json to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "crops.npy", cs.crops)
    for name, rows, fields in (
        ("cells.csv", cs.cells, CELL_FIELDS),
        ("photos.csv", cs.photos, PHOTO_FIELDS),
    ):
        with (out / name).open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for row in rows:
                w.writerow(asdict(row))
    (out / "summary.json").write_text(json.dumps(cs.summary, indent=1) + "\n")


def load(out: Path, *, mmap: bool = True) -> CellSet:
    """Read a saved set (crops memory-mapped by default)."""
    summary = json.loads((out / "summary.json").read_text())
    if summary.get("version") != CACHE_VERSION:
        raise ValueError(f"{out}: cache version {summary.get('version')} != {CACHE_VERSION}")
    crops = np.load(out / "crops.npy", mmap_mode="r" if mmap else None)
    with (out / "cells.csv").open(newline="") as f:
        cells = [
            CellRow(
                int(r["photo"]),
                float(r["x"]),
                float(r["y"]),
                float(r["area_um2"]),
                r["clump"] == "True",
                int(r["y_cell"]),
                r["kind"],
                r["detected"] == "True",
            )
            for r in csv.DictReader(f)
        ]
    with (out / "photos.csv").open(newline="") as f:
        photos = []
        for r in csv.DictReader(f):
            photos.append(
                PhotoRow(
                    **{
                        k: (
                            int(v)
                            if k
                            in (
                                "photo",
                                "width",
                                "height",
                                "n_detected",
                                "n_cells",
                                "first",
                                "count",
                            )
                            else float(v)
                            if k in ("px_per_um", "area_um2")
                            else v
                        )
                        for k, v in r.items()
                    }  # type: ignore[arg-type]
                )
            )
    if len(crops) != len(cells):
        raise ValueError(f"{out}: {len(crops)} crops but {len(cells)} cell rows")
    return CellSet(crops, cells, photos, summary)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """`leukoscope-tools cells dataset`'s arguments."""
    ap.add_argument("data", type=Path)
    ap.add_argument("--out", type=Path, default=Path("build/cells"))
    ap.add_argument("--limit", type=int, default=0, help="photos per source (a quick look)")
    ap.add_argument(
        "--split", type=Path, default=DEFAULT_SPLIT, help="the whole-field bundle's split.csv"
    )


def run_command(args: argparse.Namespace) -> int:
    """Build (or rebuild) the cached cell set and print its summary."""
    cs = build(args.data, split_path=args.split, limit=args.limit)
    save(cs, args.out)
    print(json.dumps(cs.summary, indent=1))
    return 0
