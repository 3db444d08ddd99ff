"""Model bundles: a folder with model.tflite, manifest.json and golden/, checked before use.

Loading verifies the manifest's schema (`model.manifest`), every listed file's sha256,
that the model's input matches the manifest, and that the golden inputs still give
their recorded outputs on this runtime. A bundle that fails any check is refused whole.

Two analysis modes: "whole-field" (the model sees the resized photo) and "cells" (the
manifest's `cells` object; the model, exported with a dynamic batch, classifies a crop
of every white cell, and `cellmode` scores the slide; golden cases record slide scores).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukoscope.analysis.cells import CellAnalysis, CellSettings, analyse_cells
from leukoscope.analysis.decision import Verdict
from leukoscope.analysis.preprocess import preprocess
from leukoscope.core.errors import BundleError, ImageError
from leukoscope.core.fsutil import read_regular_file
from leukoscope.core.imageio import load_image
from leukoscope.model.classifier import TFLiteClassifier
from leukoscope.model.manifest import MODEL_FILE, GoldenCase, Manifest, read_manifest, sha256_bytes

logger = logging.getLogger(__name__)

SUPPORTED_ANALYSIS_MODES = ("whole-field", "cells")
#: The shipped int8 model is about 1 MB.
MAX_FILE_BYTES = 64 << 20


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one image."""

    p_leukemia: float
    probabilities: dict[str, float]
    verdict: Verdict


class Bundle:
    """A verified bundle with its classifier, ready to answer."""

    def __init__(self, root: Path, manifest: Manifest, classifier: TFLiteClassifier) -> None:
        self.root = root
        self.manifest = manifest
        self.classifier = classifier

    @property
    def label(self) -> str:
        """`name version` for logs and the CLI."""
        return f"{self.manifest.name} {self.manifest.version}"

    def predict_input(self, x: np.ndarray) -> Prediction:
        """Classify an already preprocessed float input."""
        out = self.classifier.predict(x)
        labels = self.manifest.labels
        if out.size == 1:
            # A sigmoid model gives the positive class's probability alone.
            p = float(np.clip(out[0], 0.0, 1.0))
            probs = {lab: (p if lab == self.manifest.positive_label else 1.0 - p) for lab in labels}
        else:
            probs = {lab: float(v) for lab, v in zip(labels, out, strict=True)}
            p = float(np.clip(probs[self.manifest.positive_label], 0.0, 1.0))
        return Prediction(p, probs, self.manifest.thresholds.decide(p))

    def predict(self, rgb: np.ndarray) -> Prediction:
        """Classify an 8-bit RGB image (whole-field mode)."""
        return self.predict_input(preprocess(rgb, self.manifest.preprocess))

    @property
    def cell_settings(self) -> CellSettings:
        """The cells object of a cells bundle (ValueError for a whole-field bundle)."""
        if self.manifest.cells is None:
            raise ValueError(f"{self.label} is a {self.manifest.analysis_mode} bundle")
        return self.manifest.cells

    def blast_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """N preprocessed cell crops -> N probabilities of the positive class, one invoke."""
        out = self.classifier.predict_batch(batch)
        if out.shape[1] == 1:
            p = out[:, 0]
        else:
            p = out[:, self.manifest.labels.index(self.manifest.positive_label)]
        return np.clip(p, 0.0, 1.0).astype(np.float32)

    def analyse_cells(self, rgb: np.ndarray, *, px_per_um: float | None = None) -> CellAnalysis:
        """The cell analysis of an 8-bit RGB photo (cells mode; no quality gate)."""
        return analyse_cells(
            rgb,
            self.cell_settings,
            self.manifest.preprocess,
            self.blast_probabilities,
            px_per_um=px_per_um,
        )

    def load_for_model(self, source: Path | bytes) -> np.ndarray:
        """Decode an image file at the smallest scale the analysis can use.

        Whole-field: no smaller than the preprocessing's first resize. Cells: full
        resolution (crops of small nuclei need every pixel; see `pipeline.decode_size`).
        """
        if self.manifest.analysis_mode == "cells":
            return load_image(source)
        return load_image(source, min_size=self.manifest.preprocess.resize)


def _check_files(root: Path, manifest: Manifest) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    for rel, want in sorted(manifest.files.items()):
        path = root / rel
        try:
            data = read_regular_file(path, MAX_FILE_BYTES)
        except FileNotFoundError:
            raise BundleError(f"{root}: missing file {rel}") from None
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
    """Re-run every golden case; return the largest deviation or raise BundleError."""
    worst = 0.0
    for case in bundle.manifest.golden:
        try:
            rgb = bundle.load_for_model(contents[case.file])
        except ImageError as exc:
            raise BundleError(f"{bundle.root}: golden input {case.file}: {exc}") from None
        if bundle.manifest.analysis_mode == "cells":
            got = _golden_cell_score(bundle, case, rgb)
        else:
            got = bundle.predict(rgb).p_leukemia
        diff = abs(got - case.p_leukemia)
        worst = max(worst, diff)
        if diff > bundle.manifest.golden_tolerance:
            raise BundleError(
                f"{bundle.root}: golden mismatch on {case.file}: p_leukemia {got:.4f}, "
                f"expected {case.p_leukemia:.4f} ± {bundle.manifest.golden_tolerance}"
            )
    return worst


def _golden_cell_score(bundle: Bundle, case: GoldenCase, rgb: np.ndarray) -> float:
    """The slide score of a golden smear, by the full cell analysis (scale measured)."""
    result = bundle.analyse_cells(rgb)
    if result.report is None or result.retake is not None:
        raise BundleError(
            f"{bundle.root}: golden mismatch on {case.file}: cell analysis asks for a retake "
            f"({result.retake}), expected a slide score of {case.p_leukemia:.4f}"
        )
    return result.report.score


def load_bundle(root: Path, *, num_threads: int = 1) -> Bundle:
    """Load and fully verify a bundle; raise BundleError naming the first thing that failed."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest.analysis_mode not in SUPPORTED_ANALYSIS_MODES:
        raise BundleError(
            f"{root}: analysis_mode {manifest.analysis_mode!r} is not supported by this "
            f"version of leukoscope (supported: {', '.join(SUPPORTED_ANALYSIS_MODES)})"
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
    if manifest.analysis_mode == "cells" and not classifier.dynamic_batch:
        raise BundleError(
            f"{root}: a cells bundle's model needs a dynamic batch (input shape signature "
            f"[-1, {want[1]}, {want[2]}, 3]) to classify a field's crops in one call; "
            "this one has a fixed batch of 1"
        )
    n_out = classifier.num_outputs
    if n_out not in (1, len(manifest.labels)):
        raise BundleError(f"{root}: model gives {n_out} outputs for {len(manifest.labels)} labels")
    bundle = Bundle(root, manifest, classifier)
    worst = golden_check(bundle, contents)
    logger.info(
        "loaded bundle %s (%s, sha256 %s..., golden within %.4f)",
        bundle.label,
        classifier.runtime,
        manifest.model_sha256[:12],
        worst,
    )
    return bundle
