"""Cells bundles: the manifest's cells object, the dynamic-batch model, golden slide scores,
and `leukoscope classify` with per-cell results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from leukoscope.analysis.analysers import CellAnalyser, WholeFieldAnalyser
from leukoscope.analysis.cells import cell_batch
from leukoscope.analysis.detection import detect_white_cells
from leukoscope.analysis.quality import WORKING_LONG_SIDE
from leukoscope.cli.main import main
from leukoscope.core.errors import BundleError
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import parse_manifest, sha256_file
from leukoscope.pipeline import decode_size
from tests.test_cell_analysis import cells_manifest


def _edit_manifest(root: Path, edit: Any) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# --- the manifest's cells object (no model needed) ---------------------------------------


def test_a_valid_cells_manifest_parses_into_cell_settings() -> None:
    m = parse_manifest(cells_manifest())
    assert m.analysis_mode == "cells"
    assert m.cells is not None and m.cells.max_cells == 256 and m.cells.w_top_k == 4.0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["cells"].pop("k"), r"cells: missing key\(s\) k"),
        (lambda d: d["cells"].update(colour=1), r"cells: unknown key\(s\) colour"),
        (lambda d: d.pop("cells"), "cells: missing: a cells bundle needs its cells object"),
        (lambda d: d.update(cells=[1, 2]), "cells: must be an object"),
        (lambda d: d["cells"].update(k=2.5), r"cells.k: must be an integer in 1..100"),
        (lambda d: d["cells"].update(crop_um="24"), "cells.crop_um: must be a number"),
        (lambda d: d["cells"].update(cell_cut=1.5), r"cells.cell_cut: must be in 0.0..1.0"),
        (lambda d: d["cells"].update(bias=float("nan")), r"cells.bias: must be in"),
        (
            lambda d: d["cells"].update(min_cells=9, max_cells=8),
            "cells: need 1 <= min_cells <= max_cells",
        ),
        (
            lambda d: d["preprocess"].update(resize=[128, 128]),
            "preprocess.resize: must equal the input size 64x64 in cells mode",
        ),
    ],
)
def test_cells_object_errors_name_the_key(edit: Any, message: str) -> None:
    raw = cells_manifest()
    edit(raw)
    with pytest.raises(BundleError, match=message):
        parse_manifest(raw)


def test_a_cells_object_is_refused_in_whole_field_mode() -> None:
    raw = cells_manifest(analysis_mode="whole-field")
    with pytest.raises(BundleError, match="cells: only a cells bundle has a cells object"):
        parse_manifest(raw)
    raw.pop("cells")
    assert parse_manifest(raw).cells is None


# --- a real (tiny) cells bundle ------------------------------------------------------------


def test_a_cells_bundle_loads_with_a_dynamic_batch(session_cells_bundle: Path) -> None:
    bundle = load_bundle(session_cells_bundle, num_threads=2)
    assert bundle.manifest.analysis_mode == "cells"
    assert bundle.classifier.dynamic_batch
    assert bundle.classifier.input_shape == (1, 64, 64, 3)


def test_each_analysis_mode_loads_its_own_analyser(
    session_bundle: Path, session_cells_bundle: Path
) -> None:
    whole = load_bundle(session_bundle)
    cells = load_bundle(session_cells_bundle)
    assert isinstance(whole.analyser, WholeFieldAnalyser)
    assert isinstance(cells.analyser, CellAnalyser)
    # Whole-field stills decode no smaller than the gate's working copy; cells at full size.
    w, h = whole.manifest.preprocess.resize
    assert decode_size(whole) == (max(w, WORKING_LONG_SIDE), max(h, WORKING_LONG_SIDE))
    assert decode_size(cells) is None


def test_predict_batch_equals_predict_crop_by_crop(session_cells_bundle: Path) -> None:
    bundle = load_bundle(session_cells_bundle)
    clf = bundle.classifier
    smear = make_smear(640, 480, n_wbc=4, n_blasts=4, px_per_um=4.0, seed=31)
    det = detect_white_cells(smear.image)
    assert bundle.manifest.cells is not None
    x = cell_batch(smear.image, det.cells, det, bundle.manifest.cells, bundle.manifest.preprocess)
    assert len(x) >= 6
    one_by_one = np.stack([clf.predict(c) for c in x])
    # Batches of changing sizes (the tensor is resized each time) give the same outputs.
    for n in (len(x), 3, len(x), 1):
        np.testing.assert_array_equal(clf.predict_batch(x[:n]), one_by_one[:n])
    empty = clf.predict_batch(x[:0])
    assert empty.shape == (0, clf.num_outputs) and empty.dtype == np.float32
    with pytest.raises(ValueError, match="batch shape"):
        clf.predict_batch(x[0])


def test_a_batch_of_one_model_refuses_a_batch(session_bundle: Path) -> None:
    clf = load_bundle(session_bundle).classifier
    assert not clf.dynamic_batch
    x = np.zeros((3, *clf.input_shape[1:]), np.float32)
    with pytest.raises(ValueError, match="fixed batch of 1: it cannot classify 3 inputs"):
        clf.predict_batch(x)
    assert clf.predict_batch(x[:1]).shape == (1, clf.num_outputs)


def test_golden_mismatch_is_refused_in_cells_mode(cells_bundle_copy: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        case = d["golden"]["cases"][1]
        case["p_leukemia"] = round(min(1.0, case["p_leukemia"] + 0.1), 6)

    _edit_manifest(cells_bundle_copy, edit)
    with pytest.raises(BundleError, match="golden mismatch on golden/01-.*expected"):
        load_bundle(cells_bundle_copy)


def test_a_golden_smear_without_white_cells_is_refused(cells_bundle_copy: Path) -> None:
    name = json.loads((cells_bundle_copy / "manifest.json").read_text())["golden"]["cases"][0]
    rel = name["file"]
    empty = make_smear(400, 300, n_wbc=0, px_per_um=4.0, seed=1).image
    cv2.imwrite(str(cells_bundle_copy / rel), cv2.cvtColor(empty, cv2.COLOR_RGB2BGR))
    _edit_manifest(
        cells_bundle_copy, lambda d: d["files"].update({rel: sha256_file(cells_bundle_copy / rel)})
    )
    with pytest.raises(BundleError, match="cell analysis asks for a retake \\(no-white-cells\\)"):
        load_bundle(cells_bundle_copy)


def test_a_fixed_batch_model_is_refused_in_cells_mode(
    cells_bundle_copy: Path, session_bundle: Path
) -> None:
    # The whole-field test model has the same 64x64 input, but a batch of 1.
    model = cells_bundle_copy / "model.tflite"
    model.write_bytes((session_bundle / "model.tflite").read_bytes())
    _edit_manifest(
        cells_bundle_copy, lambda d: d["files"].update({"model.tflite": sha256_file(model)})
    )
    with pytest.raises(BundleError, match="cells bundle's model needs a dynamic batch"):
        load_bundle(cells_bundle_copy)


# --- leukoscope classify --------------------------------------------------------------------


@pytest.fixture
def smears(tmp_path: Path) -> Path:
    folder = tmp_path / "smears"
    folder.mkdir()
    for i, (wbc, blasts) in enumerate([(3, 0), (2, 3), (0, 0)]):
        img = make_smear(640, 480, n_wbc=wbc, n_blasts=blasts, px_per_um=4.0, seed=40 + i).image
        cv2.imwrite(str(folder / f"smear{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return folder


def test_classify_json_carries_the_cells_with_boxes_inside_the_image(
    session_cells_bundle: Path, smears: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["classify", str(smears), "--bundle", str(session_cells_bundle), "--json"])
    rows = {Path(r["file"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert code == 0
    for name, n_cells in (("smear0.png", 3), ("smear1.png", 5)):
        row = rows[name]
        cells = row["cells"]
        assert row["verdict"] != "retake" and row["p_leukemia"] == cells["score"]
        assert cells["image_size"] == [640, 480] and cells["scale_source"] == "red-cells"
        assert cells["n_found"] == cells["n_classified"] == len(cells["cells"]) == n_cells
        assert cells["n_blasts"] == sum(c["blast"] for c in cells["cells"])
        for c in cells["cells"]:
            x0, y0, x1, y1 = c["box"]
            assert all(isinstance(v, int) for v in c["box"])
            assert 0 <= x0 < c["x"] < x1 <= 640 and 0 <= y0 < c["y"] < y1 <= 480
            assert 0.0 <= c["p_blast"] <= 1.0 and c["blast"] == (c["p_blast"] >= cells["cell_cut"])
    empty = rows["smear2.png"]
    assert empty["verdict"] == "retake" and empty["retake_reasons"] == ["no-white-cells"]
    assert empty["cells"]["n_found"] == 0 and empty["cells"]["cells"] == []


def test_classify_text_shows_the_cell_counts(
    session_cells_bundle: Path, smears: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["classify", str(smears), "--bundle", str(session_cells_bundle)])
    lines = capsys.readouterr().out.splitlines()
    assert "smear1.png: " in lines[1] and "5 white cells" in lines[1] and "blast" in lines[1]
    assert "smear2.png: retake (no white cells in this field" in lines[2]
    assert "0 white cells" in lines[2]


def test_classify_with_a_calibrated_scale(
    session_cells_bundle: Path, smears: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(smears / "smear0.png")
    args = ["classify", photo, "--bundle", str(session_cells_bundle), "--json"]
    assert main([*args, "--px-per-um", "4.5"]) == 0
    cells = json.loads(capsys.readouterr().out)["cells"]
    assert cells["scale_source"] == "given" and cells["px_per_um"] == 4.5
    with pytest.raises(SystemExit):
        main([*args, "--px-per-um", "-1"])


def test_classify_refuses_a_scale_for_a_whole_field_bundle(
    session_bundle: Path, smears: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(smears / "smear0.png")
    assert main(["classify", photo, "--bundle", str(session_bundle), "--px-per-um", "4"]) == 2
    assert "--px-per-um applies to cells bundles only" in capsys.readouterr().err
