"""Small PNG figures for reports: training curves, confusion matrix, ROC curves."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from leukoscope_tools.metrics import roc_auc, roc_curve

logger = logging.getLogger(__name__)

#: Figures are committed beside the bundle: keep them a few tens of kilobytes.
DPI = 80


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def training_curves(histories: Mapping[str, Mapping[str, list[float]]]) -> bytes:
    """Training loss, validation loss and validation AUC per epoch, one line per run."""
    # A bare Figure (no pyplot): no global figure list, no GUI backend, nothing to close.
    fig = Figure(figsize=(8, 3))
    axes = fig.subplots(1, 2)
    for name, h in histories.items():
        epochs = np.arange(1, len(h["loss"]) + 1)
        line = axes[0].plot(epochs, h["loss"], label=f"{name} train")[0]
        axes[0].plot(epochs, h["val_loss"], "--", color=line.get_color(), label=f"{name} val")
        axes[1].plot(epochs, h["val_auc"], color=line.get_color(), label=name)
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss (dashed: validation)")
    axes[1].set(xlabel="epoch", ylabel="ROC AUC", title="validation AUC", ylim=(0, 1))
    axes[1].legend(fontsize=6)
    return _png(fig)


def confusion(cm: Mapping[str, int], title: str) -> bytes:
    """A 2x2 confusion matrix with counts."""
    m = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
    fig = Figure(figsize=(3.2, 2.8))
    ax = fig.subplots()
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(
            j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black"
        )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["normal", "leukemia"],
        yticklabels=["normal", "leukemia"],
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    ax.title.set_fontsize(8)
    return _png(fig)


def roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str) -> bytes:
    """ROC curves of several (labels, probabilities) sets on one plot."""
    fig = Figure(figsize=(3.8, 3.4))
    ax = fig.subplots()
    for name, (y, p) in curves.items():
        if len(set(np.asarray(y).tolist())) < 2:
            continue
        fpr, tpr = roc_curve(np.asarray(y), np.asarray(p))
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y, p):.2f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.title.set_fontsize(8)
    ax.legend(fontsize=6, loc="lower right")
    return _png(fig)


def bars(values: Mapping[str, tuple[float, float]], title: str, ylabel: str) -> bytes:
    """Bars of mean with an error bar of spread (e.g. over seeds)."""
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    names = list(values)
    ax.bar(names, [values[n][0] for n in names], yerr=[values[n][1] for n in names], capsize=3)
    ax.set(ylabel=ylabel, title=title, ylim=(0, 1))
    ax.tick_params(axis="x", labelsize=6, rotation=20)
    ax.title.set_fontsize(8)
    return _png(fig)
