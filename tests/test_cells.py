"""White-cell detection, scale from red cells and crops, on synthetic smears with known cells."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from leukoscope.analysis.detection import (
    DEFAULT_PARAMS,
    WhiteCell,
    _join_lobes,
    crop_cells,
    detect_white_cells,
    estimate_scale,
    optical_density,
)
from leukoscope.core.errors import ImageError
from leukoscope.core.synthetic import SyntheticSmear, make_smear


def _white(smear: SyntheticSmear) -> np.ndarray:
    return np.array([(c.x, c.y) for c in smear.cells if c.kind != "rbc"]).reshape(-1, 2)


def _recall_precision(smear: SyntheticSmear, cells: list[WhiteCell]) -> tuple[float, float]:
    """One-to-one matches within half a drawn white cell's radius (about 4 um)."""
    truth = _white(smear)
    found = np.array([(c.x, c.y) for c in cells]).reshape(-1, 2)
    tol = 4.0 * smear.px_per_um
    used: set[int] = set()
    hits = 0
    for t in truth:
        d = np.linalg.norm(found - t, axis=1) if len(found) else np.zeros(0)
        for j in np.argsort(d):
            if d[j] > tol:
                break
            if int(j) not in used:
                used.add(int(j))
                hits += 1
                break
    recall = hits / len(truth) if len(truth) else 1.0
    precision = len(used) / len(found) if len(found) else 1.0
    return recall, precision


@pytest.mark.parametrize(
    ("px_per_um", "seed"), [(2.5, 0), (4.0, 1), (6.0, 2), (9.0, 3), (4.0, 4), (5.0, 5)]
)
def test_detects_every_white_cell_and_nothing_else(px_per_um: float, seed: int) -> None:
    smear = make_smear(
        1200, 900, n_wbc=5, n_blasts=4, n_touching_pairs=2, px_per_um=px_per_um, seed=seed
    )
    det = detect_white_cells(smear.image)
    recall, precision = _recall_precision(smear, det.cells)
    assert recall == 1.0
    assert precision == 1.0


def test_touching_blasts_are_split() -> None:
    smear = make_smear(900, 700, n_wbc=0, n_blasts=0, n_touching_pairs=4, px_per_um=4.0, seed=7)
    assert len(smear.of_kind("blast")) == 8
    det = detect_white_cells(smear.image)
    assert len(det.cells) == 8
    assert _recall_precision(smear, det.cells) == (1.0, 1.0)


@pytest.mark.parametrize("px_per_um", [2.0, 3.0, 5.0, 8.0, 12.0])
def test_scale_from_red_cells(px_per_um: float) -> None:
    side = int(140 * px_per_um)  # the same field of view, about 140 um wide
    smear = make_smear(side, side * 3 // 4, n_wbc=2, px_per_um=px_per_um, seed=11)
    est = estimate_scale(smear.image)
    assert est.source == "red-cells"
    assert est.n_red_cells >= 5
    # Below 3 px/um a red cell is under 23 px across: pixel edges cost a few percent.
    assert est.px_per_um == pytest.approx(px_per_um, rel=0.1 if px_per_um < 3 else 0.05)


def test_scale_does_not_depend_on_white_balance() -> None:
    smear = make_smear(800, 600, n_wbc=3, px_per_um=4.0, seed=12)
    tinted = np.clip(smear.image * np.array([0.8, 1.0, 1.15]), 0, 255).astype(np.uint8)
    a = estimate_scale(smear.image).px_per_um
    b = estimate_scale(tinted).px_per_um
    assert b == pytest.approx(a, rel=0.03)


def test_detection_survives_a_colour_cast_and_paler_stain() -> None:
    smear = make_smear(1000, 750, n_wbc=4, n_blasts=3, px_per_um=4.0, seed=13)
    img = smear.image.astype(np.float32)
    # Paler stain: halve every cell's absorbance, then a yellow lamp and a darker exposure.
    od = optical_density(smear.image)
    bg = np.array([236.0, 222.0, 226.0])
    paler = bg * np.exp(-0.6 * od)
    cast = np.clip(paler * np.array([0.95, 0.85, 0.6]), 0, 255).astype(np.uint8)
    assert not np.array_equal(cast, img)
    det = detect_white_cells(cast)
    assert _recall_precision(smear, det.cells) == (1.0, 1.0)


def test_crops_cover_the_same_physical_size_at_two_magnifications() -> None:
    hi = make_smear(1600, 1200, n_wbc=3, n_blasts=3, px_per_um=8.0, seed=21)
    # The same field through a lower-power objective: half the pixels per micrometre.
    lo_img = cv2.resize(hi.image, (800, 600), interpolation=cv2.INTER_AREA)
    det_hi = detect_white_cells(hi.image)
    det_lo = detect_white_cells(lo_img)
    assert det_lo.scale.px_per_um == pytest.approx(det_hi.scale.px_per_um / 2, rel=0.08)
    assert len(det_hi.cells) == len(det_lo.cells) == 6
    crops_hi = crop_cells(hi.image, det_hi.cells, det_hi.scale.px_per_um, size_um=24, out_px=96)
    crops_lo = crop_cells(lo_img, det_lo.cells, det_lo.scale.px_per_um, size_um=24, out_px=96)
    assert crops_hi.shape == crops_lo.shape == (6, 96, 96, 3)
    for c_hi in det_hi.cells:
        j = int(np.argmin([np.hypot(c.x - c_hi.x / 2, c.y - c_hi.y / 2) for c in det_lo.cells]))
        i = det_hi.cells.index(c_hi)
        a = crops_hi[i].astype(np.float32)
        b = crops_lo[j].astype(np.float32)
        # The same cell at the same size: nucleus areas agree, and the pictures agree.
        nuc_a = (optical_density(crops_hi[i])[:, :, 1] > 0.6).sum()
        nuc_b = (optical_density(crops_lo[j])[:, :, 1] > 0.6).sum()
        assert nuc_b == pytest.approx(nuc_a, rel=0.15)
        assert np.abs(a - b).mean() < 12.0


def test_crop_is_scaled_to_physical_size() -> None:
    # A disc of 10 um on a plain field at two scales fills the same share of its crop.
    shares = []
    for ppu in (3.0, 7.0):
        img = np.full((400, 400, 3), 230, np.uint8)
        cv2.circle(img, (200, 200), round(5.0 * ppu), (120, 60, 160), -1)
        crop = crop_cells(img, [WhiteCell(200, 200, 78.5, 5 * ppu)], ppu, size_um=20, out_px=128)
        shares.append(float((crop[0, :, :, 1] < 145).mean()))
    expected = np.pi * 5.0**2 / 20.0**2
    assert shares == pytest.approx([expected, expected], rel=0.06)


def test_crop_at_the_edge_is_padded_with_the_background() -> None:
    smear = make_smear(400, 300, n_wbc=1, px_per_um=4.0, seed=3)
    cell = WhiteCell(2.0, 150.0, 50.0, 10.0)
    crops = crop_cells(smear.image, [cell], 4.0, size_um=24, out_px=64, background=(1, 2, 3))
    assert crops.shape == (1, 64, 64, 3)
    assert (crops[0, 10, :20] == (1, 2, 3)).all()  # left of the image: the fill colour
    assert crop_cells(smear.image, [], 4.0).shape == (0, 128, 128, 3)


def test_no_white_cells_gives_none() -> None:
    smear = make_smear(800, 600, n_wbc=0, n_blasts=0, px_per_um=4.0, seed=30)
    det = detect_white_cells(smear.image)
    assert det.cells == []
    assert det.scale.source == "red-cells"


def test_one_white_cell() -> None:
    smear = make_smear(800, 600, n_wbc=0, n_blasts=1, px_per_um=4.0, seed=31)
    det = detect_white_cells(smear.image)
    assert len(det.cells) == 1
    assert _recall_precision(smear, det.cells) == (1.0, 1.0)


def test_hundreds_of_white_cells() -> None:
    smear = make_smear(2400, 1800, n_wbc=120, n_blasts=120, px_per_um=2.5, seed=32)
    n_white = len(_white(smear))
    assert n_white >= 200
    det = detect_white_cells(smear.image)
    recall, precision = _recall_precision(smear, det.cells)
    assert recall >= 0.98
    assert precision >= 0.98


def test_blank_field_needs_a_default_scale() -> None:
    blank = np.full((600, 800, 3), 228, np.uint8)
    with pytest.raises(ImageError, match="red cells"):
        detect_white_cells(blank)
    det = detect_white_cells(blank, default_px_per_um=4.0)
    assert det.cells == []
    assert det.scale.source == "default"


def test_a_given_scale_is_used_as_is() -> None:
    smear = make_smear(800, 600, n_wbc=2, n_blasts=1, px_per_um=4.0, seed=33)
    det = detect_white_cells(smear.image, px_per_um=4.0)
    assert det.scale.source == "given"
    assert _recall_precision(smear, det.cells) == (1.0, 1.0)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((4, 4, 3), np.uint8),
    ],
)
def test_rejects_arrays_that_are_not_images(bad: np.ndarray) -> None:
    with pytest.raises(ImageError):
        detect_white_cells(bad, px_per_um=4.0)


def test_deterministic() -> None:
    smear = make_smear(800, 600, n_wbc=3, n_blasts=2, px_per_um=4.0, seed=34)
    assert detect_white_cells(smear.image) == detect_white_cells(smear.image)


def test_scale_refused_when_the_red_cells_disagree() -> None:
    # Round pink blobs of every size from 2 to 12 um are no ruler.
    rng = np.random.default_rng(5)
    img = np.full((600, 800, 3), (236, 222, 226), np.uint8)
    for _ in range(60):
        r = int(rng.uniform(4, 24))
        x, y = int(rng.uniform(30, 770)), int(rng.uniform(30, 570))
        cv2.circle(img, (x, y), r, (218, 140, 152), -1, cv2.LINE_AA)
    with pytest.raises(ImageError, match="too varied"):
        estimate_scale(img)
    assert estimate_scale(img, default=4.0).source == "default"


def test_scale_refused_from_specks_in_a_field_of_overlapping_cells() -> None:
    # Red cells overlapping in long chains (none isolated) and a few small round specks:
    # the specks are round and alike, but they are not the field's red cells.
    img = np.full((600, 800, 3), (236, 222, 226), np.uint8)
    for row in range(40, 400, 50):
        for x in range(30, 780, 40):
            cv2.circle(img, (x, row), 30, (218, 140, 152), -1, cv2.LINE_AA)
    for k in range(8):
        cv2.circle(img, (60 + 90 * k, 480 + 60 * (k % 2)), 6, (218, 140, 152), -1, cv2.LINE_AA)
    with pytest.raises(ImageError, match="cover only"):
        estimate_scale(img)


def test_pieces_too_small_for_a_nucleus_are_joined_with_their_neighbours_only() -> None:
    labels = np.zeros((100, 100), np.int32)
    labels[10:20, 10:20] = 1  # 100 px: a nucleus at 2 px/um (12 um^2 is 48 px)
    labels[50:54, 50:54] = 2  # two 16 px lobes 2 px apart: one cell
    labels[50:54, 56:60] = 3
    labels[80:83, 80:83] = 4  # a lone 9 px speck: its own piece
    out = _join_lobes(labels, (labels > 0).astype(np.uint8), 2.0, DEFAULT_PARAMS)
    assert (out[labels == 1] == 1).all() and (out[labels == 0] == 0).all()
    lobes = np.unique(out[(labels == 2) | (labels == 3)])
    speck = np.unique(out[labels == 4])
    assert lobes.size == 1 and speck.size == 1 and lobes[0] > 4 and speck[0] > 4
    assert lobes[0] != speck[0]
    # Nothing small: the labels come back as they are.
    big = np.where(labels == 1, 1, 0).astype(np.int32)
    assert _join_lobes(big, (big > 0).astype(np.uint8), 2.0, DEFAULT_PARAMS) is big
