"""From a trained Keras model to a verified int8 bundle: conversion, golden inputs, manifest.

`write_bundle()` writes a whole-field bundle, `write_cells_bundle()` a cells bundle (a cell
classifier exported with `to_int8_tflite(..., batch=None)` and the slide decision's
settings); both compute the golden outputs with the device's own code and load the
written bundle back before publishing it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow as tf

from leukoscope.analysis.cells import CellSettings, analyse_cells
from leukoscope.analysis.decision import Thresholds
from leukoscope.analysis.preprocess import PreprocessParams, preprocess
from leukoscope.core.imageio import load_image
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import load_bundle
from leukoscope.model.classifier import TFLiteClassifier
from leukoscope.model.manifest import FORMAT_VERSION, MANIFEST, MODEL_FILE, GoldenCase, sha256_bytes

logger = logging.getLogger(__name__)

#: How far a runtime may stray from the recorded golden output (probability units).
GOLDEN_TOLERANCE = 0.02


def to_int8_tflite(
    model: Any, representative: Iterable[np.ndarray], *, batch: int | None = 1
) -> bytes:
    """Convert a Keras model to full-integer int8 TFLite.

    Args:
        model: an inference-only Keras 3 model (no Dropout: its state breaks calibration).
        representative: preprocessed float inputs (h, w, c) from the training split.
        batch: the batch size, 1 for whole-field bundles; None exports a dynamic batch
            (input shape signature [-1, h, w, c], reported as [1, h, w, c]), which a cells
            bundle needs so the device classifies all of a field's crops in one invoke.
    """
    shape = tuple(int(d) for d in model.input_shape[1:])
    samples = [np.asarray(x, np.float32) for x in representative]
    if not samples:
        raise ValueError("the representative set is empty")

    def rep() -> Any:
        for x in samples:
            yield [x[None, ...]]

    with tempfile.TemporaryDirectory(prefix="leukoscope-export-") as saved:
        # A SavedModel is the path Keras 3 supports; a bare concrete function can leave
        # variables unfrozen (READ_VARIABLE at calibration).
        model.export(
            saved,
            format="tf_saved_model",
            input_signature=[tf.TensorSpec((batch, *shape), tf.float32)],
            verbose=False,
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = rep
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        return bytes(converter.convert())


def _synthetic_pngs(
    count: int, seed: int, size: tuple[int, int], n_wbc: int, px_per_um: float, stem: str
) -> dict[str, bytes]:
    """`count` synthetic smears (three blasts in every other one) as golden/NN-stem-kind.png."""
    out = {}
    for i in range(count):
        blasts = 3 if i % 2 else 0
        smear = make_smear(*size, n_wbc=n_wbc, n_blasts=blasts, px_per_um=px_per_um, seed=seed + i)
        ok, png = cv2.imencode(".png", cv2.cvtColor(smear.image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        kind = "blasts" if blasts else "normal"
        out[f"golden/{i:02d}-{stem}-{kind}.png"] = png.tobytes()
    return out


def golden_images(count: int = 4, *, seed: int = 7) -> dict[str, bytes]:
    """Small synthetic fields (half with blasts) as PNG bytes, named golden/NN-kind.png."""
    return _synthetic_pngs(count, seed, (320, 240), 2, 3.0, "synthetic")


def _p_leukemia(
    classifier: TFLiteClassifier,
    image: bytes,
    params: PreprocessParams,
    labels: list[str],
    positive: str,
) -> float:
    out = classifier.predict(preprocess(load_image(image, min_size=params.resize), params))
    if out.size == 1:
        return float(out[0])
    return float(out[labels.index(positive)])


def write_bundle(
    out_dir: Path,
    tflite: bytes,
    *,
    name: str,
    version: str,
    architecture: str,
    labels: list[str],
    positive_label: str,
    params: PreprocessParams,
    thresholds: Thresholds,
    training: dict[str, Any],
    metrics: dict[str, Any],
    extra_files: dict[str, bytes] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a complete bundle to `out_dir`, verified by `load_bundle` before it appears.

    The golden outputs are computed here, with the device's runtime, on synthetic inputs.
    The bundle is assembled in a temporary sibling folder and renamed into place, so a
    crash never leaves a half-written bundle at `out_dir`.
    """
    out_dir = _target(out_dir, overwrite)
    files: dict[str, bytes] = {MODEL_FILE: tflite, **golden_images(), **(extra_files or {})}
    classifier = _classifier_for(tflite, params)
    cases = [
        GoldenCase(rel, round(_p_leukemia(classifier, data, params, labels, positive_label), 6))
        for rel, data in files.items()
        if rel.startswith("golden/")
    ]
    manifest = _manifest(
        "whole-field",
        name=name,
        version=version,
        architecture=architecture,
        labels=labels,
        positive_label=positive_label,
        params=params,
        thresholds=thresholds,
        files=files,
        cases=cases,
        training=training,
        metrics=metrics,
    )
    _publish(out_dir, files, manifest)
    logger.info("wrote bundle %s (%s %s)", out_dir, name, version)
    return out_dir


def golden_smears(count: int = 4, *, seed: int = 7) -> dict[str, bytes]:
    """Synthetic smears for a cells bundle's golden cases (half with blasts), as PNG bytes.

    400x300 at 4 px/um: enough red cells to measure the scale, three white cells each
    (plus three blasts in every other one), so every case passes `min_cells` <= 3.
    """
    return _synthetic_pngs(count, seed, (400, 300), 3, 4.0, "synthetic-smear")


def _cell_labels(labels: list[str], positive_label: str, n_out: int) -> int:
    if positive_label not in labels:
        raise ValueError(f"positive_label {positive_label!r} is not one of {labels}")
    if n_out not in (1, len(labels)):
        raise ValueError(f"the model gives {n_out} outputs for {len(labels)} labels")
    return 0 if n_out == 1 else labels.index(positive_label)


def write_cells_bundle(
    out_dir: Path,
    tflite: bytes,
    *,
    name: str,
    version: str,
    architecture: str,
    params: PreprocessParams,
    cells: CellSettings,
    thresholds: Thresholds,
    training: dict[str, Any],
    metrics: dict[str, Any],
    labels: tuple[str, ...] | list[str] = ("other", "blast"),
    positive_label: str = "blast",
    extra_files: dict[str, bytes] | None = None,
    overwrite: bool = False,
    golden_count: int = 4,
) -> Path:
    """Write a complete `cells` bundle to `out_dir`, verified by `load_bundle` before it appears.

    Args:
        out_dir: the bundle folder to create (or replace, with `overwrite`).
        tflite: the cell classifier from `to_int8_tflite(model, reps, batch=None)`: its
            input is one crop (1, h, w, 3) with a dynamic batch dimension.
        name, version, architecture: the manifest's identity fields.
        params: the crops' preprocessing; `params.resize` must equal `params.input_size`
            (square), e.g. `PreprocessParams(resize=(128, 128), input_size=(128, 128))`.
        cells: the cell settings (crop size, white balance, k, cell_cut, min/max cells and
            the logistic slide model's weights), fitted on validation slides.
        thresholds: applied to the slide score.
        training, metrics: free-form objects recorded in the manifest (the model card's
            numbers).
        labels, positive_label: the cell classes, in the model's output order.
        extra_files: more files to ship (e.g. {"reports/compare.md": b"..."}), hash-listed.
        overwrite: replace an existing `out_dir`.
        golden_count: how many golden smears (`golden_smears()`) to record.

    The golden slide scores are computed here by the device's own cell analysis
    (`leukoscope.analysis.cells.analyse_cells` with this runtime), on synthetic smears
    whose scale is measured from their red cells. Raises ValueError when the model or the
    settings do not fit (fixed batch, wrong input size, a golden smear that would be a
    retake).
    """
    out_dir = _target(out_dir, overwrite)
    labels = list(labels)
    width, height = params.input_size
    if params.resize != params.input_size or width != height:
        raise ValueError(
            f"cells mode needs square crops with resize == input size, got resize "
            f"{params.resize}, input {params.input_size}"
        )
    classifier = _classifier_for(tflite, params)
    if not classifier.dynamic_batch:
        raise ValueError("a cells bundle needs a dynamic batch: to_int8_tflite(..., batch=None)")
    column = _cell_labels(labels, positive_label, classifier.num_outputs)

    def blast_probabilities(batch: np.ndarray) -> np.ndarray:
        return np.clip(classifier.predict_batch(batch)[:, column], 0.0, 1.0)

    goldens = golden_smears(golden_count)
    files: dict[str, bytes] = {MODEL_FILE: tflite, **goldens, **(extra_files or {})}
    cases = []
    for rel, data in goldens.items():
        result = analyse_cells(load_image(data), cells, params, blast_probabilities)
        if result.report is None or result.retake is not None:
            raise ValueError(f"golden smear {rel} would be a retake ({result.retake})")
        cases.append(GoldenCase(rel, round(result.report.score, 6)))
    manifest = _manifest(
        "cells",
        name=name,
        version=version,
        architecture=architecture,
        labels=labels,
        positive_label=positive_label,
        params=params,
        thresholds=thresholds,
        files=files,
        cases=cases,
        training=training,
        metrics=metrics,
        cells=dataclasses.asdict(cells),
    )
    _publish(out_dir, files, manifest)
    logger.info("wrote cells bundle %s (%s %s)", out_dir, name, version)
    return out_dir


def _target(out_dir: Path, overwrite: bool) -> Path:
    """The bundle folder to write, refused if it exists and may not be replaced."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists (pass overwrite=True to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return out_dir


def _classifier_for(tflite: bytes, params: PreprocessParams) -> TFLiteClassifier:
    """The model loaded in the device's runtime, refused if its input is not `params`'."""
    classifier = TFLiteClassifier(tflite)
    width, height = params.input_size
    want = (1, height, width, 3)
    if classifier.input_shape != want:
        raise ValueError(f"model input {classifier.input_shape} != preprocess input {want}")
    return classifier


def _manifest(
    mode: str,
    *,
    name: str,
    version: str,
    architecture: str,
    labels: list[str],
    positive_label: str,
    params: PreprocessParams,
    thresholds: Thresholds,
    files: dict[str, bytes],
    cases: list[GoldenCase],
    training: dict[str, Any],
    metrics: dict[str, Any],
    cells: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A manifest (schema in leukoscope.model.manifest) for the given files and golden cases."""
    width, height = params.input_size
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "architecture": architecture,
        "analysis_mode": mode,
        "labels": labels,
        "positive_label": positive_label,
        "input": {"width": width, "height": height, "channels": 3},
        "preprocess": params.to_json(),
        "thresholds": {"low": thresholds.low, "high": thresholds.high},
    }
    if cells is not None:
        manifest["cells"] = cells
    manifest |= {
        "files": {rel: sha256_bytes(data) for rel, data in sorted(files.items())},
        "golden": {
            "tolerance": GOLDEN_TOLERANCE,
            "cases": [{"file": c.file, "p_leukemia": c.p_leukemia} for c in cases],
        },
        "training": training,
        "metrics": metrics,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    return manifest


def _publish(out_dir: Path, files: dict[str, bytes], manifest: dict[str, Any]) -> None:
    """Write the bundle to a temporary sibling, load it back, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        load_bundle(tmp)  # refuse to publish a bundle that would not load
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
