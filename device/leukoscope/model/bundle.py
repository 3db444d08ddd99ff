"""Model bundles: a folder with model.tflite, manifest.json and golden/, checked before use.

Loading verifies the manifest's schema, every listed file's sha256, that the model's
input matches the manifest, and that the golden inputs still give their recorded
outputs on this runtime. A bundle that fails any check is refused whole.

Two analysis modes: "whole-field" (the model sees the resized photo) and "cells" (the
manifest's `cells` object; the model, exported with a dynamic batch, classifies a crop
of every white cell, and `cellmode` scores the slide; golden cases record slide scores).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from leukoscope.analysis.cells import SETTING_RANGES, CellAnalysis, CellSettings, analyse_cells
from leukoscope.analysis.decision import Thresholds, Verdict
from leukoscope.analysis.preprocess import PreprocessParams, preprocess
from leukoscope.core.errors import BundleError, ImageError
from leukoscope.core.fsutil import read_regular_file
from leukoscope.core.imageio import load_image
from leukoscope.model.classifier import TFLiteClassifier

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.tflite"
ANALYSIS_MODES = ("whole-field", "cells")
SUPPORTED_ANALYSIS_MODES = ("whole-field", "cells")
#: Size limits: a manifest is a few kB, the shipped int8 model about 1 MB.
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILE_BYTES = 64 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
#: Manifest keys, each with whether it is required.
_TOP_KEYS = {
    "format_version": True,
    "name": True,
    "version": True,
    "architecture": True,
    "analysis_mode": True,
    "labels": True,
    "positive_label": True,
    "input": True,
    "preprocess": True,
    "thresholds": True,
    "files": True,
    "golden": True,
    "training": True,
    "metrics": True,
    "cells": False,  # required in cells mode, refused in whole-field mode
    "created": False,
    "description": False,
}


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Checker:
    """Small typed reader of a JSON object that names the key path in every error."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, msg: str) -> BundleError:
        return BundleError(f"{self.where}: {path}: {msg}")

    def obj(self, value: Any, path: str, keys: dict[str, bool]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be an object, got {type(value).__name__}")
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise self.fail(path, f"unknown key(s) {', '.join(unknown)}")
        missing = sorted(k for k, req in keys.items() if req and k not in value)
        if missing:
            raise self.fail(path, f"missing key(s) {', '.join(missing)}")
        return value

    def str_(self, value: Any, path: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"must be a non-empty string, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(path, f"bad value {value!r}")
        return value

    def int_(self, value: Any, path: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(path, f"must be an integer in {lo}..{hi}, got {value!r}")
        return value

    def num(self, value: Any, path: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"must be a number, got {value!r}")
        if not lo <= float(value) <= hi:
            raise self.fail(path, f"must be in {lo}..{hi}, got {value!r}")
        return float(value)

    def size(self, value: Any, path: str) -> tuple[int, int]:
        if not isinstance(value, list) or len(value) != 2:
            raise self.fail(path, f"must be [width, height], got {value!r}")
        return (
            self.int_(value[0], f"{path}[0]", 8, 4096),
            self.int_(value[1], f"{path}[1]", 8, 4096),
        )

    def relpath(self, value: Any, path: str) -> str:
        text = self.str_(value, path)
        pure = PurePosixPath(text)
        if pure.is_absolute() or ".." in pure.parts or "\\" in text or text != str(pure):
            raise self.fail(path, f"file path must be relative and inside the bundle, got {text!r}")
        return text


@dataclass(frozen=True)
class GoldenCase:
    """One generated input and the probability of leukemia the model must give for it."""

    file: str
    p_leukemia: float


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest, validated."""

    raw: dict[str, Any]
    name: str
    version: str
    architecture: str
    analysis_mode: str
    labels: tuple[str, ...]
    positive_label: str
    input_size: tuple[int, int]
    preprocess: PreprocessParams
    thresholds: Thresholds
    files: dict[str, str]
    golden: tuple[GoldenCase, ...]
    golden_tolerance: float
    #: The `cells` object (analysis mode "cells"); None in whole-field mode.
    cells: CellSettings | None = None

    @property
    def model_sha256(self) -> str:
        """The sha256 of model.tflite, which every record carries."""
        return self.files[MODEL_FILE]


def parse_manifest(raw: Any, where: str = MANIFEST) -> Manifest:
    """Validate a manifest's JSON object; raise BundleError naming the bad key path."""
    c = _Checker(where)
    top = c.obj(raw, "manifest", _TOP_KEYS)
    version = c.int_(top["format_version"], "format_version", 1, 1_000_000)
    if version != FORMAT_VERSION:
        raise c.fail(
            "format_version", f"{version} is not supported (this reader knows {FORMAT_VERSION})"
        )
    name = c.str_(top["name"], "name", _NAME_RE)
    model_version = c.str_(top["version"], "version", _NAME_RE)
    arch = c.str_(top["architecture"], "architecture")
    mode = c.str_(top["analysis_mode"], "analysis_mode")
    if mode not in ANALYSIS_MODES:
        raise c.fail("analysis_mode", f"must be one of {', '.join(ANALYSIS_MODES)}, got {mode!r}")
    labels_raw = top["labels"]
    if not isinstance(labels_raw, list) or len(labels_raw) < 2:
        raise c.fail("labels", f"must be a list of at least two names, got {labels_raw!r}")
    labels = tuple(c.str_(v, f"labels[{i}]") for i, v in enumerate(labels_raw))
    if len(set(labels)) != len(labels):
        raise c.fail("labels", f"names must be unique, got {list(labels)}")
    positive = c.str_(top["positive_label"], "positive_label")
    if positive not in labels:
        raise c.fail("positive_label", f"{positive!r} is not one of the labels {list(labels)}")
    inp = c.obj(top["input"], "input", {"width": True, "height": True, "channels": True})
    width = c.int_(inp["width"], "input.width", 8, 1024)
    height = c.int_(inp["height"], "input.height", 8, 1024)
    c.int_(inp["channels"], "input.channels", 3, 3)
    pre = c.obj(
        top["preprocess"],
        "preprocess",
        {"resize": True, "median_ksize": True, "sharpen_kernel": True, "normalization": True},
    )
    ksize = c.int_(pre["median_ksize"], "preprocess.median_ksize", 0, 7)
    if ksize > 1 and ksize % 2 == 0:
        raise c.fail("preprocess.median_ksize", f"must be odd (or 0/1 for none), got {ksize}")
    kernel_raw = pre["sharpen_kernel"]
    kernel: tuple[tuple[float, ...], ...] | None = None
    if kernel_raw is not None:
        if not (isinstance(kernel_raw, list) and len(kernel_raw) == 3):
            raise c.fail("preprocess.sharpen_kernel", "must be a 3x3 list of numbers or null")
        rows = []
        for i, row in enumerate(kernel_raw):
            if not (isinstance(row, list) and len(row) == 3):
                raise c.fail(f"preprocess.sharpen_kernel[{i}]", f"must be 3 numbers, got {row!r}")
            rows.append(
                tuple(
                    c.num(v, f"preprocess.sharpen_kernel[{i}][{j}]", -100, 100)
                    for j, v in enumerate(row)
                )
            )
        kernel = tuple(rows)
    norm = c.obj(pre["normalization"], "preprocess.normalization", {"scale": True, "offset": True})
    params = PreprocessParams(
        resize=c.size(pre["resize"], "preprocess.resize"),
        median_ksize=ksize,
        sharpen_kernel=kernel,
        input_size=(width, height),
        scale=c.num(norm["scale"], "preprocess.normalization.scale", 1e-6, 10.0),
        offset=c.num(norm["offset"], "preprocess.normalization.offset", -10.0, 10.0),
    )
    th = c.obj(top["thresholds"], "thresholds", {"low": True, "high": True})
    low = c.num(th["low"], "thresholds.low", 0.0, 1.0)
    high = c.num(th["high"], "thresholds.high", 0.0, 1.0)
    if low > high:
        raise c.fail("thresholds", f"low ({low}) must not exceed high ({high})")
    files_raw = top["files"]
    if not isinstance(files_raw, dict) or MODEL_FILE not in files_raw:
        raise c.fail("files", f"must map file paths to sha256 and include {MODEL_FILE}")
    files = {}
    for key, digest in files_raw.items():
        rel = c.relpath(key, f"files[{key!r}]")
        files[rel] = c.str_(digest, f"files[{key!r}]", _SHA_RE)
    gold = c.obj(top["golden"], "golden", {"tolerance": True, "cases": True})
    tol = c.num(gold["tolerance"], "golden.tolerance", 0.0, 0.5)
    cases_raw = gold["cases"]
    if not isinstance(cases_raw, list) or not cases_raw:
        raise c.fail("golden.cases", "must be a non-empty list")
    cases = []
    for i, case in enumerate(cases_raw):
        cp = f"golden.cases[{i}]"
        obj = c.obj(case, cp, {"file": True, "p_leukemia": True})
        file = c.relpath(obj["file"], f"{cp}.file")
        if file not in files:
            raise c.fail(f"{cp}.file", f"{file!r} is not listed in files (so not hash-checked)")
        cases.append(GoldenCase(file, c.num(obj["p_leukemia"], f"{cp}.p_leukemia", 0.0, 1.0)))
    for key in ("training", "metrics"):
        if not isinstance(top[key], dict):
            raise c.fail(key, "must be an object")
    cells: CellSettings | None = None
    if mode == "cells":
        if "cells" not in top:
            raise c.fail("cells", "missing: a cells bundle needs its cells object")
        cells = _parse_cells(c, top["cells"])
        if params.resize != (width, height):
            raise c.fail(
                "preprocess.resize",
                f"must equal the input size {width}x{height} in cells mode (crops are cut at "
                f"input size), got {params.resize[0]}x{params.resize[1]}",
            )
        if width != height:
            raise c.fail("input", f"cell crops are square: width {width} != height {height}")
    elif "cells" in top:
        raise c.fail("cells", f"only a cells bundle has a cells object (analysis_mode {mode!r})")
    return Manifest(
        raw=top,
        name=name,
        version=model_version,
        architecture=arch,
        analysis_mode=mode,
        labels=labels,
        positive_label=positive,
        input_size=(width, height),
        preprocess=params,
        thresholds=Thresholds(low, high),
        files=files,
        golden=tuple(cases),
        golden_tolerance=tol,
        cells=cells,
    )


assert set(SETTING_RANGES) == {f.name for f in fields(CellSettings)}


def _parse_cells(c: _Checker, raw: Any) -> CellSettings:
    obj = c.obj(raw, "cells", dict.fromkeys(SETTING_RANGES, True))
    values: dict[str, Any] = {}
    for f in fields(CellSettings):
        lo, hi = SETTING_RANGES[f.name]
        path = f"cells.{f.name}"
        if f.type in (int, "int"):
            values[f.name] = c.int_(obj[f.name], path, int(lo), int(hi))
        else:
            values[f.name] = c.num(obj[f.name], path, lo, hi)
    try:
        return CellSettings(**values)
    except ValueError as exc:
        raise c.fail("cells", str(exc)) from None


def read_manifest(root: Path) -> Manifest:
    """Read and validate `root/manifest.json` (no file hashes checked)."""
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory")
    try:
        text = read_regular_file(path, MAX_MANIFEST_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise BundleError(f"{root}: missing file {MANIFEST}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot read ({exc})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"{path}: bad JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    return parse_manifest(raw, str(path))


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
