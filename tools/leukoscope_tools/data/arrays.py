"""Preprocessed image arrays for training and evaluation, cached on disk by content."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leukoscope.analysis.preprocess import PreprocessParams, preprocess_uint8
from leukoscope.core.imageio import load_image
from leukoscope_tools.data.photos import LEUKEMIA, Row

logger = logging.getLogger(__name__)

#: Where preprocessed arrays are kept (never committed); $LEUKOSCOPE_TOOLS_CACHE overrides.
DEFAULT_CACHE = Path(os.environ.get("LEUKOSCOPE_TOOLS_CACHE", ".run/cache"))


def _key(rows: Sequence[Row], params: PreprocessParams) -> str:
    h = hashlib.sha256(json.dumps([params.to_json(), list(params.input_size)]).encode())
    for row in rows:
        h.update(row.sha256.encode())
    return h.hexdigest()[:20]


def load_uint8(
    root: Path, rows: Sequence[Row], params: PreprocessParams, cache: Path | None = DEFAULT_CACHE
) -> np.ndarray:
    """The model inputs of `rows` before normalisation, (n, h, w, 3) uint8.

    Decoding and preprocessing are the device's own (`load_image` at the resize scale,
    then `preprocess_uint8`); normalising is a cheap affine map done by `normalise`.
    """
    w, h = params.input_size
    if not rows:
        return np.zeros((0, h, w, 3), np.uint8)
    path = None
    if cache is not None:
        path = cache / f"{_key(rows, params)}.npy"
        if path.is_file():
            return np.load(path)
    out = np.empty((len(rows), h, w, 3), np.uint8)
    for i, row in enumerate(rows):
        out[i] = preprocess_uint8(load_image(root / row.path, min_size=params.resize), params)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
        logger.info("cached %d preprocessed images in %s", len(rows), path)
    return out


def normalise(x: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """uint8 model inputs -> float32, exactly as `preprocess()` normalises."""
    return x.astype(np.float32) * np.float32(params.scale) + np.float32(params.offset)


def labels_of(rows: Sequence[Row]) -> np.ndarray:
    """1 for leukemia, 0 for normal."""
    return np.array([int(r.label == LEUKEMIA) for r in rows], np.int64)
