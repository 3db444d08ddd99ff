"""Field overlap: the same region photographed twice is found, other fields are not."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from leukoscope.analysis.overlap import fingerprint, shared_fraction
from leukoscope.core.imageio import load_image
from leukoscope.core.synthetic import make_smear

#: ALL-IDB1's overlapping fields that share a large area (data README; the others of its
#: groups share a sliver or a turned view, which a stage move does not give).
KNOWN_OVERLAPS = {
    ("Im009", "Im010"),
    ("Im010", "Im011"),
    ("Im036", "Im103"),
    ("Im039", "Im044"),
    ("Im078", "Im089"),
    ("Im093", "Im108"),
}


@pytest.fixture(scope="module")
def stage() -> np.ndarray:
    """A strip of smear wider than one field, as the stage would move over it."""
    return make_smear(3200, 1944, seed=1, px_per_um=5.9, n_wbc=4).image


@pytest.mark.parametrize("shift", [0, 300, 900, 1300])
def test_a_stage_move_is_measured_as_the_area_still_shared(stage: np.ndarray, shift: int) -> None:
    a = stage[:, :2592]
    b = stage[:, shift : shift + 2592]
    b = np.pad(b, ((0, 0), (0, 2592 - b.shape[1]), (0, 0)), mode="edge")
    got = shared_fraction(fingerprint(a), fingerprint(b))
    assert got == pytest.approx((2592 - shift) / 2592, abs=0.02)


def test_the_same_field_twice_matches_through_jpeg_and_a_dimmer_lamp(stage: np.ndarray) -> None:
    a = stage[:, :2592]
    ok, buf = cv2.imencode(".jpg", a[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    again = np.clip(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1] * 0.85, 0, 255)
    assert shared_fraction(fingerprint(a), fingerprint(again.astype(np.uint8))) > 0.95


def test_other_fields_of_the_same_kind_of_smear_do_not_match(stage: np.ndarray) -> None:
    a = fingerprint(stage[:, :2592])
    for seed in (2, 3, 4):
        other = make_smear(2592, 1944, seed=seed, px_per_um=5.9, n_wbc=4).image
        assert shared_fraction(a, fingerprint(other)) == 0.0


def test_blank_frames_and_other_sizes_say_nothing(stage: np.ndarray) -> None:
    blank = np.full((1944, 2592, 3), 200, np.uint8)
    assert shared_fraction(fingerprint(blank), fingerprint(blank)) == 0.0
    small = fingerprint(stage[:480, :640])
    assert shared_fraction(fingerprint(stage[:, :2592]), small) == 0.0


@pytest.mark.realdata
def test_all_idb1_overlapping_fields_are_found_and_no_others(shared_data: Path) -> None:
    photos = {p.stem.split("_")[0]: p for p in sorted((shared_data / "all-idb1").glob("*/*.jpg"))}
    fps = {name: fingerprint(load_image(path)) for name, path in photos.items()}
    found = {
        (a, b)
        for a, b in itertools.combinations(sorted(fps), 2)
        if shared_fraction(fps[a], fps[b]) > 0.0
    }
    assert found == KNOWN_OVERLAPS
