"""ALL-IDB1's cell annotations: reading the centroid files, and matching cells to them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: A detection matches an annotated blast when its centre is this close (um): about a
#: blast nucleus's radius, so a hit lies on the annotated cell's nucleus.
MATCH_UM = 6.0


def read_xyc(path: Path) -> np.ndarray:
    """Blast centroids from an .xyc file (K x 2; empty for healthy slides)."""
    values = [float(v) for v in path.read_text().split()]
    if len(values) % 2:
        raise ValueError(f"{path}: odd number of coordinates")
    return np.asarray(values, np.float64).reshape(-1, 2)


def match(
    truth: np.ndarray, found: np.ndarray, max_dist: float
) -> tuple[int, list[int], np.ndarray]:
    """Greedy one-to-one matching by distance: (matches, unmatched truth rows, used mask)."""
    used = np.zeros(len(found), bool)
    if len(truth) == 0 or len(found) == 0:
        return 0, list(range(len(truth))), used
    d = np.linalg.norm(truth[:, None, :] - found[None, :, :], axis=2)
    pairs = sorted((d[i, j], i, j) for i in range(len(truth)) for j in range(len(found)))
    matched_truth: set[int] = set()
    for dist, i, j in pairs:
        if dist > max_dist:
            break
        if i in matched_truth or used[j]:
            continue
        matched_truth.add(i)
        used[j] = True
    return len(matched_truth), [i for i in range(len(truth)) if i not in matched_truth], used
