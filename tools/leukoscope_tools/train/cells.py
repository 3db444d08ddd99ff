"""Train the cell classifier (modified-Thanh, 128x128) on the cached cell crops.

Training crops are the labelled crops of the TRAIN photos (`leukoscope-tools cells dataset`),
of the chosen sources: cell-level labels (ALL-IDB1 blast centroids and other marked cells,
healthy slides, ALL-IDB2, PBC's normal cells) and, by `kaggle_labels`, kaggle-all's photo
labels:

- `photo`: every kaggle cell gets its photo's label (benign -> other, ALL -> blast); at
  most `kaggle_per_photo` per photo (seeded). A leukemia photo's lymphocytes become blasts.
- `mil`: multiple-instance: a benign photo's cells are all `other` (capped as above); of a
  leukemia photo only its most suspicious cell under the current model is a blast (from
  the second epoch, `mil_photos` photos drawn per epoch). An ALL photo holds at least one
  blast; its other cells are not claimed.
- `none`: kaggle-all is not trained on (nor validated on): the model sees cell labels only.

Each epoch draws `epoch_size` crops, turns and flips each (the 8 symmetries of a square: a
cell has no up or left), applies a change of lab (`data.cell_augment`: stain, scale
+-25%, blur, noise, JPEG), optionally blurs some to a lower magnification, and keeps the
weights of the epoch with the best validation score: the mean of the per-source crop AUCs
(sources with both labels in validation), and, with PBC, the AUC of every validation blast
against PBC's validation cells (another lab's normal cells must stay below the blasts).
Hard negatives (PBC's lymphocytes, immature granulocytes and nucleated red cells, and
ALL-IDB1's non-blasts, mostly lymphocytes) weigh `hard_weight` times their share.

    leukoscope-tools cells train build/cells --seed 0 --out build/cells/runs/both-s0
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from leukoscope.analysis.cells import normalise
from leukoscope_tools.data.cell_augment import LabJitter, lab_jitter
from leukoscope_tools.data.cells import CELL_SOURCES, PBC, PRE, CellSet, load
from leukoscope_tools.metrics import roc_auc
from leukoscope_tools.train.loop import (
    Batch,
    Validation,
    new_model,
    sqrt_balanced_weights,
    train_loop,
)
from leukoscope_tools.train.models import inference_copy

logger = logging.getLogger(__name__)

#: How kaggle-all's photo labels may be used (see the module docstring).
KAGGLE_LABELS = ("photo", "mil", "none")
#: PBC's cell types that look most like blasts (and its lymphocytes, most of a healthy
#: field's look-alikes): weighted up in training.
HARD_TYPES = ("lymphocyte", "ig", "erythroblast")


@dataclass
class CellTrainConfig:
    """Everything that decides a cell-classifier run besides the data."""

    seed: int = 0
    train_sources: list[str] = field(default_factory=lambda: list(CELL_SOURCES))
    kaggle_labels: str = "mil"
    #: Leukemia photos whose most suspicious cell is drawn per epoch (`mil`).
    mil_photos: int = 100
    #: Hard negatives' weight, times their sqrt-balanced share.
    hard_weight: float = 2.0
    #: The change-of-lab augmentation (off: symmetries only).
    jitter: bool = True
    max_epochs: int = 8
    patience: int = 3
    batch_size: int = 32
    epoch_size: int = 1536
    learning_rate: float = 1e-3
    #: kaggle-all cells drawn per photo (0: all of them), for training and validation.
    kaggle_per_photo: int = 2
    #: Share of training crops shrunk to `lowmag_px_per_um` and back (0: off).
    lowmag: float = 0.0
    lowmag_px_per_um: float = 2.2
    #: The change of lab's camera gamma, 1/(1 +- this) (0: off).
    gamma: float = 0.0
    #: Share of crops photographed again by a coarse, slightly defocused camera (0: off;
    #: `cell_augment.LabJitter.camera_share`).
    camera: float = 0.0
    #: Validation crops drawn at most (seeded), to keep each epoch's check cheap.
    max_val: int = 800
    #: Splits of the sources it is NOT trained on that are scored (cross-source test).
    cross_splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])
    #: >0: run every epoch on a cosine learning rate and keep the mean of the last this many
    #: epochs' weights (no early stop, no choice by validation); 0: keep the best epoch.
    average_last: int = 0


def select(
    cs: CellSet,
    split: str,
    sources: list[str],
    per_photo: int,
    seed: int,
    kaggle_labels: str = "photo",
) -> np.ndarray:
    """Indices of labelled crops of `split` photos from `sources` (kaggle capped per photo).

    `kaggle_labels` "mil" leaves out leukemia photos' cells (their blast is drawn per
    epoch), "none" every kaggle-all cell.
    """
    rng = np.random.default_rng(seed)
    by_photo: dict[int, list[int]] = {}
    for i, c in enumerate(cs.cells):
        if c.y_cell < 0:
            continue
        p = cs.photos[c.photo]
        if p.source == "kaggle-all" and (
            kaggle_labels == "none" or (kaggle_labels == "mil" and c.y_cell == 1)
        ):
            continue
        if p.split == split and p.source in sources:
            by_photo.setdefault(c.photo, []).append(i)
    out: list[int] = []
    for photo, idx in sorted(by_photo.items()):
        if per_photo and cs.photos[photo].source == "kaggle-all" and len(idx) > per_photo:
            idx = sorted(rng.choice(idx, per_photo, replace=False).tolist())
        out += idx
    return np.asarray(out, np.int64)


def cell_weights(cs: CellSet, idx: np.ndarray) -> np.ndarray:
    """Class weights per source: each (source, label) gets a total weight ~ sqrt(its size).

    Blasts and other cells weigh the same within a source, and a small source is not
    drowned by a large one (nor allowed to dominate it). Normalised to mean 1.
    """
    return sqrt_balanced_weights(
        [(cs.photos[cs.cells[i].photo].source, cs.cells[i].y_cell) for i in idx]
    )


def is_hard(cs: CellSet, i: int) -> bool:
    """A hard negative: a PBC lymphocyte, immature granulocyte or nucleated red cell, or an
    ALL-IDB1 non-blast (most are lymphocytes)."""
    c = cs.cells[i]
    p = cs.photos[c.photo]
    if c.y_cell != 0:
        return False
    return (p.source == PBC and p.cls in HARD_TYPES) or p.source == "all-idb1"


def mil_candidates(cs: CellSet, split: str) -> dict[int, np.ndarray]:
    """A kaggle-all leukemia photo's detected cells, per photo, for multiple-instance labels."""
    out: dict[int, list[int]] = {}
    for i, c in enumerate(cs.cells):
        p = cs.photos[c.photo]
        if p.source == "kaggle-all" and p.split == split and c.y_cell == 1 and c.detected:
            out.setdefault(c.photo, []).append(i)
    return {k: np.asarray(v, np.int64) for k, v in sorted(out.items())}


def most_suspicious(
    model: Any, cs: CellSet, bags: dict[int, np.ndarray], photos: np.ndarray
) -> np.ndarray:
    """Of each chosen photo's cells, the one the model finds most blast-like."""
    idx = np.concatenate([bags[int(k)] for k in photos]) if len(photos) else np.zeros(0, int)
    if not len(idx):
        return idx
    p = predict(model, np.asarray(cs.crops[idx]))
    out, at = [], 0
    for k in photos:
        n = len(bags[int(k)])
        out.append(idx[at + int(np.argmax(p[at : at + n]))])
        at += n
    return np.asarray(out, np.int64)


def symmetries(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each crop under one of the 8 flips/quarter turns of the square, drawn at random."""
    out = np.empty_like(x)
    for i in range(len(x)):
        img = np.rot90(x[i], int(rng.integers(4)))
        out[i] = img[:, ::-1] if rng.random() < 0.5 else img
    return out


def lower_magnification(
    x: np.ndarray, rng: np.random.Generator, share: float, px_per_um: float, crop_um: float = 24.0
) -> np.ndarray:
    """Shrink a share of the crops to the detail of a `px_per_um` camera and back up."""
    if share <= 0:
        return x
    out = x.copy()
    side = x.shape[1]
    small = max(8, round(crop_um * px_per_um))
    for i in np.flatnonzero(rng.random(len(x)) < share):
        s = int(rng.integers(small, max(small + 1, side // 2)))
        tiny = cv2.resize(out[i], (s, s), interpolation=cv2.INTER_AREA)
        out[i] = cv2.resize(tiny, (side, side), interpolation=cv2.INTER_LINEAR)
    return out


def predict(model: Any, crops: np.ndarray, batch: int = 256) -> np.ndarray:
    """Blast probabilities of uint8 crops (the model's softmax output 1)."""
    outs = []
    for i in range(0, len(crops), batch):
        xb = normalise(np.asarray(crops[i : i + batch]), PRE)
        outs.append(np.asarray(model(xb, training=False))[:, 1])
    return np.concatenate(outs).astype(np.float64) if outs else np.zeros(0)


@dataclass
class CellRun:
    """A trained (inference-only) model and what happened on the way."""

    model: Any
    history: dict[str, list[float]]
    best_epoch: int
    best_val_auc: float | None
    seconds: float
    counts: dict[str, int]


def fit(cs: CellSet, cfg: CellTrainConfig) -> CellRun:
    """Train one seed on `cfg.train_sources`' train crops; early-stop on val crop AUC."""
    if cfg.kaggle_labels not in KAGGLE_LABELS:
        raise ValueError(f"kaggle_labels must be one of {KAGGLE_LABELS}, got {cfg.kaggle_labels}")
    tr = select(cs, "train", cfg.train_sources, cfg.kaggle_per_photo, cfg.seed, cfg.kaggle_labels)
    # Validation keeps kaggle-all's photo labels (capped) unless kaggle-all is left out.
    val_labels = "none" if cfg.kaggle_labels == "none" else "photo"
    va = select(cs, "val", cfg.train_sources, cfg.kaggle_per_photo, cfg.seed + 1000, val_labels)
    mil = cfg.kaggle_labels == "mil" and "kaggle-all" in cfg.train_sources
    bags = mil_candidates(cs, "train") if mil else {}
    bag_keys = np.asarray(sorted(bags), np.int64)
    rng = np.random.default_rng(cfg.seed)
    if len(va) > cfg.max_val:
        va = np.sort(rng.choice(va, cfg.max_val, replace=False))
    y_all = cs.column("y_cell")
    y_tr, y_va = y_all[tr], y_all[va]
    if mil:
        y_tr = np.concatenate([y_tr, [1]])  # the photos' drawn blasts
    if len(set(y_tr.tolist())) < 2 or len(set(y_va.tolist())) < 2:
        raise ValueError("training and validation need both blast and other crops")
    x_va = np.asarray(cs.crops[va])
    src_va = np.array([cs.photos[cs.cells[i].photo].source for i in va])
    counts = {
        f"{split} {src} {'blast' if y == 1 else 'other'}": n
        for split, ix in (("train", tr), ("val", va))
        for (src, y), n in sorted(
            Counter((cs.photos[cs.cells[i].photo].source, int(y_all[i])) for i in ix).items()
        )
    }
    logger.info("crops: %s", counts)
    model = new_model("thanh", cfg.seed, cfg.learning_rate, "sparse_categorical_crossentropy")

    def draw(epoch: int) -> Batch:
        pool = tr
        if mil and epoch > 0:
            k = min(cfg.mil_photos, len(bag_keys))
            chosen = np.sort(rng.choice(bag_keys, k, replace=False))
            pool = np.concatenate([tr, most_suspicious(model, cs, bags, chosen)])
        n = len(pool)
        pick = rng.permutation(n)[: cfg.epoch_size] if 0 < cfg.epoch_size < n else np.arange(n)
        idx = pool[pick]
        hard = np.array([is_hard(cs, int(i)) for i in idx])
        w = cell_weights(cs, idx) * np.where(hard, np.float32(cfg.hard_weight), np.float32(1.0))
        xb = symmetries(np.asarray(cs.crops[idx]), rng)
        if cfg.jitter:
            xb = lab_jitter(xb, rng, LabJitter(gamma=cfg.gamma, camera_share=cfg.camera))
        xb = lower_magnification(xb, rng, cfg.lowmag, cfg.lowmag_px_per_um)
        return Batch(normalise(xb, PRE), y_all[idx], (w / w.mean()).astype(np.float32))

    def validate(m: Any) -> Validation:
        pv = predict(m, x_va)
        per_source = {s: roc_auc(y_va[src_va == s], pv[src_va == s]) for s in sorted(set(src_va))}
        if PBC in per_source:
            # Another lab's normal cells against every blast: the cross-lab check.
            lab = (y_va == 1) | (src_va == PBC)
            per_source[f"blasts vs {PBC}"] = roc_auc(y_va[lab], pv[lab])
        found = [a for a in per_source.values() if a is not None]
        # Each source counts the same: pooled, kaggle-all's noisy photo labels would decide.
        auc = float(np.mean(found)) if found else None
        record = {"val_auc": float("nan") if auc is None else auc}
        for s, a in per_source.items():
            record[f"val_auc {s}"] = float("nan") if a is None else a
        return Validation(-1.0 if auc is None else auc, record)

    run = train_loop(
        model,
        draw,
        validate,
        max_epochs=cfg.max_epochs,
        patience=cfg.patience,
        batch_size=cfg.batch_size,
        name=f"cells seed {cfg.seed}",
        average_last=cfg.average_last,
    )
    # run.json's history keys in their usual order: loss, val_auc, seconds, per source.
    history: dict[str, list[float]] = {"loss": [], "val_auc": [], "seconds": run.epoch_seconds}
    history |= run.history
    best = run.best_epoch
    val: float | None
    if run.averaged is not None:
        history |= {f"averaged {k}": [v] for k, v in run.averaged.items()}
        val = run.averaged["val_auc"]
    else:
        val = history["val_auc"][best] if best >= 0 else None
    return CellRun(inference_copy(model, "thanh"), history, best + 1, val, run.seconds, counts)


def crops_to_score(cs: CellSet, train_sources: list[str], cross_splits: list[str]) -> np.ndarray:
    """Detected crops of the photos a run is judged on.

    Val and test photos of its own sources; photos of `cross_splits` of the others.
    """
    out = []
    for i, c in enumerate(cs.cells):
        if not c.detected:
            continue
        p = cs.photos[c.photo]
        own = p.source in train_sources
        if (own and p.split in ("val", "test")) or (not own and p.split in cross_splits):
            out.append(i)
    return np.asarray(out, np.int64)


def train_and_score(cs: CellSet, cfg: CellTrainConfig, out: Path) -> dict[str, Any]:
    """Train, save model.keras + run.json, and p_blast.npy for every crop it is judged on."""
    run = fit(cs, cfg)
    out.mkdir(parents=True, exist_ok=True)
    run.model.save(out / "model.keras")
    idx = crops_to_score(cs, cfg.train_sources, cfg.cross_splits)
    t0 = time.perf_counter()
    p = np.full(len(cs.cells), np.nan)
    p[idx] = predict(run.model, cs.crops[idx]) if len(idx) else p[idx]
    np.save(out / "p_blast.npy", p)
    info = {
        "config": asdict(cfg),
        "best_epoch": run.best_epoch,
        "epochs_run": len(run.history["loss"]),
        "best_val_crop_auc": run.best_val_auc,
        "history": run.history,
        "train_seconds": round(run.seconds, 1),
        "score_seconds": round(time.perf_counter() - t0, 1),
        "scored_crops": len(idx),
        "crops": run.counts,
    }
    (out / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    logger.info("saved %s: best epoch %d, val crop AUC %s", out, run.best_epoch, run.best_val_auc)
    return info


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """`leukoscope-tools cells train`'s arguments."""
    ap.add_argument("cells", type=Path, help="the `cells dataset` cache folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sources", nargs="+", default=list(CELL_SOURCES), choices=CELL_SOURCES)
    ap.add_argument("--kaggle-labels", choices=KAGGLE_LABELS, default=CellTrainConfig.kaggle_labels)
    ap.add_argument("--hard-weight", type=float, default=CellTrainConfig.hard_weight)
    ap.add_argument("--no-jitter", action="store_true", help="symmetries only")
    ap.add_argument("--epochs", type=int, default=CellTrainConfig.max_epochs)
    ap.add_argument("--epoch-size", type=int, default=CellTrainConfig.epoch_size)
    ap.add_argument("--kaggle-per-photo", type=int, default=CellTrainConfig.kaggle_per_photo)
    ap.add_argument("--lowmag", type=float, default=0.0)
    ap.add_argument(
        "--gamma", type=float, default=0.0, help="camera gamma in 1/(1 +- this) (default 0: off)"
    )
    ap.add_argument(
        "--camera",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of crops photographed again by a coarse (1.5-3 px/um), slightly defocused "
        "(0.3-1.2 of its px) camera with its noise and JPEG (default 0: off)",
    )
    ap.add_argument(
        "--average-last",
        type=int,
        default=0,
        metavar="K",
        help="run every epoch on a cosine learning rate and keep the mean of the last K "
        "epochs' weights (default 0: keep the best epoch by validation)",
    )
    ap.add_argument(
        "--cross-splits",
        nargs="+",
        default=["train", "val", "test"],
        help="splits of the other sources to score (cross-source test)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Train one cell-classifier run from the cached set."""
    cfg = CellTrainConfig(
        seed=args.seed,
        train_sources=list(args.sources),
        kaggle_labels=args.kaggle_labels,
        hard_weight=args.hard_weight,
        jitter=not args.no_jitter,
        max_epochs=args.epochs,
        epoch_size=args.epoch_size,
        kaggle_per_photo=args.kaggle_per_photo,
        lowmag=args.lowmag,
        gamma=args.gamma,
        camera=args.camera,
        cross_splits=list(args.cross_splits),
        average_last=args.average_last,
    )
    train_and_score(load(args.cells), cfg, args.out)
    return 0
