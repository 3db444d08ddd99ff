"""Bundle manifests: manifest.json's schema, read and validated, and the sha256 helpers.

A manifest names the model, its labels, input size, preprocessing, decision thresholds,
analysis mode (and, in cells mode, the `cells` settings and optionally the `sample`
rule), every file with its sha256, and the golden cases. `parse_manifest` refuses an
unknown or bad key by its path. `sample_spec` resolves the rule a rig counts samples by.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from leukoscope.analysis.cells import OPTIONAL_SETTINGS, SETTING_RANGES, CellSettings
from leukoscope.analysis.decision import Thresholds
from leukoscope.analysis.differential import PERFECT, ErrorRates, SampleRule
from leukoscope.analysis.preprocess import PreprocessParams
from leukoscope.config import SampleConfig
from leukoscope.core.errors import BundleError, ConfigError
from leukoscope.core.fsutil import read_regular_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.tflite"
#: The analysis modes the format knows.
ANALYSIS_MODES = ("whole-field", "cells")
#: A manifest is a few kB.
MAX_MANIFEST_BYTES = 1 << 20
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
    "sample": False,  # cells mode only: the sample rule and the cell classifier's rates
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


#: The `sample` object's keys (all required when it is there).
_SAMPLE_KEYS = {
    "threshold": True,
    "min_cells": True,
    "max_cells": True,
    "max_fields": True,
    "sensitivity": True,
    "specificity": True,
    "measured_on": True,
}


@dataclass(frozen=True)
class SampleSpec:
    """How samples are counted: the rule, and the cell classifier's rates to correct by."""

    rule: SampleRule
    rates: ErrorRates
    #: Where the rates were measured (e.g. "validation cells, 1,204 cells of 31 slides");
    #: None when there are none and the count is taken at the classifier's word.
    measured_on: str | None

    @property
    def corrected(self) -> bool:
        """The count is corrected for the classifier's error rates."""
        return self.measured_on is not None


#: Said (logged at load, printed by `sample analyse`) when a bundle has no `sample` object.
NO_SAMPLE_RULE = (
    "has no sample rule: samples use the default rule (threshold 5%, 100-400 white cells, "
    "at most 60 fields) and the blast count is not corrected for the classifier's errors"
)


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
    #: The `sample` object (cells mode, optional); see `sample_spec` for the rule in use.
    sample: SampleSpec | None = None

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
    sample: SampleSpec | None = None
    if "sample" in top:
        if mode != "cells":
            raise c.fail("sample", f"only a cells bundle counts samples (analysis_mode {mode!r})")
        sample = _parse_sample(c, top["sample"])
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
        sample=sample,
    )


def _parse_sample(c: _Checker, raw: Any) -> SampleSpec:
    obj = c.obj(raw, "sample", _SAMPLE_KEYS)
    threshold = c.num(obj["threshold"], "sample.threshold", 0.0, 1.0)
    if not 0.0 < threshold < 1.0:
        raise c.fail("sample.threshold", f"must lie strictly between 0 and 1, got {threshold}")
    min_cells = c.int_(obj["min_cells"], "sample.min_cells", 1, 100_000)
    max_cells = c.int_(obj["max_cells"], "sample.max_cells", 1, 100_000)
    if min_cells > max_cells:
        raise c.fail("sample.min_cells", f"{min_cells} exceeds sample.max_cells ({max_cells})")
    max_fields = c.int_(obj["max_fields"], "sample.max_fields", 1, 10_000)
    sens = c.num(obj["sensitivity"], "sample.sensitivity", 0.0, 1.0)
    spec = c.num(obj["specificity"], "sample.specificity", 0.0, 1.0)
    if sens + spec <= 1.0:
        raise c.fail(
            "sample.sensitivity",
            f"sensitivity + specificity must exceed 1 (better than chance), got {sens} + {spec}",
        )
    return SampleSpec(
        SampleRule(threshold, min_cells, max_cells, max_fields),
        ErrorRates(sens, spec),
        c.str_(obj["measured_on"], "sample.measured_on"),
    )


def sample_spec(manifest: Manifest, overrides: SampleConfig | None = None) -> SampleSpec:
    """The rule a rig counts samples by: the bundle's, each value `[sample]` sets overriding.

    A bundle without a `sample` object gets `SampleRule()`'s defaults and no correction
    (the classifier taken at its word). Raises ConfigError when the overrides and the
    bundle's values together make no rule (min_cells above max_cells).
    """
    base = manifest.sample or SampleSpec(SampleRule(), PERFECT, None)
    o = overrides or SampleConfig()
    try:
        rule = SampleRule(
            threshold=base.rule.threshold if o.threshold is None else o.threshold,
            min_cells=base.rule.min_cells if o.min_cells is None else o.min_cells,
            max_cells=base.rule.max_cells if o.max_cells is None else o.max_cells,
            max_fields=base.rule.max_fields if o.max_fields is None else o.max_fields,
        )
    except ValueError as exc:
        raise ConfigError(
            f"[sample] with the bundle {manifest.name} {manifest.version}'s rule: {exc}"
        ) from None
    return SampleSpec(rule, base.rates, base.measured_on)


assert set(SETTING_RANGES) == {f.name for f in fields(CellSettings)}


def _parse_cells(c: _Checker, raw: Any) -> CellSettings:
    obj = c.obj(raw, "cells", {k: k not in OPTIONAL_SETTINGS for k in SETTING_RANGES})
    values: dict[str, Any] = {}
    for f in fields(CellSettings):
        lo, hi = SETTING_RANGES[f.name]
        path = f"cells.{f.name}"
        if f.name not in obj:
            values[f.name] = OPTIONAL_SETTINGS[f.name]
        elif f.type in (int, "int"):
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
    except RecursionError:  # a manifest is a few levels deep; thousands are an attack
        raise BundleError(f"{path}: bad JSON: nested too deeply") from None
    return parse_manifest(raw, str(path))
