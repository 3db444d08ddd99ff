"""Find where each ALL-IDB2 crop was cut from: its ALL-IDB1 slide and centre (by template matching).

ALL-IDB2's 257x257 crops are cut from ALL-IDB1 slides, so a split that ignores their
source leaks. This writes one row per crop (no pixels): crop, label, slide, x, y, score.
Matching runs at 1/8 scale over every slide, then at full scale near the best hit.

    leukoscope-tools cells idb2-sources ../shared/data \
        --out models/reports/all-idb2-sources.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np

from leukoscope.core.imageio import load_image

COARSE = 8  # matching scale divisor for the search over every slide


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, :, 1]).astype(np.float32)


def locate(data: Path) -> list[dict[str, str | float]]:
    """Each ALL-IDB2 crop's best slide, its centre there (full-scale pixels) and score."""
    slides = {}
    for path in sorted((data / "all-idb1").glob("*/*.jpg")):
        g = _grey(load_image(path))
        small = cv2.resize(g, None, fx=1 / COARSE, fy=1 / COARSE, interpolation=cv2.INTER_AREA)
        slides[path.stem] = (g, small)
    rows: list[dict[str, str | float]] = []
    for crop_path in sorted((data / "all-idb2").glob("*/*")):
        t = _grey(load_image(crop_path))
        ts = cv2.resize(t, None, fx=1 / COARSE, fy=1 / COARSE, interpolation=cv2.INTER_AREA)
        best = ("", -1.0, (0, 0))
        for name, (_, small) in slides.items():
            if small.shape[0] < ts.shape[0] or small.shape[1] < ts.shape[1]:
                continue
            r = cv2.matchTemplate(small, ts, cv2.TM_CCOEFF_NORMED)
            _, score, _, loc = cv2.minMaxLoc(r)
            if score > best[1]:
                best = (name, float(score), (int(loc[0]), int(loc[1])))
        name, _, (cx, cy) = best
        full = slides[name][0]
        # Refine at full scale in a window around the coarse hit.
        x0 = max(0, cx * COARSE - 2 * COARSE)
        y0 = max(0, cy * COARSE - 2 * COARSE)
        x1 = min(full.shape[1], cx * COARSE + t.shape[1] + 2 * COARSE)
        y1 = min(full.shape[0], cy * COARSE + t.shape[0] + 2 * COARSE)
        window = full[y0:y1, x0:x1]
        if window.shape[0] < t.shape[0] or window.shape[1] < t.shape[1]:
            score, fx, fy = best[1], cx * COARSE, cy * COARSE
        else:
            r = cv2.matchTemplate(window, t, cv2.TM_CCOEFF_NORMED)
            _, score, _, (lx, ly) = cv2.minMaxLoc(r)
            fx, fy = x0 + lx, y0 + ly
        rows.append(
            {
                "crop": crop_path.name,
                "label": crop_path.parent.name,
                "slide": name,
                "x": fx + t.shape[1] / 2,
                "y": fy + t.shape[0] / 2,
                "score": round(float(score), 4),
            }
        )
    return rows


def read_idb2_sources(path: Path) -> list[dict[str, str]]:
    """The rows `locate` wrote: crop, label, slide, x, y, score."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """`leukoscope-tools cells idb2-sources`'s arguments."""
    ap.add_argument("data", type=Path)
    ap.add_argument("--out", type=Path, required=True)


def run_command(args: argparse.Namespace) -> int:
    """Locate every crop and write the CSV."""
    rows = locate(args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["crop", "label", "slide", "x", "y", "score"])
        w.writeheader()
        w.writerows(rows)
    scores = np.array([float(r["score"]) for r in rows])
    print(f"{len(rows)} crops; score median {np.median(scores):.3f}, min {scores.min():.3f}")
    return 0
