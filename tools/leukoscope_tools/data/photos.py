"""Index labelled smear folders, find duplicates and overlapping fields, split by group.

The table has one row per image file: where it is, its label, its source, the group it
shares with its near duplicates and overlapping fields, and its split. Every later step
reads this table, so a run is reproducible from the file alone.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from leukoscope.core.errors import ImageError
from leukoscope.core.imageio import IMAGE_SUFFIXES, load_image

logger = logging.getLogger(__name__)

LEUKEMIA = "leukemia"
NORMAL = "normal"
#: Class-folder names understood without a --label-map (kaggle-all and ALL-IDB1).
DEFAULT_LABEL_MAP = {
    "benign": NORMAL,
    "early": LEUKEMIA,
    "pre": LEUKEMIA,
    "pro": LEUKEMIA,
    "all": LEUKEMIA,
    "normal": NORMAL,
    "leukemia": LEUKEMIA,
}
#: ALL-IDB file names: ImNNN_1 is from a patient with ALL, ImNNN_0 from a healthy one.
ALL_IDB_NAME = re.compile(r"^Im(\d{3})_([01])$")
SPLITS = ("train", "val", "test")
#: Rows that are byte-identical copies of an earlier row are kept out of every split.
EXCLUDED = "excluded"
#: Two dHashes this close (of 64 bits) are the same picture, re-encoded or slightly moved.
NEAR_DUP_BITS = 8
#: Feature-matching inliers that mean two fields photograph the same part of a smear.
OVERLAP_INLIERS = 15


@dataclass(frozen=True)
class Row:
    """One indexed image."""

    path: str  # relative to the data root, POSIX
    source: str
    label: str
    cls: str  # the original class folder or name
    sha256: str
    width: int
    height: int
    dhash: str  # 16 hex digits
    blasts: int  # annotated blast centroids (.xyc), -1 when there is no annotation
    group: str = ""
    split: str = ""
    note: str = ""

    @property
    def camera(self) -> str:
        """The capture size, a proxy for the camera (ALL-IDB1 has two)."""
        return f"{self.width}x{self.height}"


def dhash(rgb: np.ndarray) -> int:
    """64-bit difference hash: robust to re-encoding and resizing, not to cropping."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def _label_for(path: Path, folder_label: str | None) -> tuple[str | None, str]:
    match = ALL_IDB_NAME.match(path.stem)
    if match:
        return (LEUKEMIA if match.group(2) == "1" else NORMAL), path.stem
    return folder_label, path.parent.name


def _read_xyc(root: Path, path: Path) -> int:
    xyc = path.parent.parent / "xyc" / f"{path.stem}.xyc"
    if not xyc.is_file():
        return -1
    return sum(1 for line in xyc.read_text().splitlines() if line.strip())


def index_source(
    root: Path, source: str, label_map: dict[str, str] | None = None
) -> tuple[list[Row], list[str]]:
    """Index `root/source`: class folders (via the label map) or ALL-IDB names.

    Returns the rows and a list of skipped files with the reason (no label, unreadable).
    """
    label_map = DEFAULT_LABEL_MAP if label_map is None else label_map
    folder = root / source
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such source folder (see --sources)")
    rows: list[Row] = []
    skipped: list[str] = []
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for path in paths:
        rel = path.relative_to(root).as_posix()
        label, cls = _label_for(path, label_map.get(path.parent.name.lower()))
        if label is None:
            skipped.append(f"{rel}: no label (folder {path.parent.name!r} not in the label map)")
            continue
        data = path.read_bytes()
        try:
            rgb = load_image(data, min_size=(256, 256))
            with Image.open(path) as img:
                width, height = img.size
        except (ImageError, OSError) as exc:
            skipped.append(f"{rel}: unreadable ({exc})")
            continue
        rows.append(
            Row(
                path=rel,
                source=source,
                label=label,
                cls=cls,
                sha256=hashlib.sha256(data).hexdigest(),
                width=width,
                height=height,
                dhash=f"{dhash(rgb):016x}",
                blasts=_read_xyc(root, path),
            )
        )
    logger.info("%s: %d labelled images, %d skipped", source, len(rows), len(skipped))
    return rows, skipped


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_pairs(
    rows: Sequence[Row], max_bits: int = NEAR_DUP_BITS
) -> list[tuple[int, int]]:
    """Index pairs (i < j) of different files whose dHashes differ in at most `max_bits` bits."""
    if len(rows) < 2:
        return []
    hashes = np.array([int(r.dhash, 16) for r in rows], dtype=np.uint64)
    bytes_ = hashes.view(np.uint8).reshape(len(rows), 8)
    bits = np.unpackbits(bytes_, axis=1).astype(np.uint8)
    pairs = []
    for i in range(len(rows) - 1):
        dist = np.count_nonzero(bits[i + 1 :] != bits[i], axis=1)
        for j in np.nonzero(dist <= max_bits)[0]:
            pairs.append((i, i + 1 + int(j)))
    return pairs


def overlap_pairs(
    root: Path, rows: Sequence[Row], min_inliers: int = OVERLAP_INLIERS, width: int = 800
) -> list[tuple[int, int]]:
    """Index pairs of fields that photograph overlapping parts of a smear (ORB + RANSAC).

    Only pairs with the same label are compared: one smear is one patient, and on
    ALL-IDB1 chance matches between unrelated fields reach 26 inliers, as many as
    true overlaps. Cost grows with the square of the number of images (a few hundred).
    """
    orb = cv2.ORB_create(nfeatures=1500)  # type: ignore[attr-defined]
    feats = []
    for row in rows:
        rgb = load_image(root / row.path, min_size=(width, width * row.height // row.width))
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = width / grey.shape[1]
        grey = cv2.resize(grey, (width, round(grey.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        feats.append(orb.detectAndCompute(grey, None))
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = []
    for i in range(len(rows)):
        kp_i, des_i = feats[i]
        for j in range(i + 1, len(rows)):
            kp_j, des_j = feats[j]
            if rows[i].label != rows[j].label:
                continue
            if des_i is None or des_j is None or len(kp_i) < 8 or len(kp_j) < 8:
                continue
            good = [
                m[0]
                for m in matcher.knnMatch(des_i, des_j, k=2)
                if len(m) == 2 and m[0].distance < 0.75 * m[1].distance
            ]
            if len(good) < min_inliers:
                continue
            src = np.array([kp_i[m.queryIdx].pt for m in good], np.float32)
            dst = np.array([kp_j[m.trainIdx].pt for m in good], np.float32)
            # A similarity transform: same microscope, maybe another camera (scale).
            _, mask = cv2.estimateAffinePartial2D(
                src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0
            )
            inliers = int(mask.sum()) if mask is not None else 0
            if inliers >= min_inliers:
                logger.info("overlap: %s ~ %s (%d inliers)", rows[i].path, rows[j].path, inliers)
                pairs.append((i, j))
    return pairs


def assign_groups(rows: Sequence[Row], links: Iterable[tuple[int, int]]) -> list[Row]:
    """Give every row a group id: linked rows (and byte-identical ones) share one.

    Byte-identical copies after the first are marked excluded, with a note naming the
    file they copy; they stay in their group so the report can count them.
    """
    uf = _UnionFind(len(rows))
    first_by_sha: dict[str, int] = {}
    dup_of: dict[int, int] = {}
    for i, row in enumerate(rows):
        if row.sha256 in first_by_sha:
            dup_of[i] = first_by_sha[row.sha256]
            uf.union(i, first_by_sha[row.sha256])
        else:
            first_by_sha[row.sha256] = i
    for a, b in links:
        uf.union(a, b)
    out = []
    for i, row in enumerate(rows):
        root_row = rows[uf.find(i)]
        group = f"{root_row.source}:{Path(root_row.path).stem}"
        if i in dup_of:
            out.append(
                replace(
                    row,
                    group=group,
                    split=EXCLUDED,
                    note=f"byte-identical copy of {rows[dup_of[i]].path}",
                )
            )
        else:
            out.append(replace(row, group=group))
    return out


def split_groups(
    rows: Sequence[Row], seed: int, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> list[Row]:
    """Seeded, stratified (by source and label), group-disjoint train/val/test split.

    Groups are dealt in a seeded random order, each to the split furthest below its
    target share of its stratum's images, so whole groups move and proportions hold.
    """
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if row.split != EXCLUDED:
            members[row.group].append(i)
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for group, idx in sorted(members.items()):
        labels = sorted({rows[i].label for i in idx})
        # A group with both labels (should not happen) is stratified as leukemia.
        label = LEUKEMIA if LEUKEMIA in labels else labels[0]
        strata[(rows[idx[0]].source, label)].append(group)
    split_of: dict[str, str] = {}
    for key in sorted(strata):
        groups = strata[key]
        order = rng.permutation(len(groups))
        total = sum(len(members[g]) for g in groups)
        filled = [0, 0, 0]
        for k in order:
            group = groups[int(k)]
            deficit = [fractions[s] * total - filled[s] for s in range(3)]
            s = int(np.argmax(deficit))
            split_of[group] = SPLITS[s]
            filled[s] += len(members[group])
    return [
        row if row.split == EXCLUDED else replace(row, split=split_of[row.group]) for row in rows
    ]


def build_table(
    root: Path,
    sources: Sequence[str],
    *,
    seed: int = 0,
    label_map: dict[str, str] | None = None,
    overlap_sources: Sequence[str] = (),
    near_dup_bits: int = NEAR_DUP_BITS,
) -> tuple[list[Row], dict[str, Any]]:
    """Index, group and split; return the rows and a summary for the report."""
    rows: list[Row] = []
    skipped: list[str] = []
    for source in sources:
        got, skip = index_source(root, source, label_map)
        rows += got
        skipped += skip
    if not rows:  # an empty table would silently replace a real one
        raise ValueError(f"{root}: no labelled images in {', '.join(sources)}")
    near = near_duplicate_pairs(rows, near_dup_bits)
    exact = {(a, b) for a, b in near if rows[a].sha256 == rows[b].sha256}
    near_only = [(a, b) for a, b in near if (a, b) not in exact]
    overlaps: list[tuple[int, int]] = []
    for source in overlap_sources:
        idx = [i for i, r in enumerate(rows) if r.source == source]
        overlaps += [(idx[a], idx[b]) for a, b in overlap_pairs(root, [rows[i] for i in idx])]
    rows = assign_groups(rows, [*near, *overlaps])
    rows = split_groups(rows, seed)
    summary: dict[str, Any] = {
        "sources": list(sources),
        "seed": seed,
        "images": len(rows),
        "skipped": len(skipped),
        "exact_duplicates_dropped": sum(r.split == EXCLUDED for r in rows),
        "near_duplicate_pairs": [(rows[a].path, rows[b].path) for a, b in near_only],
        "cross_label_near_duplicates": sum(rows[a].label != rows[b].label for a, b in near_only),
        "overlap_pairs": [(rows[a].path, rows[b].path) for a, b in overlaps],
        "groups": len({r.group for r in rows}),
        "counts": split_counts(rows),
    }
    for line in skipped[:20]:
        logger.info("skipped %s", line)
    return rows, summary


def split_counts(rows: Iterable[Row]) -> dict[str, dict[str, int]]:
    """Images per split and `source/label`."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        out[row.split][f"{row.source}/{row.label}"] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def write_table(rows: Sequence[Row], path: Path) -> None:
    """Write the table as CSV (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(table_bytes(rows))
    tmp.replace(path)


def table_bytes(rows: Sequence[Row]) -> bytes:
    """The table as CSV bytes (for a bundle's extra files)."""
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(Row)])
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return buf.getvalue().encode("utf-8")


def parse_table(text: str) -> list[Row]:
    """Parse a table's CSV text."""
    ints = {"width", "height", "blasts"}
    return [
        Row(**{k: (int(v) if k in ints else v) for k, v in rec.items()})  # type: ignore[arg-type]
        for rec in csv.DictReader(io.StringIO(text, newline=""))
    ]


def read_table(path: Path) -> list[Row]:
    """Read a table written by `write_table`."""
    return parse_table(path.read_text(encoding="utf-8"))


def select(rows: Iterable[Row], split: str, sources: Sequence[str] | None = None) -> list[Row]:
    """The rows of one split (optionally of some sources only)."""
    return [r for r in rows if r.split == split and (sources is None or r.source in sources)]
