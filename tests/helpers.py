"""Test helpers: a tiny bundle trained by the suite itself on synthetic smears."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from leukoscope.analysis.decision import Thresholds
from leukoscope.analysis.preprocess import PreprocessParams, preprocess
from leukoscope.core.synthetic import make_smear

TINY_PARAMS = PreprocessParams(input_size=(64, 64))
#: The tiny cells bundle: 64 px crops (resize == input size in cells mode).
TINY_CELL_PARAMS = PreprocessParams(resize=(64, 64), input_size=(64, 64))


def synthetic_set(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n preprocessed synthetic fields, half with blasts, and their labels (1 = blasts)."""
    xs, ys = [], []
    for i in range(n):
        label = i % 2
        smear = make_smear(256, 192, n_wbc=2, n_blasts=4 * label, px_per_um=3.0, seed=seed + i)
        xs.append(preprocess(smear.image, TINY_PARAMS))
        ys.append(label)
    return np.stack(xs), np.array(ys)


def _tiny_cnn(keras: Any) -> Any:
    """A very small 64x64 two-class CNN, compiled: fits in seconds, exports like the real one."""
    model = keras.Sequential(
        [
            keras.Input((64, 64, 3)),
            keras.layers.Conv2D(4, 5, strides=2, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy")
    return model


def build_tiny_bundle(out: Path, *, seed: int = 0) -> Path:
    """Train a very small CNN for a few steps on synthetic smears and bundle it as int8."""
    import keras

    from leukoscope_tools.ship.export import to_int8_tflite, write_bundle

    keras.utils.set_random_seed(seed)
    x, y = synthetic_set(32, seed=seed)
    model = _tiny_cnn(keras)
    model.fit(x, y, epochs=15, batch_size=8, verbose=0)
    tflite = to_int8_tflite(model, list(x[:16]))
    return write_bundle(
        out,
        tflite,
        name="tiny-test",
        version="0.0.1",
        architecture="tiny-cnn",
        labels=["normal", "leukemia"],
        positive_label="leukemia",
        params=TINY_PARAMS,
        thresholds=Thresholds(0.4, 0.6),
        training={"data": "synthetic smears made by tests/helpers.py", "seed": seed},
        metrics={},
    )


def refusal_of_a_pipe(load: Callable[[Path], object], fifo: Path) -> list[str]:
    """Call `load` on a FIFO in a thread; return the error messages it raised.

    A loader that blocks reading the pipe (the bug this guards against) is released
    after 5 s and returns no message, so the caller's assertion fails instead of hanging.
    """
    os.mkfifo(fifo)
    errors: list[str] = []

    def run() -> None:
        try:
            load(fifo)
        except Exception as exc:
            errors.append(str(exc))

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    return errors


def cell_training_set(n_smears: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs of the white cells detected on synthetic smears, labelled 1 = blast.

    Each detected cell takes the kind of the nearest drawn white cell.
    """
    from leukoscope.analysis.cells import CellSettings, cell_batch
    from leukoscope.analysis.detection import detect_white_cells

    settings = CellSettings()
    xs, ys = [], []
    for i in range(n_smears):
        smear = make_smear(400, 300, n_wbc=3, n_blasts=3, px_per_um=4.0, seed=seed + 100 + i)
        det = detect_white_cells(smear.image)
        drawn = [c for c in smear.cells if c.kind != "rbc"]
        if not det.cells or not drawn:
            continue
        xs.append(cell_batch(smear.image, det.cells, det, settings, TINY_CELL_PARAMS))
        for cell in det.cells:
            near = min(drawn, key=lambda d: (d.x - cell.x) ** 2 + (d.y - cell.y) ** 2)
            ys.append(int(near.kind == "blast"))
    return np.concatenate(xs), np.array(ys)


def build_tiny_cells_bundle(out: Path, *, seed: int = 0) -> Path:
    """A tiny cell classifier fitted for a few steps on synthetic crops, as a cells bundle."""
    import keras

    from leukoscope.analysis.cells import CellSettings
    from leukoscope_tools.ship.export import to_int8_tflite, write_cells_bundle

    keras.utils.set_random_seed(seed)
    x, y = cell_training_set(12, seed=seed)
    model = _tiny_cnn(keras)
    model.fit(x, y, epochs=30, batch_size=8, verbose=0)
    tflite = to_int8_tflite(model, list(x[:16]), batch=None)
    settings = CellSettings(max_cells=64, bias=-2.0, w_top_k=4.0, w_fraction=0.5)
    return write_cells_bundle(
        out,
        tflite,
        name="tiny-cells-test",
        version="0.0.1",
        architecture="tiny-cnn",
        params=TINY_CELL_PARAMS,
        cells=settings,
        thresholds=Thresholds(0.4, 0.6),
        training={"data": "synthetic smear crops made by tests/helpers.py", "seed": seed},
        metrics={},
    )
