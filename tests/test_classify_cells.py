"""`leukoscope classify-cells`: one white cell per image, classified at the bundle's cut."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from leukoscope.analysis.cells import CellSettings
from leukoscope.analysis.single_cell import centre_cell, image_scale
from leukoscope.cli.main import main
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import load_bundle
from tests.conftest import SHIPPED_BUNDLE

PX_PER_UM = 4.0
PRE_SETTINGS = CellSettings()


def _cut_out(kind: str, seed: int, side_um: float = 36.0) -> np.ndarray:
    """A synthetic smear's cell of `kind`, cut out with its neighbours as a lab would."""
    smear = make_smear(
        480,
        480,
        n_wbc=1 if kind == "wbc" else 0,
        n_blasts=1 if kind == "blast" else 0,
        px_per_um=PX_PER_UM,
        seed=seed,
    )
    cell = smear.of_kind(kind)[0]
    half = round(side_um * PX_PER_UM / 2)
    padded = cv2.copyMakeBorder(smear.image, half, half, half, half, cv2.BORDER_REFLECT)
    x, y = round(cell.x) + half, round(cell.y) + half
    return np.ascontiguousarray(padded[y - half : y + half, x - half : x + half])


@pytest.fixture(scope="module")
def cell_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cells")
    for i in range(4):
        for kind in ("wbc", "blast"):
            img = _cut_out(kind, seed=100 + i)
            cv2.imwrite(str(folder / f"{kind}{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (folder / "broken.png").write_bytes((folder / "wbc0.png").read_bytes()[:200])
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def test_centre_cell_finds_the_cut_out_nucleus_and_its_scale() -> None:
    img = _cut_out("blast", seed=3)
    bundle_pre = load_bundle(SHIPPED_BUNDLE).analyser.params
    cc = centre_cell(img, PRE_SETTINGS, bundle_pre, px_per_um=PX_PER_UM)
    h, w = img.shape[:2]
    assert cc.detected and cc.scale_source == "given"
    assert abs(cc.cell.x - w / 2) < 3 * PX_PER_UM and abs(cc.cell.y - h / 2) < 3 * PX_PER_UM
    assert cc.crop.shape == (128, 128, 3) and cc.crop.dtype == np.uint8


def test_scale_falls_back_to_the_crop_width_without_red_cells() -> None:
    blank = np.full((200, 300, 3), 235, np.uint8)
    s = image_scale(blank, 24.0)
    assert s.source == "image-width" and s.px_per_um == pytest.approx(200 / 24.0)
    assert image_scale(blank, 24.0, default_px_per_um=5.0).source == "default"
    assert image_scale(blank, 24.0, px_per_um=3.0).px_per_um == 3.0


def test_synthetic_blasts_score_above_synthetic_white_cells_and_bad_files_are_named(
    cell_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["classify-cells", str(cell_folder), "--bundle", str(SHIPPED_BUNDLE), "--json"]
    code = main([*argv, "--px-per-um", str(PX_PER_UM)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # two bad files
    by_name = {Path(r["file"]).name: r for r in rows}
    assert set(by_name) == {f"{k}{i}.png" for k in ("wbc", "blast") for i in range(4)} | {
        "broken.png",
        "empty.jpg",
    }
    assert "error" in by_name["broken.png"] and "error" in by_name["empty.jpg"]
    settings = load_bundle(SHIPPED_BUNDLE).manifest.cells
    assert settings is not None
    cut = settings.cell_cut
    blasts = [by_name[f"blast{i}.png"] for i in range(4)]
    normals = [by_name[f"wbc{i}.png"] for i in range(4)]
    for r in blasts + normals:
        assert set(r) >= {"file", "p_blast", "blast", "model", "model_version"}
        assert r["blast"] == (r["p_blast"] >= cut)
    assert min(r["p_blast"] for r in blasts) > max(r["p_blast"] for r in normals)
    # Every drawn blast is called a blast at the bundle's cut. Drawn mature cells are not
    # real ones: the shipped bundle (1.1.0) calls one of these four (wbc2, p 0.46 against
    # its cut of 0.42) a blast, though below every blast; no more than that passes.
    assert all(r["blast"] for r in blasts)
    assert sum(r["blast"] for r in normals) <= 1


def test_text_output_says_when_the_scale_was_assumed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A cell cut tight, with no red cell to measure: taken as crop_um wide, and said so.
    img = _cut_out("blast", seed=5, side_um=24.0)
    path = tmp_path / "tight.png"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    code = main(["classify-cells", str(path), "--bundle", str(SHIPPED_BUNDLE)])
    out = capsys.readouterr().out
    assert code == 0
    assert "tight.png: " in out and "p_blast" in out
    assert "red cells" in out or "um wide" in out


def test_a_whole_field_bundle_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    whole = SHIPPED_BUNDLE.parent / "whole-field"
    code = main(["classify-cells", str(tmp_path), "--bundle", str(whole)])
    assert code == 2 and "cells bundle" in capsys.readouterr().err
