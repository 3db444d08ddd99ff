"""The slide decision of cell mode: per-photo features and the logistic slide model.

Features come from `leukoscope.analysis.cells.slide_features` (the device's code) over the
blast probabilities of a photo's detected cells; the score is `slide_score`.
The logistic weights (bias, w_top_k, w_density, w_fraction) are fitted on VALIDATION
photos only, each (source, label) given the same total weight so kaggle-all's
thousand-odd photos do not swamp ALL-IDB1's fifteen. The cell cut (which cells count as
blasts for the blast fraction) is chosen on the same validation photos from `CELL_CUTS`
and the deciles of their cells' probabilities: the one whose fitted slide score has the
best mean per-source AUC. A photo with fewer than
`min_cells` white cells is a retake on the device: it is left out of the fit and counted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from leukoscope.analysis.cells import CellSettings, SlideFeatures, slide_features, slide_score
from leukoscope_tools.data.cells import CellSet, PhotoRow, y_of
from leukoscope_tools.metrics import roc_auc

#: The cell cuts tried on validation photos (a cell at p >= cut counts as a blast).
CELL_CUTS = (0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9)


def photo_features(
    cs: CellSet, p_blast: np.ndarray, photos: Sequence[PhotoRow], settings: CellSettings
) -> list[SlideFeatures]:
    """Slide features of each photo from its detected cells' probabilities."""
    out = []
    for ph in photos:
        p = p_blast[ph.first : ph.first + ph.count]
        if np.isnan(p).any():
            raise ValueError(f"{ph.path}: cells without a probability")
        out.append(slide_features(p, ph.area_um2, settings))
    return out


def design(features: Sequence[SlideFeatures]) -> np.ndarray:
    """The logistic model's inputs, as `slide_score` combines them (n x 3)."""
    return np.array(
        [[f.top_k_mean, math.log1p(f.density), f.blast_fraction] for f in features], np.float64
    ).reshape(-1, 3)


def balanced_weights(sources: Sequence[str], labels: Sequence[int]) -> np.ndarray:
    """Equal total weight for every (source, label) present; mean 1."""
    keys = list(zip(sources, labels, strict=True))
    counts = Counter(keys)
    w = np.array([1.0 / counts[k] for k in keys], np.float64)
    return w / w.mean() if len(w) else w


def fit_logistic(
    x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, l2: float = 1e-4, iters: int = 100
) -> np.ndarray:
    """Weighted logistic regression by Newton's method: [bias, w_1, ..., w_d].

    A small ridge penalty (not on the bias) keeps the weights finite when the classes
    separate perfectly, as they do on ALL-IDB1's few validation slides.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    w = np.ones(len(y)) if w is None else np.asarray(w, np.float64)
    a = np.hstack([np.ones((len(x), 1)), x])
    beta = np.zeros(a.shape[1])
    ridge = np.full(a.shape[1], l2 * w.sum())
    ridge[0] = 0.0
    for _ in range(iters):
        z = np.clip(a @ beta, -30, 30)
        p = 1.0 / (1.0 + np.exp(-z))
        grad = a.T @ (w * (p - y)) + ridge * beta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(ridge) + 1e-9 * np.eye(a.shape[1])
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta


def fit_slide_model(
    features: Sequence[SlideFeatures],
    labels: Sequence[int],
    sources: Sequence[str],
    settings: CellSettings,
) -> CellSettings:
    """`settings` with the logistic weights fitted on these (validation) photos.

    Retakes (fewer than `min_cells` cells) are left out; the weights are clipped to the
    range `CellSettings` accepts.
    """
    keep = [i for i, f in enumerate(features) if f.n_cells >= settings.min_cells]
    if len({labels[i] for i in keep}) < 2:
        raise ValueError("the slide model needs both labels among the fitted photos")
    x = design([features[i] for i in keep])
    y = np.array([labels[i] for i in keep])
    w = balanced_weights([sources[i] for i in keep], [labels[i] for i in keep])
    b = np.clip(fit_logistic(x, y, w), -999.0, 999.0)
    return replace(
        settings,
        bias=round(float(b[0]), 6),
        w_top_k=round(float(b[1]), 6),
        w_density=round(float(b[2]), 6),
        w_fraction=round(float(b[3]), 6),
    )


def scores(features: Sequence[SlideFeatures], settings: CellSettings) -> np.ndarray:
    """The device's slide score of each photo (nan for a retake)."""
    return np.array(
        [slide_score(f, settings) if f.n_cells >= settings.min_cells else np.nan for f in features],
        np.float64,
    )


def density_scores(features: Sequence[SlideFeatures], settings: CellSettings) -> np.ndarray:
    """The count baseline's score: d / (1 + d) of the white cells per 10,000 um^2, d.

    Monotone in the density (so its ROC is the density's), in 0..1 like every score the
    band applies to; nan for a retake.
    """
    return np.array(
        [
            f.density / (1.0 + f.density) if f.n_cells >= settings.min_cells else np.nan
            for f in features
        ],
        np.float64,
    )


def source_mean_auc(y: np.ndarray, score: np.ndarray, sources: Sequence[str]) -> float:
    """Mean over sources (with both labels) of the ROC AUC; nan scores left out."""
    src = np.asarray(sources)
    ok = ~np.isnan(score)
    aucs = [roc_auc(y[ok & (src == s)], score[ok & (src == s)]) for s in sorted(set(src))]
    found = [a for a in aucs if a is not None]
    return float(np.mean(found)) if found else float("nan")


def choose_slide_model(
    cs: CellSet,
    p_blast: np.ndarray,
    val: Sequence[PhotoRow],
    base: CellSettings,
    cuts: Sequence[float] | None = None,
) -> tuple[CellSettings, dict[str, float]]:
    """The cell cut and logistic weights, both from validation photos only.

    `cuts`: the cell cuts to try (default: `CELL_CUTS` and the probabilities' deciles; a
    cut chosen on validation cells is passed alone). Returns the settings and each tried
    cut's criterion (mean per-source AUC); ties go to the cut nearest 0.5.
    """
    y = y_of(val)
    sources = [ph.source for ph in val]
    # The fixed grid, plus the deciles of these cells' probabilities: a model whose
    # probabilities crowd around one value gets cuts where they are.
    p = np.concatenate([p_blast[ph.first : ph.first + ph.count] for ph in val])
    deciles = np.round(np.quantile(p, np.linspace(0.1, 0.9, 9)), 3) if p.size else []
    cuts = sorted({*CELL_CUTS, *(float(d) for d in deciles)}) if cuts is None else list(cuts)
    best: tuple[float, float, CellSettings] | None = None
    tried: dict[str, float] = {}
    for cut in cuts:
        trial = replace(base, cell_cut=float(cut))
        fv = photo_features(cs, p_blast, val, trial)
        fitted = fit_slide_model(fv, y.tolist(), sources, trial)
        crit = source_mean_auc(y, scores(fv, fitted), sources)
        tried[f"{cut:g}"] = round(crit, 4)
        key = (crit if math.isfinite(crit) else -1.0, -abs(cut - 0.5))
        if best is None or key > best[:2]:
            best = (key[0], key[1], fitted)
    if best is None:
        raise ValueError("no cell cut to try")
    return best[2], tried
