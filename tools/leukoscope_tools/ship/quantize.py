"""Full-integer int8 conversion of a trained run, and its parity with the Keras model."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leukoscope.model.classifier import TFLiteClassifier
from leukoscope_tools.data.arrays import load_uint8, normalise
from leukoscope_tools.data.photos import Row, select
from leukoscope_tools.ship.export import to_int8_tflite
from leukoscope_tools.train.field import load_run, positive_prob
from leukoscope_tools.train.models import ARCHS

logger = logging.getLogger(__name__)

MODEL_INT8 = "model_int8.tflite"
#: Calibration images drawn from the training split.
N_REPRESENTATIVE = 200


def tflite_prob(tflite: bytes, x: np.ndarray) -> np.ndarray:
    """Probability of leukemia from an int8 model, one image at a time (as on the device)."""
    clf = TFLiteClassifier(tflite)
    out = [clf.predict(xi) for xi in x]
    return np.array([o[0] if o.size == 1 else o[1] for o in out], np.float32)


def parity(model: Any, tflite: bytes, x: np.ndarray, cut: float = 0.5) -> dict[str, Any]:
    """How often Keras and int8 agree at `cut`, and their largest probability difference."""
    pk = positive_prob(model, x)
    pq = tflite_prob(tflite, x)
    agree = float(np.mean((pk >= cut) == (pq >= cut))) if len(x) else 1.0
    return {
        "n": len(x),
        "agreement": round(agree, 6),
        "max_abs_diff": round(float(np.max(np.abs(pk - pq))) if len(x) else 0.0, 6),
        "mean_abs_diff": round(float(np.mean(np.abs(pk - pq))) if len(x) else 0.0, 6),
    }


def quantize_run(
    run_dir: Path, rows: Sequence[Row], root: Path, *, min_agreement: float = 0.99, seed: int = 0
) -> dict[str, Any]:
    """Write `run_dir/model_int8.tflite` and `quantize.json`; return the parity report.

    The representative set is drawn from the training split (of the run's sources) through
    the same preprocessing; parity is measured on the test split. Raises ValueError when
    agreement is below `min_agreement` (the model file is still written, for inspection).
    """
    model, run, _ = load_run(run_dir)
    spec = ARCHS[run["config"]["arch"]]
    sources = run["config"]["train_sources"]
    train_rows = select(rows, "train", sources)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(train_rows))[:N_REPRESENTATIVE]
    rep = normalise(
        load_uint8(root, [train_rows[int(i)] for i in sorted(pick)], spec.params), spec.params
    )
    tflite = to_int8_tflite(model, list(rep))
    (run_dir / MODEL_INT8).write_bytes(tflite)
    test_rows = select(rows, "test", sources)
    report = parity(model, tflite, normalise(load_uint8(root, test_rows, spec.params), spec.params))
    report["bytes"] = len(tflite)
    report["representative"] = len(rep)
    (run_dir / "quantize.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info(
        "int8 parity on %d test images: agreement %.4f, max |diff| %.4f",
        report["n"],
        report["agreement"],
        report["max_abs_diff"],
    )
    if report["agreement"] < min_agreement:
        raise ValueError(
            f"int8 model agrees with Keras on only {report['agreement']:.2%} of test images "
            f"(need {min_agreement:.0%})"
        )
    return report
