"""A quick experiment: the modified-Thanh CNN on detected white-cell crops, ALL-IDB1 only.

Crops come from `leukoscope.analysis.detection` on every ALL-IDB1 slide (24 um square, 128x128,
white-balanced by the slide's glass colour). A crop is a blast when its detection matched
an annotated blast centroid, normal when it lies on a healthy slide; unmatched detections
on leukemia slides (other white cells, unannotated, or false) are left out. Training uses
the detector's tuning slides, testing its held-out slides (the same group split), so no
field is on both sides. Not a shipped model: numbers for the comparison in the report.

    leukoscope-tools cells experiment ../shared/data --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from leukoscope.analysis.detection import crop_cells, detect_white_cells
from leukoscope.core.imageio import load_image
from leukoscope_tools.data.annotations import MATCH_UM, match
from leukoscope_tools.evaluate.detection import DEFAULT_SPLIT, group_of, list_slides, read_split
from leukoscope_tools.metrics import roc_auc
from leukoscope_tools.train.cells import symmetries
from leukoscope_tools.train.loop import new_model

logger = logging.getLogger(__name__)

CROP_UM = 24.0
CROP_PX = 128


def build_crops(data: Path, cache: Path, split_file: Path) -> dict[str, np.ndarray]:
    """Crops, labels (1 blast, 0 normal) and slide names, cached as one .npz.

    `split_file` is the detector's tune/held-out split (`leukoscope-tools cells eval`).
    """
    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    split = read_split(split_file)
    xs, ys, names, sides, sizes, counts = [], [], [], [], [], {}
    for slide in list_slides(data):
        rgb = load_image(slide.path)
        det = detect_white_cells(rgb)
        centres = np.array([(c.x, c.y) for c in det.cells]).reshape(-1, 2)
        _, _, used = match(slide.blasts, centres, MATCH_UM * det.scale.px_per_um)
        counts[slide.name] = len(det.cells)
        keep = [i for i in range(len(det.cells)) if slide.label == "normal" or used[i]]
        if not keep:
            continue
        crops = crop_cells(
            rgb,
            [det.cells[i] for i in keep],
            det.scale.px_per_um,
            size_um=CROP_UM,
            out_px=CROP_PX,
            background=det.background_rgb,
        )
        # White balance: the glass becomes the same light grey on every slide.
        gain = 235.0 / np.asarray(det.background_rgb, np.float32)
        crops = np.clip(crops * gain, 0, 255).astype(np.uint8)
        xs.append(crops)
        ys += [1 if slide.label == "all" else 0] * len(keep)
        names += [slide.name] * len(keep)
        sides += [split[slide.name]] * len(keep)
        sizes += [f"{rgb.shape[1]}x{rgb.shape[0]}"] * len(keep)
    out = {
        "x": np.concatenate(xs),
        "y": np.asarray(ys, np.int64),
        "slide": np.asarray(names),
        "split": np.asarray(sides),
        "size": np.asarray(sizes),
        "count_slides": np.asarray(list(counts)),
        "count_values": np.asarray(list(counts.values())),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **out)  # type: ignore[arg-type]  # numpy stubs: **kwds vs allow_pickle
    return out


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); nan with one class only."""
    value = roc_auc(y, score)
    return float("nan") if value is None else value


def train_and_score(
    d: dict[str, np.ndarray], seed: int, epochs: int
) -> tuple[np.ndarray, dict[str, float]]:
    """Train on the tune slides' crops; return held-out crop probabilities and timings."""
    model = new_model("thanh", seed, 1e-3, "sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    train = d["split"] == "tune"
    x_tr, y_tr = d["x"][train], d["y"][train]
    x_te = d["x"][~train].astype(np.float32) / 255.0
    n_pos, n_neg = int(y_tr.sum()), int(len(y_tr) - y_tr.sum())
    weights = {0: len(y_tr) / (2 * n_neg), 1: len(y_tr) / (2 * n_pos)}
    t0 = time.perf_counter()
    for _ in range(epochs):
        # Each epoch sees every crop once, freshly flipped and turned.
        xa = symmetries(x_tr, rng).astype(np.float32) / 255.0
        model.fit(xa, y_tr, batch_size=32, epochs=1, verbose=0, class_weight=weights)
    seconds = time.perf_counter() - t0
    p = model.predict(x_te, batch_size=64, verbose=0)[:, 1]
    return p, {"train_seconds": round(seconds, 1), "n_train_pos": n_pos, "n_train_neg": n_neg}


def slide_scores(
    d: dict[str, np.ndarray], p: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per held-out slide: its label and the mean of its three most suspicious cells."""
    test = d["split"] != "tune"
    names = sorted(set(d["slide"][test]))
    labels, scores = [], []
    for name in names:
        mine = d["slide"][test] == name
        top = np.sort(p[mine])[::-1][:3]
        scores.append(float(top.mean()))
        labels.append(int(d["y"][test][mine][0]))
    return names, np.asarray(labels), np.asarray(scores)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """`leukoscope-tools cells experiment`'s arguments."""
    ap.add_argument("data", type=Path)
    ap.add_argument(
        "--split-file", type=Path, default=DEFAULT_SPLIT, help="the detector's tune/held-out split"
    )
    ap.add_argument("--cache", type=Path, default=Path(".run/cells/crops.npz"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path(".run/cells/classifier.json"))


def run_command(args: argparse.Namespace) -> int:
    """Build crops, train one model per seed, print crop- and slide-level AUCs."""
    d = build_crops(args.data, args.cache, args.split_file)
    test = d["split"] != "tune"
    print(
        f"crops: train {int((~test).sum())} ({int(d['y'][~test].sum())} blast), "
        f"test {int(test.sum())} ({int(d['y'][test].sum())} blast)"
    )
    # Baseline: the number of white cells the detector finds on the slide.
    split = read_split(args.split_file)
    held = [
        (s, int(v))
        for s, v in zip(d["count_slides"], d["count_values"], strict=True)
        if split[str(s)] == "held-out"
    ]
    count_auc = auc(
        np.array([1 if s.endswith("_1") else 0 for s, _ in held]),
        np.array([v for _, v in held], np.float64),
    )
    results: dict[str, object] = {"count_baseline_slide_auc": count_auc, "seeds": {}}
    print(f"count baseline, held-out slides: AUC {count_auc:.3f} ({len(held)} slides)")
    y_te, size_te = d["y"][test], d["size"][test]
    same_camera = size_te == "2592x1944"
    for seed in args.seeds:
        p, info = train_and_score(d, seed, args.epochs)
        names, s_lab, s_score = slide_scores(d, p)
        row = {
            **info,
            "crop_auc": auc(y_te, p),
            "crop_auc_2592_camera_only": auc(y_te[same_camera], p[same_camera]),
            "slide_auc_top3": auc(s_lab, s_score),
            "held_out_slides": len(names),
            "groups": len({group_of(n) for n in names}),
        }
        results["seeds"][str(seed)] = row  # type: ignore[index]
        print(f"seed {seed}: {json.dumps(row)}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    return 0
