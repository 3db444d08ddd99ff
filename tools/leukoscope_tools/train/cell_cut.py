"""The cell cut, and the held-out cell groups it and the reports read.

A cell counts as a blast at `p >= cell_cut`. The cut is chosen on VALIDATION cells only,
by Youden's J with each negative source weighted the same: blasts from ALL-IDB1's cell
labels, negatives ALL-IDB1's non-blasts (healthy slides' white cells and those at
`xyc-other` points) and PBC's normal cells. A source the run never trained on is never
looked at: it is that run's test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from leukoscope_tools.data.cells import PBC, CellSet

#: Blast and non-blast kinds of ALL-IDB1 cell labels.
IDB1_KINDS = ("xyc", "xyc-centroid", "all-idb2", "healthy-slide", "xyc-other")


@dataclass
class Labelled:
    """Crop indices, their labels and their probabilities (a missed blast scored 0)."""

    idx: np.ndarray
    y: np.ndarray
    p: np.ndarray


def _labelled(cs: CellSet, p: np.ndarray, keep: np.ndarray) -> Labelled:
    idx = np.flatnonzero(keep)
    y = cs.column("y_cell")[idx]
    return Labelled(idx, y, np.nan_to_num(p[idx], nan=0.0))


def idb1_cells(cs: CellSet, p: np.ndarray, splits: tuple[str, ...]) -> Labelled:
    """ALL-IDB1's cell-labelled crops of `splits` photos."""
    src = np.array([cs.photos[c.photo].source for c in cs.cells])
    split = np.array([cs.photos[c.photo].split for c in cs.cells])
    kind = cs.column("kind")
    y = cs.column("y_cell")
    keep = (src == "all-idb1") & np.isin(split, splits) & np.isin(kind, IDB1_KINDS) & (y >= 0)
    return _labelled(cs, p, keep)


def pbc_cells(cs: CellSet, p: np.ndarray, splits: tuple[str, ...]) -> tuple[Labelled, np.ndarray]:
    """PBC's crops of `splits` and their cell types."""
    keep = np.array(
        [cs.photos[c.photo].source == PBC and cs.photos[c.photo].split in splits for c in cs.cells]
    )
    lab = _labelled(cs, p, keep)
    types = np.array([cs.photos[cs.cells[i].photo].cls for i in lab.idx])
    return lab, types


def kaggle_photos(cs: CellSet, p: np.ndarray, splits: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """kaggle-all photos of `splits`: label (1 ALL) and their most suspicious cell's p."""
    ys, tops = [], []
    for ph in cs.photos:
        if ph.source != "kaggle-all" or ph.split not in splits or ph.count == 0:
            continue
        q = p[ph.first : ph.first + ph.count]
        if np.isnan(q).all():
            continue
        ys.append(int(ph.label == "leukemia"))
        tops.append(float(np.nanmax(q)))
    return np.asarray(ys), np.asarray(tops)


def choose_cell_cut(cs: CellSet, p: np.ndarray, trained: list[str]) -> float:
    """Youden's cut on validation cells of `trained` sources, each negative source the same.

    Blasts are ALL-IDB1's (cell labels), negatives ALL-IDB1's non-blasts and PBC's cells;
    without ALL-IDB1, a kaggle-all photo's most suspicious cell stands for its photo. A
    source the run was not trained on is never used: it is that run's test.
    """
    pos = np.zeros(0)
    negs: list[np.ndarray] = []
    if "all-idb1" in trained:
        idb = idb1_cells(cs, p, ("val",))
        pos = idb.p[idb.y == 1]
        negs.append(idb.p[idb.y == 0])
    if PBC in trained:
        negs.append(pbc_cells(cs, p, ("val",))[0].p)
    if not len(pos) and "kaggle-all" in trained:
        y, top = kaggle_photos(cs, p, ("val",))
        pos = top[y == 1]
        negs.append(top[y == 0])
    negs = [q for q in negs if len(q)]
    if not len(pos) or not negs:
        return 0.5
    best, best_j = 0.5, -1.0
    for c in np.unique(np.concatenate([pos, *negs])):
        j = (pos >= c).mean() + np.mean([(q < c).mean() for q in negs]) - 1
        if j > best_j:
            best, best_j = float(c), float(j)
    return best


def trained_sources(config: dict[str, Any]) -> list[str]:
    """The sources a run learnt from (`--kaggle-labels none` drops kaggle-all)."""
    trained = list(config["train_sources"])
    if config.get("kaggle_labels") == "none":
        trained = [s for s in trained if s != "kaggle-all"]
    return trained
