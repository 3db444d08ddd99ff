"""The pipeline's shortcuts for speed (issue 14) give the answers the long way gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leukoscope.analysis.detection import estimate_scale
from leukoscope.analysis.field_of_view import prepare_field
from leukoscope.core.synthetic import make_smear
from leukoscope.model.bundle import Bundle, load_bundle
from leukoscope.pipeline import Rig, analyse, check_halvings

PX_PER_UM = 8.0


@pytest.fixture(scope="module")
def smear() -> np.ndarray:
    # 2001 px wide: the halved copy drops a column, as an odd-sized photo's does.
    return make_smear(2001, 1500, seed=4, px_per_um=PX_PER_UM, n_wbc=6, n_blasts=3).image


@pytest.fixture(scope="module")
def bundle(session_cells_bundle: Path) -> Bundle:
    return load_bundle(session_cells_bundle)


def test_the_calibration_check_copy_is_halved_to_at_most_1400_px() -> None:
    assert check_halvings(2592, 1944) == 1  # the 5 MP stills: 1296 px
    assert check_halvings(4056, 3040) == 2  # the HQ camera's 12 MP: 1014 px
    assert check_halvings(1944, 2592) == 1
    assert check_halvings(1400, 1050) == 0 and check_halvings(1226, 652) == 0


def test_a_calibrated_rig_checks_its_scale_on_the_halved_photo(
    smear: np.ndarray, bundle: Bundle
) -> None:
    measured = estimate_scale(prepare_field(smear).rgb).px_per_um  # the 1400 px copy's
    assert measured == pytest.approx(PX_PER_UM, rel=0.05)
    for calibrated in (measured * 0.9, measured * 1.1):  # within the 15% tolerance
        result = analyse(smear, bundle, None, rig=Rig(px_per_um=calibrated))
        assert "scale-changed" not in result.retake_reasons
        assert result.cells is not None and result.cells.px_per_um == calibrated
    for calibrated in (measured * 0.8, measured * 1.25):  # a zoom or objective changed
        result = analyse(smear, bundle, None, rig=Rig(px_per_um=calibrated))
        assert result.retake_reasons == ["scale-changed"]


def test_without_a_calibration_the_scale_is_measured_as_before(
    smear: np.ndarray, bundle: Bundle
) -> None:
    result = analyse(smear, bundle, None)
    assert result.cells is not None and result.cells.scale_source == "red-cells"
    assert result.cells.px_per_um == estimate_scale(prepare_field(smear).rgb).px_per_um
