"""Train one of the paper's networks on a split table: seeded, augmented, early-stopped."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from leukoscope_tools.data.arrays import labels_of, load_uint8, normalise
from leukoscope_tools.data.augment import augment_split
from leukoscope_tools.data.photos import Row, select
from leukoscope_tools.metrics import roc_auc
from leukoscope_tools.train.loop import (
    Batch,
    Validation,
    new_model,
    sqrt_balanced_weights,
    train_loop,
)
from leukoscope_tools.train.models import ARCHS, inference_copy

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that decides a training run besides the data."""

    arch: str = "thanh"
    seed: int = 0
    max_epochs: int = 12
    patience: int = 4
    batch_size: int = 32
    #: Training images drawn (without replacement) per epoch; 0 means all of them.
    epoch_size: int = 1024
    learning_rate: float | None = None
    augment: bool = True
    train_sources: list[str] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def sample_weights(rows: Sequence[Row]) -> np.ndarray:
    """Weights that balance labels within each source and keep small sources audible.

    Each (source, label) cell gets a total weight proportional to the square root of its
    size: equal weights would let 3,000 kaggle-all photos drown 40 ALL-IDB1 fields, and
    equal cells would let 20 photos dominate. Normalised to mean 1.
    """
    return sqrt_balanced_weights([(r.source, r.label) for r in rows])


def positive_prob(model: Any, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """The model's probability of leukemia for float inputs (sigmoid or softmax head)."""
    outs = []
    for i in range(0, len(x), batch):
        out = np.asarray(model(x[i : i + batch], training=False))
        outs.append(out[:, 0] if out.shape[1] == 1 else out[:, 1])
    return np.concatenate(outs) if outs else np.zeros(0, np.float32)


@dataclass
class TrainResult:
    """A trained (inference-only) model and what happened on the way."""

    model: Any
    history: dict[str, list[float]]
    best_epoch: int
    best_val_auc: float | None
    seconds: float


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    w_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: TrainConfig,
    *,
    progress: bool = True,
) -> TrainResult:
    """Train on uint8 inputs; keep the weights of the epoch with the best validation AUC.

    Each epoch draws `epoch_size` training images, augments them afresh (seeded by
    seed and epoch), and then scores the untouched validation images.
    """
    spec = ARCHS[cfg.arch]
    params = spec.params
    loss = "binary_crossentropy" if spec.sigmoid else "sparse_categorical_crossentropy"
    model = new_model(cfg.arch, cfg.seed, cfg.learning_rate or spec.learning_rate, loss)
    xv = normalise(x_val, params)
    rng = np.random.default_rng(cfg.seed)

    def draw(epoch: int) -> Batch:
        n = len(x_train)
        idx = rng.permutation(n)[: cfg.epoch_size] if 0 < cfg.epoch_size < n else np.arange(n)
        xb = x_train[idx]
        if cfg.augment:
            xb = augment_split(xb, "train", cfg.seed, epoch)
        yb = y_train[idx].astype(np.float32 if spec.sigmoid else np.int64)
        return Batch(normalise(xb, params), yb, w_train[idx])

    def validate(m: Any) -> Validation:
        pv = positive_prob(m, xv)
        eps = 1e-7
        val_loss = float(-np.mean(y_val * np.log(pv + eps) + (1 - y_val) * np.log(1 - pv + eps)))
        auc = roc_auc(y_val, pv)
        record = {"val_loss": val_loss, "val_auc": float("nan") if auc is None else auc}
        return Validation(-val_loss if auc is None else auc, record)

    run = train_loop(
        model,
        draw,
        validate,
        max_epochs=cfg.max_epochs,
        patience=cfg.patience,
        batch_size=cfg.batch_size,
        name=f"{cfg.arch} seed {cfg.seed}",
        progress=progress,
    )
    best = run.best_epoch
    return TrainResult(
        inference_copy(model, cfg.arch),
        run.history,
        best + 1,
        run.history["val_auc"][best] if best >= 0 else None,
        run.seconds,
    )


def train_on_table(
    rows: Sequence[Row], root: Path, cfg: TrainConfig, out: Path, *, progress: bool = True
) -> TrainResult:
    """Train on the table's training split (of `cfg.train_sources`) and save the run to `out`.

    `out` gets model.keras (inference-only), history.json and run.json.
    """
    spec = ARCHS[cfg.arch]
    train_rows = select(rows, "train", cfg.train_sources)
    val_rows = select(rows, "val", cfg.train_sources)
    if not train_rows or not val_rows:
        raise ValueError(f"no training or validation rows for sources {cfg.train_sources}")
    x_train = load_uint8(root, train_rows, spec.params)
    x_val = load_uint8(root, val_rows, spec.params)
    result = fit(
        x_train,
        labels_of(train_rows),
        sample_weights(train_rows),
        x_val,
        labels_of(val_rows),
        cfg,
        progress=progress,
    )
    save_run(out, result, cfg, train_rows, val_rows)
    return result


def save_run(
    out: Path,
    result: TrainResult,
    cfg: TrainConfig,
    train_rows: Sequence[Row],
    val_rows: Sequence[Row],
) -> None:
    """Write a run folder: model.keras, history.json, run.json."""
    out.mkdir(parents=True, exist_ok=True)
    result.model.save(out / "model.keras")
    (out / "history.json").write_text(json.dumps(result.history, indent=1) + "\n")
    run = {
        "config": asdict(cfg),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history["loss"]),
        "best_val_auc": result.best_val_auc,
        "seconds": round(result.seconds, 1),
        "n_train": len(train_rows),
        "n_val": len(val_rows),
    }
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    logger.info(
        "saved run to %s (best epoch %d, val AUC %s, %.0f s)",
        out,
        result.best_epoch,
        result.best_val_auc,
        result.seconds,
    )


def load_run(run_dir: Path) -> tuple[Any, dict[str, Any], dict[str, list[float]]]:
    """A saved run's model, run.json and history."""
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    run = json.loads((run_dir / "run.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    return model, run, history
