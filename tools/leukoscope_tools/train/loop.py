"""The training loop both trainers share: seeded model, one epoch at a time, early stopping.

Each epoch the caller draws that epoch's (augmented, normalised) batch, the model takes one
pass over it, and the caller scores the validation set. Two ways to end:

- best epoch (the default): the weights of the best-scoring epoch are kept; training stops
  after `patience` epochs without a better score. With a small, noisy validation set the
  "best" epoch is partly luck (one run's validation AUC jumped 0.69-0.88 between epochs).
- averaged (`average_last` > 0): every epoch is run, the learning rate falls on a cosine
  from its start to 2% of it, and the model ends with the mean of the last epochs'
  weights. Validation is only recorded, so no choice rests on it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from tqdm import tqdm

from leukoscope_tools.train.models import build_model

logger = logging.getLogger(__name__)


def new_model(arch: str, seed: int, learning_rate: float, loss: str) -> Any:
    """A fresh, compiled model of `arch`, its initial weights fixed by `seed`."""
    keras.utils.set_random_seed(seed)
    model = build_model(arch)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    return model


def sqrt_balanced_weights(keys: Sequence[Hashable]) -> np.ndarray:
    """Sample weights giving each key (e.g. source and label) a total ~ sqrt(its size).

    Labels weigh the same within a source, and a small source is neither drowned by a
    large one nor allowed to dominate it. Normalised to mean 1.
    """
    counts = Counter(keys)
    w = np.array([1.0 / np.sqrt(counts[k]) for k in keys])
    return (w / w.mean()).astype(np.float32) if len(w) else w.astype(np.float32)


@dataclass
class Batch:
    """One epoch's training inputs (normalised floats), labels and sample weights."""

    x: np.ndarray
    y: np.ndarray
    weight: np.ndarray


@dataclass
class Validation:
    """One epoch's validation outcome: the score to maximise, and what to record."""

    score: float
    record: dict[str, float]


@dataclass
class Trained:
    """What the loop did: per-epoch history, the best epoch (0-based; -1 if none), timing."""

    history: dict[str, list[float]]
    best_epoch: int
    epoch_seconds: list[float]
    seconds: float
    #: The averaged model's validation record (averaged runs only).
    averaged: dict[str, float] | None = None


def cosine_rate(start: float, epoch: int, epochs: int, floor: float = 0.02) -> float:
    """Learning rate of `epoch` (0-based) of `epochs`: a half cosine from `start` to floor*start."""
    t = epoch / max(1, epochs - 1)
    return float(start * (floor + (1.0 - floor) * 0.5 * (1.0 + np.cos(np.pi * t))))


def mean_weights(snapshots: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The element-wise mean of float weights; other arrays (e.g. seed states) from the last."""
    out = []
    for arrays in zip(*snapshots, strict=True):
        last = arrays[-1]
        if np.issubdtype(last.dtype, np.floating):
            out.append(np.mean(np.stack(arrays), axis=0).astype(last.dtype))
        else:
            out.append(last)
    return out


def train_loop(
    model: Any,
    draw: Callable[[int], Batch],
    validate: Callable[[Any], Validation],
    *,
    max_epochs: int,
    patience: int,
    batch_size: int,
    name: str,
    progress: bool = False,
    average_last: int = 0,
) -> Trained:
    """Train epoch by epoch; leave `model` holding the best epoch's or the averaged weights.

    History holds `loss` and then each key of the validation records, one value per epoch.
    """
    history: dict[str, list[float]] = {"loss": []}
    epoch_seconds: list[float] = []
    best, best_epoch, best_weights, waited = -1.0, -1, model.get_weights(), 0
    snapshots: list[list[np.ndarray]] = []
    start_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    t0 = time.perf_counter()
    bar = tqdm(range(max_epochs), desc=name, disable=not progress, unit="epoch")
    for epoch in bar:
        te = time.perf_counter()
        if average_last > 0:
            model.optimizer.learning_rate.assign(cosine_rate(start_rate, epoch, max_epochs))
        batch = draw(epoch)
        h = model.fit(
            batch.x,
            batch.y,
            sample_weight=batch.weight,
            batch_size=batch_size,
            epochs=1,
            verbose=0,
            shuffle=True,
        )
        v = validate(model)
        history["loss"].append(float(h.history["loss"][-1]))
        for key, value in v.record.items():
            history.setdefault(key, []).append(value)
        epoch_seconds.append(round(time.perf_counter() - te, 1))
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", score=f"{v.score:.3f}")
        logger.info(
            "%s epoch %d: loss %.4f %s (%.0f s)",
            name,
            epoch + 1,
            history["loss"][-1],
            " ".join(f"{k} {value:.4f}" for k, value in v.record.items()),
            epoch_seconds[-1],
        )
        if average_last > 0:
            if epoch >= max_epochs - average_last:
                snapshots.append(model.get_weights())
            continue
        if v.score > best:
            best, best_epoch, best_weights, waited = v.score, epoch, model.get_weights(), 0
        else:
            waited += 1
            if waited >= patience:
                logger.info(
                    "%s: early stop after epoch %d (best %d)", name, epoch + 1, best_epoch + 1
                )
                break
    if average_last > 0:
        model.set_weights(mean_weights(snapshots))
        v = validate(model)
        logger.info(
            "%s: mean of the last %d epochs' weights: %s",
            name,
            len(snapshots),
            " ".join(f"{k} {value:.4f}" for k, value in v.record.items()),
        )
        last = len(history["loss"]) - 1
        return Trained(history, last, epoch_seconds, time.perf_counter() - t0, v.record)
    model.set_weights(best_weights)
    return Trained(history, best_epoch, epoch_seconds, time.perf_counter() - t0)
