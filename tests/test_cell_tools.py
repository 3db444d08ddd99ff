"""Host tools of cell mode: the cell training set, the slide model, the comparison report.

The real-data tests build a small cell set from ../shared/data (a few photos per source)
and skip cleanly without it; the rest run on synthetic stand-ins.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from leukoscope.analysis.cells import CellSettings, SlideFeatures, slide_score
from leukoscope_tools.cli import main
from leukoscope_tools.data.annotations import MATCH_UM, read_xyc
from leukoscope_tools.data.cell_augment import LabJitter, lab_jitter
from leukoscope_tools.data.cells import (
    CACHE_VERSION,
    DEFAULT_SPLIT,
    PBC,
    SOURCES,
    CellRow,
    CellSet,
    PhotoRow,
    build,
    kaggle_label,
    label_idb1_cells,
    load,
    save,
)
from leukoscope_tools.data.photos import Row, read_table, write_table
from leukoscope_tools.evaluate.cell_compare import (
    compare,
    is_shipped,
    render,
    spread,
    verdict,
)
from leukoscope_tools.evaluate.cell_sources import judge, score_bundle
from leukoscope_tools.evaluate.detection import (
    SlideResult,
    format_whole_field_split,
    whole_field_split,
)
from leukoscope_tools.metrics import paired_auc_diff
from leukoscope_tools.ship.cells import render_card
from leukoscope_tools.train.cell_cut import choose_cell_cut
from leukoscope_tools.train.cells import (
    cell_weights,
    lower_magnification,
    mil_candidates,
    most_suspicious,
    select,
    symmetries,
)
from leukoscope_tools.train.loop import Batch, Validation, cosine_rate, train_loop
from leukoscope_tools.train.slide import (
    balanced_weights,
    choose_slide_model,
    design,
    fit_logistic,
    fit_slide_model,
    scores,
)

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- labels


def test_idb1_labels_match_blasts_and_leave_the_rest_unknown() -> None:
    detected = np.array([[100.0, 100.0], [300.0, 300.0], [500.0, 120.0]])
    blasts = np.array([[104.0, 98.0], [900.0, 900.0]])  # the second has no detection
    y, missed, _ = label_idb1_cells(detected, blasts, px_per_um=1.0, healthy=False)
    assert y.tolist() == [1, -1, -1]
    assert missed == [1]
    # MATCH_UM is in micrometres: at 10 px/um the same 4.5 px offset is well inside,
    # at 0.5 px/um a 6 um radius is 3 px and the blast is missed.
    y_far, missed_far, _ = label_idb1_cells(detected, blasts, px_per_um=0.5, healthy=False)
    assert y_far.tolist() == [-1, -1, -1] and missed_far == [0, 1]


def test_healthy_slide_cells_are_other_whatever_lies_near() -> None:
    detected = np.array([[10.0, 10.0], [50.0, 50.0]])
    y, missed, _ = label_idb1_cells(detected, np.zeros((0, 2)), px_per_um=10.0, healthy=True)
    assert y.tolist() == [0, 0] and missed == []


def test_idb1_cells_at_other_marked_points_are_non_blasts_unless_at_a_blast() -> None:
    detected = np.array([[100.0, 100.0], [300.0, 300.0], [500.0, 120.0]])
    blasts = np.array([[101.0, 100.0]])
    others = np.array([[100.0, 101.0], [302.0, 300.0]])  # the first sits on the blast too
    y, _, at_other = label_idb1_cells(detected, blasts, 1.0, False, others)
    assert y.tolist() == [1, 0, -1]
    assert at_other.tolist() == [False, True, False]


@pytest.mark.parametrize(("cls", "want"), [("benign", 0), ("early", 1), ("pre", 1), ("pro", 1)])
def test_kaggle_photo_class_is_the_cell_label(cls: str, want: int) -> None:
    assert kaggle_label(cls) == want


# ---------------------------------------------------------------- a fake cell set


def _fake_set(n_photos: int = 24, seed: int = 0) -> CellSet:
    """Photos over both sources and three splits; blasts on leukemia photos score high."""
    rng = np.random.default_rng(seed)
    photos, cells = [], []
    first = 0
    for i in range(n_photos):
        source = "all-idb1" if (i // 6) % 2 == 0 else "kaggle-all"
        split = ("train", "val", "test")[(i // 2) % 3]
        label = "leukemia" if i % 2 else "normal"
        count = 0 if i == 5 else int(rng.integers(2, 6))  # photo 5: a retake
        photos.append(
            PhotoRow(
                i,
                f"{source}/p{i}.jpg",
                source,
                label,
                "x",
                f"g{i}",
                split,
                64,
                64,
                2.0,
                "red-cells",
                count,
                count,
                1000.0 * (1 + i % 2),
                first,
                count,
            )
        )
        for k in range(count):
            y = (
                (1 if label == "leukemia" else 0)
                if source == "kaggle-all"
                else (1 if label == "leukemia" and k % 2 == 0 else (0 if label == "normal" else -1))
            )
            cells.append(CellRow(i, 10.0 * k, 5.0, 30.0, False, y, "fake", True))
        first += count
    crops = rng.integers(0, 255, (len(cells), 8, 8, 3), dtype=np.uint8)
    return CellSet(crops, cells, photos, {"version": CACHE_VERSION, "label_counts": {"a": 1}})


def test_select_takes_labelled_crops_of_one_split_and_caps_kaggle_per_photo() -> None:
    cs = _fake_set()
    idx = select(cs, "train", ["all-idb1", "kaggle-all"], per_photo=1, seed=0)
    assert len(idx) > 0
    per_kaggle_photo: dict[int, int] = {}
    for i in idx:
        c = cs.cells[i]
        p = cs.photos[c.photo]
        assert p.split == "train" and c.y_cell >= 0
        if p.source == "kaggle-all":
            per_kaggle_photo[c.photo] = per_kaggle_photo.get(c.photo, 0) + 1
    assert per_kaggle_photo and max(per_kaggle_photo.values()) == 1
    only = select(cs, "train", ["all-idb1"], per_photo=1, seed=0)
    assert {cs.photos[cs.cells[i].photo].source for i in only} == {"all-idb1"}
    # all-idb1 is never capped: every labelled crop of its train photos is there.
    want = [
        i
        for i, c in enumerate(cs.cells)
        if c.y_cell >= 0
        and cs.photos[c.photo].split == "train"
        and cs.photos[c.photo].source == "all-idb1"
    ]
    assert sorted(only.tolist()) == want


def test_kaggle_photo_labels_can_be_left_out_or_kept_for_benign_photos_only() -> None:
    cs = _fake_set()
    none = select(cs, "train", ["all-idb1", "kaggle-all"], 0, 0, kaggle_labels="none")
    assert {cs.photos[cs.cells[i].photo].source for i in none} == {"all-idb1"}
    mil = select(cs, "train", ["all-idb1", "kaggle-all"], 0, 0, kaggle_labels="mil")
    kaggle = [i for i in mil if cs.photos[cs.cells[i].photo].source == "kaggle-all"]
    assert kaggle and all(cs.cells[i].y_cell == 0 for i in kaggle)


class _MeanModel:
    """A fake classifier: a crop's blast probability is its mean brightness."""

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        p = np.asarray(x).mean(axis=(1, 2, 3)) / max(float(np.asarray(x).max()), 1e-9)
        return np.stack([1 - p, p], axis=1)


def test_mil_takes_each_leukemia_photos_most_suspicious_cell() -> None:
    cs = _fake_set()
    bags = mil_candidates(cs, "train")
    assert bags and all(cs.photos[k].label == "leukemia" for k in bags)
    photos = np.asarray(sorted(bags))
    picked = most_suspicious(_MeanModel(), cs, bags, photos)
    assert len(picked) == len(photos)
    for k, i in zip(photos, picked, strict=True):
        means = [cs.crops[j].astype(float).mean() for j in bags[int(k)]]
        assert cs.crops[i].astype(float).mean() == max(means)


def test_lab_jitter_is_seeded_keeps_shape_and_changes_the_look() -> None:
    x = np.random.default_rng(1).integers(60, 200, (6, 32, 32, 3), dtype=np.uint8)
    a = lab_jitter(x, np.random.default_rng(7))
    b = lab_jitter(x, np.random.default_rng(7))
    assert a.shape == x.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, x)
    off = LabJitter(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    # All off: only the HSV round trip's rounding is left.
    same = lab_jitter(x, np.random.default_rng(7), off).astype(int)
    assert np.abs(same - x).max() <= 3


def test_coarse_camera_takes_the_fine_detail_a_coarse_defocused_camera_cannot_see() -> None:
    # A crop of 1 px stripes (24 um wide: 5.3 px/um) seen by a 1.5-3 px/um camera that
    # blurs by 0.3-1.2 of its own pixels keeps its mean but loses nearly all of its stripes.
    stripes = np.zeros((4, 128, 128, 3), np.uint8)
    stripes[:, :, ::2] = 200
    stripes[:, :, 1::2] = 60
    only_camera = LabJitter(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, camera_share=1.0, camera_noise=0)
    seen = lab_jitter(stripes, np.random.default_rng(3), only_camera)
    assert seen.shape == stripes.shape and seen.dtype == np.uint8
    assert np.array_equal(seen, lab_jitter(stripes, np.random.default_rng(3), only_camera))
    row = seen[:, 64, 20:108].astype(float)
    assert (np.abs(np.diff(row, axis=1)).mean()) < 0.1 * 140
    assert abs(seen.astype(float).mean() - 130) < 15
    # Off (the default), the same seed gives the same crops as before the option existed:
    # no draw is spent on it.
    x = np.random.default_rng(1).integers(60, 200, (6, 32, 32, 3), dtype=np.uint8)
    off = LabJitter(gamma=0.0, camera_share=0.0)
    assert np.array_equal(
        lab_jitter(x, np.random.default_rng(7)), lab_jitter(x, np.random.default_rng(7), off)
    )


def test_gamma_brightens_or_darkens_the_mid_tones_and_keeps_black_and_white() -> None:
    grey = np.full((64, 8, 8, 3), 128, np.uint8)
    grey[:, 0, 0] = 0
    grey[:, 0, 1] = 255
    only_gamma = LabJitter(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, gamma=0.3)
    out = lab_jitter(grey, np.random.default_rng(5), only_gamma).astype(int)
    mids = out[:, 4, 4, 0]
    assert mids.min() < 115 and mids.max() > 140  # both ways across 64 draws
    assert (out[:, 0, 0] <= 3).all() and (out[:, 0, 1] >= 252).all()


def test_cell_weights_balance_labels_within_each_source() -> None:
    cs = _fake_set(60)
    idx = select(cs, "train", ["all-idb1", "kaggle-all"], per_photo=0, seed=0)
    w = cell_weights(cs, idx)
    assert math.isclose(float(w.mean()), 1.0, rel_tol=1e-5)
    totals: dict[tuple[str, int], float] = {}
    sizes: dict[tuple[str, int], int] = {}
    for wi, i in zip(w, idx, strict=True):
        key = (cs.photos[cs.cells[i].photo].source, cs.cells[i].y_cell)
        totals[key] = totals.get(key, 0.0) + float(wi)
        sizes[key] = sizes.get(key, 0) + 1
    # Total weight of a (source, label) cell grows as the square root of its size.
    ratios = [totals[k] / math.sqrt(sizes[k]) for k in totals]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-5)


def _tiny_model_and_data() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """A seeded two-class softmax model (Adam 0.1) and 32 points it can learn."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return model, x, y


def test_training_loop_keeps_the_best_epoch_and_stops_after_patience() -> None:
    model, x, y = _tiny_model_and_data()
    scripted = iter([0.5, 0.8, 0.6, 0.7, 0.9])  # the 0.9 comes too late: patience 2
    seen: list[list[np.ndarray]] = []

    def validate(m: keras.Model) -> Validation:
        seen.append(m.get_weights())
        score = next(scripted)
        return Validation(score, {"val_auc": score})

    run = train_loop(
        model,
        lambda epoch: Batch(x, y, np.ones(len(y), np.float32)),
        validate,
        max_epochs=5,
        patience=2,
        batch_size=8,
        name="test",
    )
    assert run.best_epoch == 1 and run.history["val_auc"] == [0.5, 0.8, 0.6, 0.7]
    assert len(run.history["loss"]) == len(run.epoch_seconds) == 4
    kept = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(kept, seen[1], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(kept, seen[3], strict=True))


def test_averaged_training_runs_every_epoch_and_ends_on_the_mean_of_the_last() -> None:
    model, x, y = _tiny_model_and_data()
    scores = iter([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])  # a "best" first epoch must not be chosen
    seen: list[list[np.ndarray]] = []
    rates: list[float] = []

    def validate(m: keras.Model) -> Validation:
        seen.append(m.get_weights())
        rates.append(float(keras.ops.convert_to_numpy(m.optimizer.learning_rate)))
        score = next(scores)
        return Validation(score, {"val_auc": score})

    run = train_loop(
        model,
        lambda epoch: Batch(x, y, np.ones(len(y), np.float32)),
        validate,
        max_epochs=5,
        patience=1,
        batch_size=8,
        name="test",
        average_last=2,
    )
    assert len(run.history["loss"]) == 5 and run.best_epoch == 4  # no early stop
    assert run.averaged == {"val_auc": 0.5}  # the averaged model is validated once more
    want = [(a + b) / 2 for a, b in zip(seen[3], seen[4], strict=True)]
    assert all(np.allclose(a, b) for a, b in zip(model.get_weights(), want, strict=True))
    assert rates[0] == pytest.approx(0.1) and rates[4] == pytest.approx(0.002)
    assert all(a > b for a, b in itertools.pairwise(rates[:5]))  # falling
    assert cosine_rate(1.0, 2, 5) == pytest.approx(0.51)  # halfway: the middle


def test_symmetries_are_turns_and_flips_and_lowmag_blurs_only_a_share() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (40, 16, 16, 3), dtype=np.uint8)
    y = symmetries(x, np.random.default_rng(2))
    for a, b in zip(x, y, strict=True):
        views = [np.rot90(a, k) for k in range(4)]
        views += [v[:, ::-1] for v in views]
        assert any(np.array_equal(b, v) for v in views)
    assert not all(np.array_equal(a, b) for a, b in zip(x, y, strict=True))
    x = rng.integers(0, 255, (200, 32, 32, 3), dtype=np.uint8)
    z = lower_magnification(x, np.random.default_rng(3), 0.25, 0.2, crop_um=40.0)
    changed = np.mean([not np.array_equal(a, b) for a, b in zip(x, z, strict=True)])
    assert 0.1 < changed < 0.4
    assert np.array_equal(lower_magnification(x, np.random.default_rng(3), 0.0, 0.2), x)


def test_cell_set_round_trips_through_its_cache(tmp_path: Path) -> None:
    cs = _fake_set()
    save(cs, tmp_path)
    back = load(tmp_path, mmap=False)
    assert back.cells == cs.cells and back.photos == cs.photos
    assert np.array_equal(back.crops, cs.crops)


# ---------------------------------------------------------------- slide model


def test_logistic_fit_recovers_known_weights() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 3))
    beta = np.array([-0.5, 2.0, -1.0, 0.7])
    p = 1 / (1 + np.exp(-(beta[0] + x @ beta[1:])))
    y = (rng.random(len(p)) < p).astype(int)
    got = fit_logistic(x, y, l2=0.0)
    assert np.allclose(got, beta, atol=0.1), got


def test_slide_model_fit_recovers_weights_through_slide_score() -> None:
    rng = np.random.default_rng(4)
    truth = CellSettings(bias=-3.0, w_top_k=4.0, w_density=1.0, w_fraction=-1.5)
    feats, labels = [], []
    for _ in range(8000):
        top, frac = float(rng.random()), float(rng.random())
        f = SlideFeatures(5, 2, top, float(rng.uniform(0, 6)), frac)
        feats.append(f)
        labels.append(int(rng.random() < slide_score(f, truth)))
    fitted = fit_slide_model(feats, labels, ["s"] * len(feats), CellSettings())
    for name in ("w_top_k", "w_density", "w_fraction"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), abs=0.35), name
    # Balancing the labels moves only the bias, by the log of the label ratio.
    n_pos = sum(labels)
    shift = math.log((len(labels) - n_pos) / n_pos)
    assert fitted.bias == pytest.approx(truth.bias + shift, abs=0.35)
    # The fitted settings score through the device's own function.
    s = scores(feats[:5], fitted)
    assert s.tolist() == [slide_score(f, fitted) for f in feats[:5]]


def test_slide_model_leaves_retakes_out_and_balances_sources() -> None:
    w = balanced_weights(["a", "a", "a", "b", "a", "b"], [1, 1, 1, 1, 0, 0])
    totals: dict[tuple[str, int], float] = {}
    for wi, k in zip(w, [("a", 1), ("a", 1), ("a", 1), ("b", 1), ("a", 0), ("b", 0)], strict=True):
        totals[k] = totals.get(k, 0.0) + wi
    assert max(totals.values()) == pytest.approx(min(totals.values()))
    good = [SlideFeatures(3, 1, v, 1.0, 0.3) for v in (0.1, 0.2, 0.8, 0.9)]
    retake = SlideFeatures(0, 0, 0.0, 0.0, 0.0)
    fitted = fit_slide_model([*good, retake], [0, 0, 1, 1, 1], ["s"] * 5, CellSettings())
    assert fitted.w_top_k > 0
    assert math.isnan(scores([retake], fitted)[0])
    with pytest.raises(ValueError, match="both labels"):
        fit_slide_model([*good[:2], retake], [0, 0, 1], ["s"] * 3, CellSettings())
    assert design(good).shape == (4, 3)


# ---------------------------------------------------------------- report


def _fake_runs(tmp_path: Path, cs: CellSet) -> tuple[Path, Path]:
    """Runs whose blast probability follows the photo's label, and a whole-field stand-in."""
    runs = tmp_path / "runs"
    rng = np.random.default_rng(0)
    for name, seed, noise in (("both-s0", 0, 0.05), ("both-s1", 1, 0.3), ("idb1-s0", 0, 0.1)):
        d = runs / name
        d.mkdir(parents=True)
        y = np.array([cs.photos[c.photo].label == "leukemia" for c in cs.cells], float)
        p = np.clip(0.2 + 0.6 * y + rng.normal(0, noise, len(y)), 0, 1)
        np.save(d / "p_blast.npy", p)
        run = {
            "config": {
                "seed": seed,
                "train_sources": ["all-idb1"] if name.startswith("idb1") else list(SOURCES),
                "cross_splits": ["test"],
            },
            "best_epoch": 2,
            "best_val_crop_auc": 0.9 - noise,
            "train_seconds": 1.0,
            "crops": {"train all-idb1 blast": 3},
        }
        (d / "run.json").write_text(json.dumps(run))
    wf = tmp_path / "wf"
    wf.mkdir()
    manifest = {
        "thresholds": {"low": 0.4, "high": 0.6},
        "metrics": {"cut": 0.5, "test": {"overall": {"roc_auc": 0.5}}, "cross_source": {}},
    }
    (wf / "manifest.json").write_text(json.dumps(manifest))
    # The whole-field model here is a coin toss: the photo's index parity.
    cache = {ph.path: float(ph.photo % 4 == 0) for ph in cs.photos if ph.split == "test"}
    (runs / "whole_field_test.json").write_text(json.dumps(cache))
    return runs, wf


def test_report_is_generated_from_the_results(tmp_path: Path) -> None:
    cs = _fake_set(48)
    runs, wf = _fake_runs(tmp_path, cs)
    abl = tmp_path / "ablations" / "lowmag-s1"
    abl.mkdir(parents=True)
    for f in ("p_blast.npy", "run.json"):
        (abl / f).write_bytes((runs / "both-s1" / f).read_bytes())
    info = json.loads((abl / "run.json").read_text())
    info["config"]["lowmag"] = 0.3
    info["history"] = {"val_auc all-idb1": [0.5, 0.75], "val_auc kaggle-all": [0.6, 0.65]}
    (abl / "run.json").write_text(json.dumps(info))
    res = compare(tmp_path, cs, runs, wf, tmp_path / "ablations")
    assert res["best_seed"] == 0  # the higher validation crop AUC
    seed0 = res["cells"][0]
    # Probabilities follow the label with little noise: cell mode separates the test photos.
    assert seed0["test"]["overall"]["roc_auc"] == pytest.approx(1.0)
    retakes = sum(1 for ph in cs.photos if ph.split == "test" and ph.n_cells == 0)
    assert seed0["test"]["overall"]["retakes"] == retakes
    assert res["cells_seeds"]["overall"]["roc_auc"]["mean"] == pytest.approx(
        np.mean([r["test"]["overall"]["roc_auc"] for r in res["cells"]]), abs=1e-4
    )
    text = render(res, "cmd")
    assert "cells, seed 0 (shipped)" in text and "cells, seed 1 |" in text
    auc_wf = res["whole_field"]["test_cells_decided"]["overall"]["roc_auc"]
    assert f"{auc_wf:.3f}" in text
    assert any("**cells** is higher" in line for line in verdict(res))
    assert "count baseline (density only)" in text
    assert "| lowmag-s1 | 0.3 | 2 / None | 0.600 | all-idb1 0.750, kaggle-all 0.650 |" in text
    assert "| both-s1 | 0 |" in text
    cross = res["cross"]["all-idb1 -> kaggle-all"]
    kaggle = [ph for ph in cs.photos if ph.source == "kaggle-all" and ph.split == "test"]
    assert cross["cells"][0]["cross"]["overall"]["n"] + cross["cells"][0]["cross"]["overall"][
        "retakes"
    ] == len(kaggle)
    assert "| all-idb1 -> kaggle-all | cells, seed 0 (test photos) |" in text
    assert (
        cross["count_baseline"]["test"]["overall"]["n"]
        == cross["cells"][0]["cross"]["overall"]["n"]
    )


def test_spread_ignores_missing_values() -> None:
    s = spread([0.5, None, 0.7, float("nan")])
    assert s["mean"] == pytest.approx(0.6) and s["min"] == 0.5 and s["max"] == 0.7
    assert spread([None])["mean"] is None


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def small_set(shared_data: Path) -> CellSet:
    return build(shared_data, split_path=REPO / DEFAULT_SPLIT, limit=12)


def test_real_cell_set_keeps_the_whole_field_split(shared_data: Path, small_set: CellSet) -> None:
    table = {r.path: r for r in read_table(REPO / DEFAULT_SPLIT)}
    groups: dict[str, set[str]] = {}
    for ph in small_set.photos:
        if ph.source == PBC:  # PBC's own seeded split, one group per cell
            assert ph.group == f"{PBC}:{Path(ph.path).stem}" and ph.count == 1
            continue
        want = table[ph.path]
        assert (ph.split, ph.group) == (want.split, want.group)
        assert ph.split in ("train", "val", "test")  # excluded photos stay out
        groups.setdefault(ph.group, set()).add(ph.split)
    assert all(len(s) == 1 for s in groups.values())
    # Crops of each photo lie in its own rows.
    for ph in small_set.photos:
        assert {c.photo for c in small_set.cells[ph.first : ph.first + ph.count]} <= {ph.photo}
    assert len(small_set.crops) == len(small_set.cells)
    assert small_set.crops.shape[1:] == (128, 128, 3) and small_set.crops.dtype == np.uint8


def test_real_cell_labels_follow_their_sources(shared_data: Path, small_set: CellSet) -> None:
    by_photo: dict[int, list[CellRow]] = {}
    for c in small_set.cells:
        by_photo.setdefault(c.photo, []).append(c)
    seen = set()
    for ph in small_set.photos:
        cells = by_photo.get(ph.photo, [])
        if ph.source == "kaggle-all":
            assert all(c.y_cell == kaggle_label(ph.cls) for c in cells)
            seen.add("kaggle")
        elif ph.source == PBC:
            assert [c.y_cell for c in cells] == [0] and cells[0].kind == PBC
            seen.add(PBC)
        elif ph.label == "normal":
            assert all(c.y_cell == 0 for c in cells)
        else:
            blasts = read_xyc(shared_data / "all-idb1" / "xyc" / f"{Path(ph.path).stem}.xyc")
            for c in cells:
                d = np.min(np.hypot(blasts[:, 0] - c.x, blasts[:, 1] - c.y))
                if c.y_cell == 1:
                    assert d <= MATCH_UM * ph.px_per_um + 1e-6
                    seen.add("blast")
                elif c.kind == "xyc-other":
                    assert c.y_cell == 0
                    seen.add("xyc-other")
                else:
                    assert c.y_cell == -1
    assert seen == {"kaggle", "blast", "xyc-other", PBC}


def test_model_card_quotes_the_comparison_and_the_parity(tmp_path: Path) -> None:
    cs = _fake_set(48)
    runs, wf = _fake_runs(tmp_path, cs)
    res = compare(tmp_path, cs, runs, wf)
    best = res["cells"][0]
    par = {
        "photos": 9,
        "retake_agreement": 1.0,
        "scored": 8,
        "verdict_agreement": 0.875,
        "score_abs_diff_max": 0.0123,
        "score_abs_diff_mean": 0.004,
        "analysis_ms_median": 12.5,
        "int8_test_auc": {"overall": 0.6543, "all-idb1": 1.0, "kaggle-all": 0.61},
    }
    card = render_card(res, best, par)
    compare_md = render(res, "cmd")
    # The card's test table is the report's, row for row.
    overall = compare_md.split("### overall\n\n")[1].split("\n\n")[0]
    assert overall in card
    assert "verdict agreement 0.875" in card and "max 0.0123" in card
    assert "overall 0.654, all-idb1 1.000, kaggle-all 0.610" in card
    s = best["settings"]
    assert f"sigmoid({s['bias']:.3f} + {s['w_top_k']:.3f} * top_3_mean" in card
    assert "int8 on the device path" not in render_card(res, best, None)
    # How the weights were chosen, and the not-a-white-cell check, in words.
    assert f"epoch {best['best_epoch']} (the best on validation)" in card
    averaged = {**best, "config": {**best["config"], "average_last": 5, "max_epochs": 14}}
    assert "the mean of the last 5 of 14 epochs' weights" in render_card(res, averaged, None)
    assert f"nucleus under {s['reject_small_um2']:g} um^2" in card and "not classified" in card


def test_cell_cut_is_chosen_where_the_blast_fraction_separates() -> None:
    cs = _fake_set(90, seed=3)
    cs.photos = [replace(ph, area_um2=1000.0) for ph in cs.photos]  # density says nothing
    rng = np.random.default_rng(5)
    p = np.empty(len(cs.cells))
    for i, c in enumerate(cs.cells):
        leuk = cs.photos[c.photo].label == "leukemia"
        # Every photo's most suspicious cells look alike (~0.68); normal photos also hold
        # cells at ~0.56, which only a cut between them tells apart.
        p[i] = 0.68 + rng.normal(0, 0.005) if leuk or i % 2 else 0.56 + rng.normal(0, 0.005)
    val = [ph for ph in cs.photos if ph.split == "val"]
    # k = 1: the top cell is ~0.68 on every photo, so only the blast fraction can tell.
    settings, tried = choose_slide_model(cs, p, val, CellSettings(k=1))
    assert 0.56 < settings.cell_cut < 0.68, tried
    assert settings.w_fraction > 0
    assert tried["0.5"] < tried[f"{settings.cell_cut:g}"]


def test_paired_auc_difference_and_its_interval() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good = y + rng.normal(0, 0.3, len(y))
    noise = rng.normal(0, 1, len(y))
    d = paired_auc_diff(y, good, noise)
    assert d["diff"] > 0.3 and d["ci"][0] > 0
    same = paired_auc_diff(y, good, good)
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0]
    assert paired_auc_diff(np.ones(5, int), good[:5], noise[:5]) == {"diff": None, "ci": None}


def test_cells_cli_names_a_missing_data_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["cells", "dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope/all-idb1: no such folder" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("step", ["dataset", "train", "compare", "ship", "eval", "experiment"])
def test_every_cells_step_shows_its_own_options(
    step: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["cells", step, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert out.startswith(f"usage: leukoscope-tools cells {step} ")
    assert "--out" in out or "--report" in out


def test_cells_train_help_lists_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["cells", "train", "--help"])
    out = capsys.readouterr().out
    for option in ("--seed", "--sources", "--epoch-size", "--lowmag", "--cross-splits"):
        assert option in out


def test_compare_report_records_the_command_that_made_it(tmp_path: Path) -> None:
    cs = _fake_set(48)
    runs, wf = _fake_runs(tmp_path, cs)
    save(cs, tmp_path / "cells")
    argv = ["cells", "compare", str(tmp_path), str(tmp_path / "cells"), "--runs", str(runs)]
    argv += ["--whole-field", str(wf), "--out", str(tmp_path / "report" / "COMPARE.md")]
    assert main(argv) == 0
    res = json.loads((tmp_path / "report" / "compare.json").read_text())
    assert res["command"] == "leukoscope-tools " + " ".join(argv)
    text = (tmp_path / "report" / "COMPARE.md").read_text()
    assert f"Generated by `{res['command']}`;" in text
    assert render(res) == text
    best = next(r for r in res["cells"] if r["seed"] == res["best_seed"])
    assert f"generated by `{res['command']}`" in render_card(res, best, None)


def test_shipped_cells_report_is_its_numbers_rendered() -> None:
    bundle_dir = REPO / "models" / "default"
    if not (bundle_dir / "compare.json").is_file():
        pytest.skip("no shipped cells bundle")
    res = json.loads((bundle_dir / "compare.json").read_text())
    text = (bundle_dir / "COMPARE.md").read_text()
    found = re.search(r"Generated by `([^`]+)`", text)
    assert found
    # That compare.json predates recording the command, and its report named the script
    # after the command; newer reports take the command from compare.json.
    command = res.get("command", found.group(1))
    text = text.replace(f"`{command}` (tools/cell_compare.py);", f"`{command}`;", 1)
    # Every number of COMPARE.md is compare.json's, rendered by the code, not typed.
    assert render(res, command) == text
    card = (bundle_dir / "MODEL_CARD.md").read_text()
    for line in verdict(res):
        assert line in card
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    best = next(r for r in res["cells"] if is_shipped(r, res))
    assert manifest["analysis_mode"] == "cells"
    assert manifest["cells"] == best["settings"]
    assert manifest["thresholds"] == best["thresholds"]


def test_detection_is_judged_on_the_whole_field_split(tmp_path: Path) -> None:
    split_csv = tmp_path / "split.csv"
    write_table(
        [
            Row(path, source, "x", "x", "0", 1, 1, "0", -1, split="test")
            for path, source in (
                ("all-idb1/all/Im001_1.jpg", "all-idb1"),
                ("all-idb1/all/Im002_1.jpg", "all-idb1"),
                ("all-idb1/normal/Im090_0.jpg", "all-idb1"),
                ("kaggle-all/benign/x.jpg", "kaggle-all"),
            )
        ],
        split_csv,
    )
    wf = whole_field_split(split_csv)
    assert wf == {"Im001_1": "test", "Im002_1": "test", "Im090_0": "test"}

    def result(name: str, label: str, blasts: int, found: int, dets: int) -> SlideResult:
        return SlideResult(name, label, "test", "1x1", 1.0, blasts, found, found, 0, dets, 0, 0.0)

    results = [
        result("Im001_1", "all", 10, 9, 12),
        result("Im002_1", "all", 5, 5, 6),
        result("Im090_0", "normal", 0, 0, 3),
    ]
    # Im001_1 was tuned on: the recall on the others counts Im002_1 alone.
    text = format_whole_field_split(results, split_csv, {"Im001_1": "tune"})
    row = next(line for line in text.splitlines() if line.startswith("| test "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:6] == ["2", "15", "14", "0.933", "0.900"]
    assert cells[-2:] == ["1 of 3", "5 / 5"]


# ---------------------------------------------------------------- cell cut and sources


def _with_kinds(cs: CellSet) -> CellSet:
    """The fake set's ALL-IDB1 cells given ALL-IDB1's label kinds."""
    for c in cs.cells:
        if cs.photos[c.photo].source == "all-idb1":
            c.kind = "xyc" if c.y_cell == 1 else "healthy-slide" if c.y_cell == 0 else "unknown"
    return cs


def test_cell_cut_separates_validation_cells_and_never_reads_a_left_out_source() -> None:
    cs = _with_kinds(_fake_set(48))
    y = cs.column("y_cell")
    src = np.array([cs.photos[c.photo].source for c in cs.cells])
    # ALL-IDB1: blasts at 0.8, others at 0.2; kaggle-all: everything at 0.6 or 0.4.
    p = np.where(src == "all-idb1", np.where(y == 1, 0.8, 0.2), np.where(y == 1, 0.6, 0.4))
    cut = choose_cell_cut(cs, p, ["all-idb1", "kaggle-all"])
    assert 0.2 < cut <= 0.8
    # Trained without ALL-IDB1: its cells are that run's test, so kaggle-all decides.
    assert 0.4 < choose_cell_cut(cs, p, ["kaggle-all"]) <= 0.6
    judged = judge(cs, p, ["kaggle-all"], 0.5, "fake", {"kaggle_labels": "mil"})
    idb = judged["all-idb1 (left out)"]
    assert idb["auc"] == 1.0 and idb["sensitivity"]["rate"] == 1.0
    assert "kaggle-all photos (test)" in judged


def test_a_bundle_is_judged_on_pbc_cells_it_never_trained_on(tmp_path: Path) -> None:
    """`cells sources --bundle`: a bundle that saw PBC's train cells is scored on its test
    cells only; one whose manifest does not name PBC, on all of them."""
    from tests.helpers import build_tiny_cells_bundle

    cs = _fake_set(12)
    first = len(cs.cells)
    photos, cells = list(cs.photos), list(cs.cells)
    for k, split in enumerate(("train", "train", "test", "val")):
        i = len(photos)
        photos.append(
            replace(
                photos[0],
                photo=i,
                path=f"pbc/lymphocyte/c{k}.jpg",
                source=PBC,
                split=split,
                group=f"pbc{k}",
                first=first + k,
                count=1,
                n_cells=1,
                n_detected=1,
            )
        )
        cells.append(CellRow(i, 32.0, 32.0, 40.0, False, 0, "pbc", True))
    bundle = build_tiny_cells_bundle(tmp_path / "bundle")
    side = json.loads((bundle / "manifest.json").read_text())["input"]["width"]
    crops = np.random.default_rng(0).integers(0, 255, (len(cells), side, side, 3), dtype=np.uint8)
    cs = CellSet(crops, cells, photos, cs.summary)
    pbc = np.arange(first, first + 4)
    p, _, info = score_bundle(cs, bundle)
    assert info["trained"] == ["all-idb1", "kaggle-all"]  # no config: the old bundles' sources
    assert np.isfinite(p[pbc]).all()
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["training"]["config"] = {"train_sources": ["all-idb1", "kaggle-all", PBC]}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    p, _, info = score_bundle(cs, bundle)
    assert PBC in info["trained"]
    assert np.isnan(p[pbc[:2]]).all() and np.isfinite(p[pbc[2]]) and np.isnan(p[pbc[3]])
