"""The indexer on fixture folders, and the group-disjoint split."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leukoscope.core.synthetic import make_smear
from leukoscope_tools.data.photos import (
    EXCLUDED,
    LEUKEMIA,
    NORMAL,
    SPLITS,
    Row,
    build_table,
    parse_table,
    read_table,
    split_groups,
    table_bytes,
    write_table,
)


def _write(path: Path, rgb: np.ndarray, quality: int = 92) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(
        str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sources laid out like kaggle-all and ALL-IDB1, with copies planted on purpose."""
    root = tmp_path_factory.mktemp("data")
    seed = 100
    for cls, blasts, n in (("benign", 0, 6), ("early", 3, 4), ("pro", 4, 4)):
        for i in range(n):
            smear = make_smear(224, 224, n_wbc=2, n_blasts=blasts, px_per_um=2.0, seed=seed)
            seed += 1
            _write(root / "clinic" / cls / f"{cls}-{i:03d}.jpg", smear.image)
    pro0 = (root / "clinic/pro/pro-000.jpg").read_bytes()
    # An exact copy under another name, and a re-encoded, slightly brighter near copy.
    (root / "clinic/pro/pro-copy.jpg").write_bytes(pro0)
    early0 = make_smear(224, 224, n_wbc=2, n_blasts=3, px_per_um=2.0, seed=106).image
    near = np.clip(early0.astype(np.int16) + 4, 0, 255).astype(np.uint8)
    _write(root / "clinic/early/early-near.jpg", near, quality=70)
    # ALL-IDB style: labels from names, blast centroids from .xyc files.
    for num, label in ((1, 1), (2, 1), (3, 0), (4, 0)):
        smear = make_smear(400, 300, n_wbc=3, n_blasts=3 * label, seed=500 + num)
        _write(
            root / "idb" / ("all" if label else "normal") / f"Im{num:03d}_{label}.jpg", smear.image
        )
        lines = "".join(f"{c.x:.0f} {c.y:.0f}\n" for c in smear.of_kind("blast"))
        (root / "idb" / "xyc").mkdir(parents=True, exist_ok=True)
        (root / "idb" / "xyc" / f"Im{num:03d}_{label}.xyc").write_text(lines)
    # Unlabelled photos must be skipped, not called normal.
    _write(root / "clinic" / "unlabelled" / "x.jpg", make_smear(100, 100, seed=9).image)
    return root


def test_index_label_maps_names_and_duplicates(data_root: Path) -> None:
    rows, summary = build_table(data_root, ["clinic", "idb"], seed=1)
    by_path = {r.path: r for r in rows}
    assert "clinic/unlabelled/x.jpg" not in by_path
    assert summary["skipped"] == 1
    assert by_path["clinic/benign/benign-000.jpg"].label == NORMAL
    assert by_path["clinic/early/early-001.jpg"].label == LEUKEMIA
    assert by_path["clinic/pro/pro-002.jpg"].label == LEUKEMIA
    assert by_path["idb/all/Im001_1.jpg"].label == LEUKEMIA
    assert by_path["idb/normal/Im004_0.jpg"].label == NORMAL
    assert by_path["idb/all/Im002_1.jpg"].blasts == 3
    assert by_path["idb/normal/Im003_0.jpg"].blasts == 0
    assert by_path["clinic/benign/benign-000.jpg"].blasts == -1
    assert by_path["idb/all/Im001_1.jpg"].camera == "400x300"
    # The exact copy is dropped and grouped with its original.
    copy, orig = by_path["clinic/pro/pro-copy.jpg"], by_path["clinic/pro/pro-000.jpg"]
    assert copy.split == EXCLUDED and "pro-000" in copy.note
    assert orig.split in SPLITS and copy.group == orig.group
    assert summary["exact_duplicates_dropped"] == 1
    # The near copy shares a group, hence a split, with its original.
    near, early0 = by_path["clinic/early/early-near.jpg"], by_path["clinic/early/early-000.jpg"]
    assert near.sha256 != early0.sha256
    assert near.group == early0.group and near.split == early0.split
    assert ("clinic/early/early-000.jpg", "clinic/early/early-near.jpg") in [
        tuple(sorted(p)) for p in summary["near_duplicate_pairs"]
    ]
    # Distinct synthetic fields are not mistaken for duplicates.
    assert summary["groups"] == len(rows) - 2


def test_table_round_trip_and_reproducible_split(data_root: Path, tmp_path: Path) -> None:
    rows, _ = build_table(data_root, ["clinic", "idb"], seed=3)
    again, _ = build_table(data_root, ["clinic", "idb"], seed=3)
    assert [r.split for r in rows] == [r.split for r in again]
    write_table(rows, tmp_path / "split.csv")
    assert read_table(tmp_path / "split.csv") == rows
    assert parse_table(table_bytes(rows).decode()) == rows


def _rows(spec: list[tuple[int, int, int]]) -> list[Row]:
    return [
        Row(
            path=f"s{src}/{i}.jpg",
            source=f"s{src}",
            label=LEUKEMIA if lab else NORMAL,
            cls="x",
            sha256=f"{i:064x}",
            width=1,
            height=1,
            dhash="0" * 16,
            blasts=-1,
            group=f"g{src}-{grp}",
        )
        for i, (grp, lab, src) in enumerate(spec)
    ]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 1), st.integers(0, 2)),
        min_size=1,
        max_size=200,
    ),
    st.integers(0, 2**31),
)
def test_no_group_spans_two_splits(spec: list[tuple[int, int, int]], seed: int) -> None:
    rows = split_groups(_rows(spec), seed)
    splits_of_group: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        assert row.split in SPLITS
        splits_of_group[row.group].add(row.split)
    assert all(len(s) == 1 for s in splits_of_group.values())


def test_split_is_stratified_and_near_60_20_20() -> None:
    # 300 singleton groups per (source, label) cell: each cell splits 180/60/60.
    spec = [(i, lab, src) for src in range(2) for lab in range(2) for i in range(300)]
    rows = split_groups(_rows(spec), seed=5)
    for src in ("s0", "s1"):
        for label in (LEUKEMIA, NORMAL):
            cell = [r.split for r in rows if r.source == src and r.label == label]
            assert [cell.count(s) for s in SPLITS] == [180, 60, 60]
    other = split_groups(_rows(spec), seed=6)
    assert [r.split for r in rows] != [r.split for r in other]


@pytest.mark.host  # through `leukoscope-tools`, whose commands import TensorFlow
@pytest.mark.parametrize("make", ["missing", "empty", "unlabelled"])
def test_dataset_with_no_images_is_an_error_and_keeps_the_old_table(
    tmp_path: Path, make: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from leukoscope_tools.cli import main

    root = tmp_path / "data"
    if make != "missing":
        (root / "clinic").mkdir(parents=True)
    if make == "unlabelled":
        _write(root / "clinic" / "mystery" / "a.png", make_smear(320, 240, seed=1).image)
    table = tmp_path / "split.csv"
    table.write_text("the table a long run depends on\n")
    argv = ["dataset", str(root), "--sources", "clinic", "--out", str(table)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(root) in err
    assert table.read_text() == "the table a long run depends on\n"
    assert not table.with_suffix(".json").exists()
