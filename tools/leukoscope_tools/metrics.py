"""Binary classification metrics with confidence intervals, the validation-chosen band, and
how reports print them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from leukoscope.analysis.decision import Thresholds


def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half); None when only one class is present."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), np.float64)
    sorted_p = np.asarray(p)[order]
    # Average ranks over ties.
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates over every threshold (for plotting)."""
    y = np.asarray(y).astype(bool)
    cuts = np.r_[np.inf, np.unique(p)[::-1]]
    tpr = np.array([(p[y] >= c).mean() if y.any() else 0.0 for c in cuts])
    fpr = np.array([(p[~y] >= c).mean() if (~y).any() else 0.0 for c in cuts])
    return fpr, tpr


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion k/n; None when n is 0."""
    if n == 0:
        return None
    phat = k / n
    den = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / den
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / den
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def auc_ci(
    y: np.ndarray, p: np.ndarray, n_boot: int = 500, seed: int = 0
) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of the ROC AUC (resampling images)."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        a = roc_auc(y[idx], p[idx])
        if a is not None:
            vals.append(a)
    if len(vals) < n_boot // 2:
        return None
    return (round(float(np.percentile(vals, 2.5)), 4), round(float(np.percentile(vals, 97.5)), 4))


def paired_auc_diff(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """AUC(a) - AUC(b) on the same photos, with a 95% paired bootstrap interval."""
    base_a, base_b = roc_auc(y, a), roc_auc(y, b)
    if base_a is None or base_b is None:
        return {"diff": None, "ci": None}
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        da, db = roc_auc(y[idx], a[idx]), roc_auc(y[idx], b[idx])
        if da is not None and db is not None:
            diffs.append(da - db)
    ci = (
        [round(float(np.percentile(diffs, 2.5)), 4), round(float(np.percentile(diffs, 97.5)), 4)]
        if len(diffs) >= n_boot // 2
        else None
    )
    return {"diff": round(base_a - base_b, 4), "ci": ci}


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


def binary_metrics(
    y: np.ndarray, p: np.ndarray, cut: float, band: Thresholds | None = None
) -> dict[str, Any]:
    """The paper's tables at one cut, with 95% intervals, plus the band's outcome if given."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, np.float64)
    pred = (p >= cut).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    n = len(y)
    out: dict[str, Any] = {
        "n": n,
        "n_leukemia": int(y.sum()),
        "n_normal": int(n - y.sum()),
        "cut": round(cut, 6),
        "accuracy": _r((tp + tn) / n) if n else None,
        "accuracy_ci": wilson(tp + tn, n),
        "sensitivity": _r(tp / (tp + fn)) if tp + fn else None,
        "sensitivity_ci": wilson(tp, tp + fn),
        "specificity": _r(tn / (tn + fp)) if tn + fp else None,
        "specificity_ci": wilson(tn, tn + fp),
        "roc_auc": _r(roc_auc(y, p)),
        "roc_auc_ci": auc_ci(y, p),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "per_class": {},
    }
    for name, cls, tp_, fp_, fn_ in (("normal", 0, tn, fn, fp), ("leukemia", 1, tp, fp, fn)):
        prec = tp_ / (tp_ + fp_) if tp_ + fp_ else None
        rec = tp_ / (tp_ + fn_) if tp_ + fn_ else None
        f1 = 2 * prec * rec / (prec + rec) if prec and rec else (0.0 if prec == 0 else None)
        out["per_class"][name] = {
            "precision": _r(prec),
            "recall": _r(rec),
            "f1": _r(f1),
            "support": int((y == cls).sum()),
        }
    if band is not None:
        pos = p >= band.high
        neg = p < band.low
        decided = pos | neg
        out["band"] = {
            "indeterminate_rate": _r(1 - decided.mean()) if n else None,
            "sensitivity_decided": _r((pos & (y == 1)).sum() / (decided & (y == 1)).sum())
            if (decided & (y == 1)).any()
            else None,
            "specificity_decided": _r((neg & (y == 0)).sum() / (decided & (y == 0)).sum())
            if (decided & (y == 0)).any()
            else None,
            "missed_leukemia": int((neg & (y == 1)).sum()),
        }
    return out


def choose_cut(y: np.ndarray, p: np.ndarray) -> float:
    """The cut maximising Youden's J (sensitivity + specificity - 1) on these data."""
    y = np.asarray(y).astype(bool)
    if y.all() or (~y).all():
        return 0.5
    best, best_j = 0.5, -1.0
    for c in np.unique(p):
        j = (p[y] >= c).mean() + (p[~y] < c).mean() - 1
        if j > best_j:
            best, best_j = float(c), float(j)
    return best


def choose_band(y: np.ndarray, p: np.ndarray, target: float = 0.95) -> tuple[float, Thresholds]:
    """Cut and indeterminate band from validation data only.

    `low` is the highest threshold that keeps `target` of validation leukemia images at or
    above it; `high` the lowest that keeps `target` of normal images below it. Between
    them the device says indeterminate. The band always contains the Youden cut.
    """
    y = np.asarray(y).astype(bool)
    cut = choose_cut(y, p)
    low = float(np.quantile(p[y], 1 - target, method="lower")) if y.any() else cut
    high = float(np.quantile(p[~y], target, method="higher")) if (~y).any() else cut
    high = float(np.nextafter(high, 1.0)) if high < 1.0 else high
    low, high = min(low, cut), max(high, cut)
    return cut, Thresholds(round(max(0.0, low), 6), round(min(1.0, high), 6))


def fmt(v: Any) -> str:
    """A metric for a table: 0.1234 -> 0.123, None -> n/a."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def fmt_ci(m: dict[str, Any], key: str) -> str:
    """`value [lo, hi]` with the 95% interval, or n/a."""
    ci = m.get(f"{key}_ci")
    if m.get(key) is None:
        return "n/a"
    return f"{m[key]:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{m[key]:.3f}"
