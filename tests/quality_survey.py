"""Survey the quality gate on real smears and degraded copies of them (how defaults were chosen).

Run: `.venv/bin/python -m tests.quality_survey [DATA_DIR] [--every N]`. Prints, for each
metric, the range over the real images and over each kind of degraded copy, and every
real image the default thresholds would refuse. tests/test_quality.py runs it as a test.

`--noise` instead judges focus under sensor noise (models/reports/focus-noise.md): every
ALL-IDB1 field, sharp and blurred by 0.25 um (3 px of a 5 MP still), with Gaussian noise
of 0, 2, 4 and 7 levels, each also as JPEG 80: `sharpness` at the field's scale, and the
live view's `preview_focus` and plain `focus` of the same field shrunk to 320x240 (blurred
there by 1% of its long side).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from leukoscope.analysis.detection import estimate_scale
from leukoscope.analysis.quality import (
    QualityMetrics,
    QualityThresholds,
    RetakeReason,
    measure,
    preview_focus,
    sharpness,
)
from leukoscope.core.imageio import load_image

#: What each degraded copy must be refused for (any one of the listed reasons).
EXPECTED: dict[str, set[RetakeReason]] = {
    "blurred": {RetakeReason.OUT_OF_FOCUS},
    "overexposed": {RetakeReason.TOO_BRIGHT},
    "underexposed": {RetakeReason.TOO_DARK},
    "grey": {RetakeReason.NO_STAINED_CELLS},
    # A blank copy of a near-white kaggle-all photo (glass at about 250) is overexposed
    # first: the gate then gives the exposure reason, not "empty field" (issue 14).
    "blank": {RetakeReason.EMPTY_FIELD, RetakeReason.TOO_BRIGHT},
    "black": {RetakeReason.TOO_DARK},
    "white": {RetakeReason.TOO_BRIGHT},
}


def degraded(rgb: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Bad versions of a good photo, as a careless capture would make them.

    Blur is a Gaussian with sigma = 1% of the long side (a clearly defocused field at
    any resolution); over-exposure is the gain that puts the median luma at 1.6x full
    scale (background and red cells blown out), under-exposure the gain that puts it at
    45; "blank" is the photo's own background colour with sensor noise (nothing in view).
    """
    f = rgb.astype(np.float32)
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    sigma = 0.01 * max(h, w)
    bg = np.median(rgb.reshape(-1, 3), axis=0).astype(np.float32)
    median_luma = max(float(np.median(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))), 1.0)
    blank = np.clip(bg + rng.normal(0, 2.0, rgb.shape), 0, 255).astype(np.uint8)
    grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return {
        "blurred": cv2.GaussianBlur(rgb, (0, 0), sigma),
        "overexposed": np.clip(f * (1.6 * 255 / median_luma), 0, 255).astype(np.uint8),
        "underexposed": np.clip(f * (45 / median_luma), 0, 255).astype(np.uint8),
        "grey": grey,
        "blank": blank,
        "black": np.clip(rng.normal(2, 1.5, rgb.shape), 0, 255).astype(np.uint8),
        "white": np.full_like(rgb, 255),
    }


def image_paths(data: Path) -> Iterator[tuple[Path, str]]:
    """Every image in the data manifest with its dataset name."""
    with (data / "manifest.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row["label"] != "annotation":
                yield data / row["path"], row["dataset"]


def survey(data: Path, every: int = 1) -> dict[str, list[tuple[str, QualityMetrics]]]:
    """Metrics of every real image (and of degraded copies of every `every`-th one)."""
    out: dict[str, list[tuple[str, QualityMetrics]]] = {"real": []}
    for i, (path, _dataset) in enumerate(image_paths(data)):
        rgb = load_image(path)
        out["real"].append((str(path), measure(rgb)))
        if i % every == 0:
            for kind, bad in degraded(rgb, seed=i).items():
                out.setdefault(kind, []).append((str(path), measure(bad)))
    return out


def report(results: dict[str, list[tuple[str, QualityMetrics]]], th: QualityThresholds) -> str:
    """A text table of metric ranges per kind, and the misjudged images."""
    lines = []
    names = list(asdict(results["real"][0][1]))
    for kind, rows in results.items():
        lines.append(f"{kind} ({len(rows)} images)")
        for name in names:
            # Measures taken only when the scale is known (sharpness) are None elsewhere.
            vals = np.array([v for _, m in rows if (v := getattr(m, name)) is not None], float)
            if vals.size == 0:
                lines.append(f"  {name:13s} not measured (no scale)")
                continue
            p1, p99 = np.percentile(vals, [1, 99])
            lines.append(
                f"  {name:13s} min {vals.min():9.4f}  p1 {p1:9.4f}  "
                f"p99 {p99:9.4f}  max {vals.max():9.4f}"
            )
    for path, m in results["real"]:
        reasons = th.check(m)
        if reasons:
            lines.append(f"REFUSED real {path}: {[r.value for r in reasons]} {m}")
    for kind, want in EXPECTED.items():
        for path, m in results.get(kind, []):
            if not want & set(th.check(m)):
                lines.append(f"PASSED {kind} {path}: {[r.value for r in th.check(m)]} {m}")
    return "\n".join(lines)


#: Sensor noise levels (standard deviation, 8-bit levels) of `noise_survey`.
NOISE_LEVELS = (0, 2, 4, 7)


def with_noise(rgb: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """`rgb` with Gaussian noise of `level` levels in each channel of each pixel."""
    if level == 0:
        return rgb
    out = rgb + rng.normal(0.0, level, rgb.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def as_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """`rgb` saved as a JPEG of `quality` and decoded again."""
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def noise_survey(data: Path) -> str:
    """Focus measures of sharp and blurred ALL-IDB1 fields with noise (see the module)."""
    th = QualityThresholds()
    rows: dict[tuple[str, int, str], list[tuple[float, float, float]]] = {}
    for i, path in enumerate(sorted((data / "all-idb1").glob("*/*.jpg"))):
        rgb = load_image(path)
        scale = estimate_scale(rgb).px_per_um  # the sharp field's: blur moves the ruler
        for kind in ("sharp", "blurred"):
            still = rgb if kind == "sharp" else cv2.GaussianBlur(rgb, (0, 0), 0.25 * scale)
            view = cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_AREA)
            view = view if kind == "sharp" else cv2.GaussianBlur(view, (0, 0), 3.2)
            rng = np.random.default_rng(i)
            for level in NOISE_LEVELS:
                noisy, frame = with_noise(still, level, rng), with_noise(view, level, rng)
                for jpeg in ("-", "80"):
                    if jpeg != "-":
                        noisy, frame = as_jpeg(noisy, 80), as_jpeg(frame, 80)
                    rows.setdefault((kind, level, jpeg), []).append(
                        (sharpness(noisy, scale), preview_focus(frame), measure(frame).focus)
                    )
    lines = [
        f"| field | noise | JPEG | sharpness (passes >= {th.min_sharpness}) "
        f"| live view (>= {th.min_focus}) | plain focus of the view |",
        "|---|---|---|---|---|---|",
    ]
    for (kind, level, jpeg), vals in sorted(rows.items(), key=lambda kv: kv[0]):
        cells = []
        limits = (th.min_sharpness, th.min_focus, th.min_focus)
        for col, limit in zip(np.array(vals).T, limits, strict=True):
            passed = int(np.count_nonzero(col >= limit))
            cells.append(f"{col.min():.3f}-{col.max():.3f} ({passed}/{col.size})")
        lines.append(f"| {kind} | {level} | {jpeg} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    """Command line entry: print the survey."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", nargs="?", type=Path, default=Path("../shared/data"))
    parser.add_argument("--every", type=int, default=1, help="degrade every Nth image")
    parser.add_argument("--noise", action="store_true", help="focus under sensor noise")
    args = parser.parse_args()
    if args.noise:
        print(noise_survey(args.data))
        return 0
    print(report(survey(args.data, args.every), QualityThresholds()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
