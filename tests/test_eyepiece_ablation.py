"""The robustness report's parts: one simulator effect taken away at a time, and AUCs over
the same photos."""

from __future__ import annotations

import numpy as np
import pytest

from leukoscope.core.synthetic import make_smear
from leukoscope_tools.data.eyepiece import EFFECTS, Eyepiece, simulate, without
from leukoscope_tools.evaluate.robustness import Outcome, format_report, summarise

RIG = Eyepiece(
    stop_radius=0.7, stop_dx=0.03, stop_dy=-0.02, vignetting=0.75, cast=(1.15, 1.0, 0.85),
    gamma=1.2, scale=0.8, blur_px=1.0, noise=3.0, jpeg_quality=80,
)  # fmt: skip


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to the simulator's one level of rounding (it works in float32)."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


@pytest.fixture(scope="module")
def smear() -> np.ndarray:
    return make_smear(400, 300, seed=5, px_per_um=2.0, n_wbc=2).image


def test_taking_every_effect_away_gives_the_photo_back(smear: np.ndarray) -> None:
    eye = RIG
    for effect in EFFECTS:
        eye = without(eye, effect)
    sim = simulate(smear, eye, np.random.default_rng(0))
    assert _same(sim.rgb, smear[..., :3])
    assert sim.scale == 1.0 and sim.radius == float("inf")


@pytest.mark.parametrize("effect", EFFECTS)
def test_taking_one_effect_away_changes_only_that(smear: np.ndarray, effect: str) -> None:
    rest = [e for e in EFFECTS if e != effect]
    only = RIG
    for e in rest:
        only = without(only, e)
    # With only `effect` left, the photo differs from the original; taking it away too
    # gives the original back, so each effect is what `without` says it removes.
    sim = simulate(smear, only, np.random.default_rng(0))
    assert not _same(sim.rgb, smear[..., :3])
    back = simulate(smear, without(only, effect), np.random.default_rng(0))
    assert _same(back.rgb, smear[..., :3])


def test_without_the_stop_the_vignetting_stays_and_no_stop_is_reported(
    smear: np.ndarray,
) -> None:
    eye = without(without(without(RIG, "noise"), "jpeg"), "scale")
    dark = simulate(smear, eye, np.random.default_rng(0))
    open_ = simulate(smear, without(eye, "stop"), np.random.default_rng(0))
    assert np.isfinite(dark.radius) and open_.radius == float("inf")
    assert dark.rgb[0, 0].max() < 15  # the corner is behind the stop
    assert open_.rgb[0, 0].max() > 60  # the same corner, vignetted but lit
    centre = (slice(140, 160), slice(190, 210))
    assert np.array_equal(dark.rgb[centre], open_.rgb[centre])


def test_an_unknown_effect_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="blur"):
        without(RIG, "fog")


def _o(i: int, positive: bool, score: float | None, source: str = "a") -> Outcome:
    return Outcome(f"p{i}", source, positive, score, () if score is not None else ("x",))


def test_the_same_photos_auc_leaves_out_those_refused_under_either_condition() -> None:
    # As taken, photo 0 (a positive scored low) is the only misranked one; through the
    # simulator it is refused, and photo 3 is newly misranked.
    base = [_o(0, True, 0.1), _o(1, True, 0.9), _o(2, False, 0.2), _o(3, False, 0.3)]
    cond = [_o(0, True, None), _o(1, True, 0.8), _o(2, False, 0.2), _o(3, False, 0.95)]
    s = summarise(cond, base)["overall"]
    assert s["decided"] == 3 and s["refused_any"] == 1 and s["both_decided"] == 3
    assert s["auc"] == pytest.approx(0.5)
    assert s["auc_same_photos_as_taken"] == pytest.approx(1.0)
    assert s["auc_same_photos"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same list"):
        summarise(cond[::-1], base)


def test_the_report_names_each_effect_and_the_share_it_recovers() -> None:
    base = [_o(0, True, 0.9), _o(1, True, 0.8), _o(2, False, 0.2), _o(3, False, 0.3)]
    worse = [_o(0, True, 0.9), _o(1, True, 0.25), _o(2, False, 0.2), _o(3, False, 0.3)]
    results = {
        "as taken": summarise(base),
        "realistic": summarise(worse, base),
        "realistic without blur": summarise(base, base),
        "realistic without noise": summarise(worse, base),
    }
    header = {"command": "c", "bundle": "b", "split": "s", "load": "0", "minutes": "1"}
    text = format_report(results, {"cam": 2.0}, header)
    assert "| realistic without blur | 4 | 0 | +0.000 | +0.000 | 100% |" in text
    assert "| realistic without noise | 4 | 0 | -0.250 | -0.250 | 0% |" in text
    assert "over the same photos (4 decided both" in text and "NOT met" in text
