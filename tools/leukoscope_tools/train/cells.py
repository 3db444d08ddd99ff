"""Train the cell classifier (modified-Thanh, 128x128) on the cached cell crops.

Training crops are the labelled crops of the TRAIN photos (`leukoscope-tools cells dataset`),
of the chosen sources. kaggle-all photos each give about ten detected cells with the
photo's (noisy) label; at most `kaggle_per_photo` of them are drawn per photo (seeded) so
one source does not swamp the other and an epoch stays affordable on a 2-core CPU. Each
epoch draws `epoch_size` crops, turns and flips each (the 8 symmetries of a square: a cell
has no up or left), optionally blurs some to a lower magnification, and keeps the weights
of the epoch with the best validation crop AUC (labelled crops of VAL photos; the mean of the
per-source AUCs, so kaggle-all's noisy labels do not decide alone).

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
from leukoscope_tools.data.cells import PRE, SOURCES, CellSet, load
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


@dataclass
class CellTrainConfig:
    """Everything that decides a cell-classifier run besides the data."""

    seed: int = 0
    train_sources: list[str] = field(default_factory=lambda: list(SOURCES))
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
    #: Validation crops drawn at most (seeded), to keep each epoch's check cheap.
    max_val: int = 1500
    #: Splits of the sources it is NOT trained on that are scored (cross-source test).
    cross_splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])


def select(cs: CellSet, split: str, sources: list[str], per_photo: int, seed: int) -> np.ndarray:
    """Indices of labelled crops of `split` photos from `sources` (kaggle capped per photo)."""
    rng = np.random.default_rng(seed)
    by_photo: dict[int, list[int]] = {}
    for i, c in enumerate(cs.cells):
        if c.y_cell < 0:
            continue
        p = cs.photos[c.photo]
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
    tr = select(cs, "train", cfg.train_sources, cfg.kaggle_per_photo, cfg.seed)
    va = select(cs, "val", cfg.train_sources, cfg.kaggle_per_photo, cfg.seed + 1000)
    rng = np.random.default_rng(cfg.seed)
    if len(va) > cfg.max_val:
        va = np.sort(rng.choice(va, cfg.max_val, replace=False))
    y_all = cs.column("y_cell")
    y_tr, y_va = y_all[tr], y_all[va]
    if len(set(y_tr.tolist())) < 2 or len(set(y_va.tolist())) < 2:
        raise ValueError("training and validation need both blast and other crops")
    w_tr = cell_weights(cs, tr)
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
        n = len(tr)
        pick = rng.permutation(n)[: cfg.epoch_size] if 0 < cfg.epoch_size < n else np.arange(n)
        xb = symmetries(np.asarray(cs.crops[tr[pick]]), rng)
        xb = lower_magnification(xb, rng, cfg.lowmag, cfg.lowmag_px_per_um)
        return Batch(normalise(xb, PRE), y_tr[pick], w_tr[pick])

    def validate(m: Any) -> Validation:
        pv = predict(m, x_va)
        per_source = {s: roc_auc(y_va[src_va == s], pv[src_va == s]) for s in sorted(set(src_va))}
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
    )
    # run.json's history keys in their usual order: loss, val_auc, seconds, per source.
    history: dict[str, list[float]] = {"loss": [], "val_auc": [], "seconds": run.epoch_seconds}
    history |= run.history
    best = run.best_epoch
    return CellRun(
        inference_copy(model, "thanh"),
        history,
        best + 1,
        history["val_auc"][best] if best >= 0 else None,
        run.seconds,
        counts,
    )


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
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    ap.add_argument("--epochs", type=int, default=CellTrainConfig.max_epochs)
    ap.add_argument("--epoch-size", type=int, default=CellTrainConfig.epoch_size)
    ap.add_argument("--kaggle-per-photo", type=int, default=CellTrainConfig.kaggle_per_photo)
    ap.add_argument("--lowmag", type=float, default=0.0)
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
        max_epochs=args.epochs,
        epoch_size=args.epoch_size,
        kaggle_per_photo=args.kaggle_per_photo,
        lowmag=args.lowmag,
        cross_splits=list(args.cross_splits),
    )
    train_and_score(load(args.cells), cfg, args.out)
    return 0
