"""Survey the quality gate on real smears and degraded copies of them (how defaults were chosen).

Run: `.venv/bin/python -m tests.quality_survey [DATA_DIR] [--every N]`. Prints, for each
metric, the range over the real images and over each kind of degraded copy, and every
real image the default thresholds would refuse. tests/test_quality.py runs it as a test.
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

from leukoscope.analysis.quality import QualityMetrics, QualityThresholds, RetakeReason, measure
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


def main() -> int:
    """Command line entry: print the survey."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", nargs="?", type=Path, default=Path("../shared/data"))
    parser.add_argument("--every", type=int, default=1, help="degrade every Nth image")
    args = parser.parse_args()
    print(report(survey(args.data, args.every), QualityThresholds()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
