"""tools/export.py for cells bundles: a dynamic-batch int8 model; write_cells_bundle checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from leukoscope.analysis.analysers import CellAnalyser
from leukoscope.analysis.cells import CellSettings
from leukoscope.analysis.decision import Thresholds
from leukoscope.analysis.preprocess import PreprocessParams
from leukoscope.model.bundle import load_bundle
from leukoscope.model.classifier import TFLiteClassifier
from tests.helpers import TINY_CELL_PARAMS

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def tiny_model() -> Any:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((64, 64, 3)),
            keras.layers.Conv2D(4, 5, strides=4, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


def _reps() -> list[np.ndarray]:
    return list(np.random.default_rng(0).random((8, 64, 64, 3), dtype=np.float32))


def _write(out: Path, tflite: bytes, params: PreprocessParams = TINY_CELL_PARAMS) -> Path:
    from leukoscope_tools.ship.export import write_cells_bundle

    return write_cells_bundle(
        out,
        tflite,
        name="export-test",
        version="1",
        architecture="tiny",
        params=params,
        cells=CellSettings(min_cells=2, max_cells=32, bias=-1.0, w_top_k=2.0, w_density=1.0),
        thresholds=Thresholds(0.3, 0.7),
        training={"seed": 1},
        metrics={"auc": 0.5},
    )


def test_a_dynamic_batch_export_classifies_a_batch_in_one_call(tiny_model: Any) -> None:
    from leukoscope_tools.ship.export import to_int8_tflite

    clf = TFLiteClassifier(to_int8_tflite(tiny_model, _reps(), batch=None))
    assert clf.dynamic_batch and clf.input_shape == (1, 64, 64, 3) and clf.input_dtype == "int8"
    x = np.stack(_reps())
    np.testing.assert_array_equal(clf.predict_batch(x), np.stack([clf.predict(v) for v in x]))
    fixed = TFLiteClassifier(to_int8_tflite(tiny_model, _reps()))
    assert not fixed.dynamic_batch


def test_write_cells_bundle_writes_a_bundle_that_loads(tiny_model: Any, tmp_path: Path) -> None:
    from leukoscope_tools.ship.export import to_int8_tflite

    root = _write(tmp_path / "cells", to_int8_tflite(tiny_model, _reps(), batch=None))
    raw = json.loads((root / "manifest.json").read_text())
    assert raw["analysis_mode"] == "cells" and raw["labels"] == ["other", "blast"]
    assert raw["cells"]["min_cells"] == 2 and raw["cells"]["w_top_k"] == 2.0
    assert raw["preprocess"]["resize"] == [64, 64] and raw["metrics"] == {"auc": 0.5}
    bundle = load_bundle(root)
    assert bundle.manifest.cells == CellSettings(
        min_cells=2, max_cells=32, bias=-1.0, w_top_k=2.0, w_density=1.0
    )
    # The recorded golden scores are what the device computes for those smears.
    analyser = bundle.analyser
    assert isinstance(analyser, CellAnalyser)
    for case in bundle.manifest.golden:
        result = analyser.analyse_cells(analyser.decode((root / case.file).read_bytes()))
        assert result.report is not None
        assert result.report.score == pytest.approx(case.p_leukemia, abs=1e-6)
    assert len({c.p_leukemia for c in bundle.manifest.golden}) > 1


def test_write_cells_bundle_refuses_a_fixed_batch_model(tiny_model: Any, tmp_path: Path) -> None:
    from leukoscope_tools.ship.export import to_int8_tflite

    with pytest.raises(ValueError, match="needs a dynamic batch"):
        _write(tmp_path / "cells", to_int8_tflite(tiny_model, _reps()))
    assert not (tmp_path / "cells").exists()


def test_write_cells_bundle_refuses_a_resize_other_than_the_input(
    tiny_model: Any, tmp_path: Path
) -> None:
    from leukoscope_tools.ship.export import to_int8_tflite

    params = PreprocessParams(resize=(128, 128), input_size=(64, 64))
    with pytest.raises(ValueError, match="resize == input size"):
        _write(tmp_path / "cells", to_int8_tflite(tiny_model, _reps(), batch=None), params)
