"""Model bundles: a folder with model.tflite, manifest.json and golden/, checked before use.

Loading verifies the manifest's schema (`model.manifest`), every listed file's sha256,
that the model's input matches the manifest, and that the golden inputs still give
their recorded outputs on this runtime. A bundle that fails any check is refused whole.

The manifest's analysis_mode picks the bundle's analyser once, here (`ANALYSERS`):
"whole-field" (the model sees the resized photo) or "cells" (the model, exported with a
dynamic batch, classifies a crop of every white cell and the slide is scored; golden
cases record slide scores). See `analysis.analysers`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from leukoscope.analysis.analysers import Analyser, CellAnalyser, WholeFieldAnalyser
from leukoscope.core.errors import BundleError, ImageError
from leukoscope.core.fsutil import LinkInBundleError, read_regular_file, refuse_links
from leukoscope.model.classifier import TFLiteClassifier
from leukoscope.model.manifest import (
    MODEL_FILE,
    NO_SAMPLE_RULE,
    Manifest,
    read_manifest,
    sha256_bytes,
)

logger = logging.getLogger(__name__)

#: The shipped int8 model is about 1 MB.
MAX_FILE_BYTES = 64 << 20


def whole_field_analyser(manifest: Manifest, classifier: TFLiteClassifier) -> WholeFieldAnalyser:
    """The analyser of a whole-field bundle: the model's outputs for one input, by label."""
    labels, positive = manifest.labels, manifest.positive_label

    def classify(x: np.ndarray) -> dict[str, float]:
        out = classifier.predict(x)
        if out.size == 1:
            # A sigmoid model gives the positive class's probability alone.
            p = float(np.clip(out[0], 0.0, 1.0))
            return {lab: (p if lab == positive else 1.0 - p) for lab in labels}
        return {lab: float(v) for lab, v in zip(labels, out, strict=True)}

    return WholeFieldAnalyser(manifest.preprocess, manifest.thresholds, positive, classify)


def cell_analyser(manifest: Manifest, classifier: TFLiteClassifier) -> CellAnalyser:
    """The analyser of a cells bundle: N crops -> N positive-class probabilities, one invoke."""
    if manifest.cells is None:  # parse_manifest requires the cells object in cells mode
        raise BundleError(f"{manifest.name}: a cells bundle without its cells object")
    positive = manifest.labels.index(manifest.positive_label)

    def blast_probabilities(batch: np.ndarray) -> np.ndarray:
        out = classifier.predict_batch(batch)
        p = out[:, 0] if out.shape[1] == 1 else out[:, positive]
        return np.clip(p, 0.0, 1.0).astype(np.float32)

    return CellAnalyser(
        manifest.cells, manifest.preprocess, manifest.thresholds, blast_probabilities
    )


#: The analyser of each analysis mode: the one place a mode's name picks behaviour.
ANALYSERS: dict[str, Callable[[Manifest, TFLiteClassifier], Analyser]] = {
    "whole-field": whole_field_analyser,
    "cells": cell_analyser,
}


class Bundle:
    """A verified bundle: its manifest, its classifier and the analyser its mode calls for."""

    def __init__(self, root: Path, manifest: Manifest, classifier: TFLiteClassifier) -> None:
        self.root = root
        self.manifest = manifest
        self.classifier = classifier
        #: Chosen once, by the manifest's analysis mode (checked by `load_bundle`).
        self.analyser: Analyser = ANALYSERS[manifest.analysis_mode](manifest, classifier)

    @property
    def label(self) -> str:
        """`name version` for logs and the CLI."""
        return f"{self.manifest.name} {self.manifest.version}"


def _check_files(root: Path, manifest: Manifest) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    for rel, want in sorted(manifest.files.items()):
        try:
            data = read_regular_file(refuse_links(root, rel), MAX_FILE_BYTES, follow=False)
        except FileNotFoundError:
            raise BundleError(f"{root}: missing file {rel}") from None
        except LinkInBundleError as exc:
            link = Path(exc.filename).relative_to(root)
            raise BundleError(
                f"{root}: {link} is a symbolic link: a bundle holds its own files"
            ) from None
        except OSError as exc:
            raise BundleError(f"{root}: cannot read {rel} ({exc.strerror})") from None
        got = sha256_bytes(data)
        if got != want:
            raise BundleError(
                f"{root}: {rel}: sha256 mismatch (tampered or corrupt): "
                f"manifest says {want[:12]}..., file is {got[:12]}..."
            )
        if rel == MODEL_FILE or rel in {g.file for g in manifest.golden}:
            contents[rel] = data
    return contents


def golden_check(bundle: Bundle, contents: dict[str, bytes]) -> float:
    """Re-run every golden case; return the largest deviation or raise BundleError.

    A golden case's score is the analyser's p_leukemia for it, without the quality gate
    (in cells mode the slide score, the scale measured from the red cells).
    """
    worst = 0.0
    for case in bundle.manifest.golden:
        try:
            rgb = bundle.analyser.decode(contents[case.file])
        except ImageError as exc:
            raise BundleError(f"{bundle.root}: golden input {case.file}: {exc}") from None
        outcome = bundle.analyser.analyse(rgb)
        got = outcome.p_leukemia
        if got is None:
            raise BundleError(
                f"{bundle.root}: golden mismatch on {case.file}: cell analysis asks for a retake "
                f"({outcome.cell_retake}), expected a slide score of {case.p_leukemia:.4f}"
            )
        diff = abs(got - case.p_leukemia)
        worst = max(worst, diff)
        if diff > bundle.manifest.golden_tolerance:
            raise BundleError(
                f"{bundle.root}: golden mismatch on {case.file}: p_leukemia {got:.4f}, "
                f"expected {case.p_leukemia:.4f} ± {bundle.manifest.golden_tolerance}"
            )
    return worst


def load_bundle(root: Path, *, num_threads: int = 1) -> Bundle:
    """Load and fully verify a bundle; raise BundleError naming the first thing that failed."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest.analysis_mode not in ANALYSERS:
        raise BundleError(
            f"{root}: analysis_mode {manifest.analysis_mode!r} is not supported by this "
            f"version of leukoscope (supported: {', '.join(ANALYSERS)})"
        )
    contents = _check_files(root, manifest)
    classifier = TFLiteClassifier(
        contents[MODEL_FILE], name=str(root / MODEL_FILE), num_threads=num_threads
    )
    want = (1, manifest.input_size[1], manifest.input_size[0], 3)
    if classifier.input_shape != want:
        raise BundleError(
            f"{root}: model input shape {classifier.input_shape} does not match the manifest's "
            f"input {manifest.input_size[0]}x{manifest.input_size[1]}x3 (expected {want})"
        )
    bundle = Bundle(root, manifest, classifier)
    if bundle.analyser.batched and not classifier.dynamic_batch:
        raise BundleError(
            f"{root}: a cells bundle's model needs a dynamic batch (input shape signature "
            f"[-1, {want[1]}, {want[2]}, 3]) to classify a field's crops in one call; "
            "this one has a fixed batch of 1"
        )
    n_out = classifier.num_outputs
    if n_out not in (1, len(manifest.labels)):
        raise BundleError(f"{root}: model gives {n_out} outputs for {len(manifest.labels)} labels")
    worst = golden_check(bundle, contents)
    logger.info(
        "loaded bundle %s (%s, sha256 %s..., golden within %.4f)",
        bundle.label,
        classifier.runtime,
        manifest.model_sha256[:12],
        worst,
    )
    if isinstance(bundle.analyser, CellAnalyser) and manifest.sample is None:
        logger.warning("bundle %s %s", bundle.label, NO_SAMPLE_RULE)
    return bundle
