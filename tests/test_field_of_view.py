"""Eyepiece photos: the simulator, the field stop found, vignetting and lamp colour undone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from leukoscope.analysis.field_of_view import (
    GLASS_LEVEL,
    RIM_MARGIN,
    FieldOfView,
    _fitted_light,
    find_field,
    flat_field,
)
from leukoscope.core.synthetic import make_smear
from leukoscope_tools.data.eyepiece import SEVERITIES, Eyepiece, draw, simulate


@pytest.fixture(scope="module")
def smear() -> np.ndarray:
    return make_smear(1296, 972, seed=3, px_per_um=2.95, n_wbc=4).image


def _glass(rgb: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Mean colour of the brightest (glass) pixels among `where`."""
    px = rgb[where].astype(np.float32)
    lum = px.mean(axis=1)
    return px[lum >= np.percentile(lum, 70)].mean(axis=0)


@pytest.mark.parametrize("severity", sorted(SEVERITIES))
def test_the_field_stop_is_found_where_the_simulator_put_it(
    smear: np.ndarray, severity: str
) -> None:
    rng = np.random.default_rng(7)
    for _ in range(4):
        sim = simulate(smear, draw(severity, rng), rng)
        h, w = sim.rgb.shape[:2]
        fov = find_field(sim.rgb)
        if not np.isfinite(sim.radius):
            assert not fov.stop
            continue
        true = FieldOfView(w, h, sim.cx, sim.cy, sim.radius, True)
        if true.area_fraction > 0.99:
            continue  # a stop that only darkens the corners may be taken as the whole frame
        assert fov.stop
        assert abs(fov.cx - sim.cx) < 0.01 * w and abs(fov.cy - sim.cy) < 0.01 * w
        assert fov.radius == pytest.approx(sim.radius * (1 - RIM_MARGIN), rel=0.03)


def test_a_frame_filled_with_smear_is_the_whole_field(smear: np.ndarray) -> None:
    fov = find_field(smear)
    assert not fov.stop
    assert fov.mask().all()
    assert fov.contains(10, 10, margin=5) and not fov.contains(3, 10, margin=5)


def test_a_black_frame_is_an_exposure_problem_not_a_field_stop() -> None:
    fov = find_field(np.zeros((480, 640, 3), np.uint8))
    assert not fov.stop


def test_a_cell_cut_by_the_stop_lies_outside_the_usable_field() -> None:
    fov = FieldOfView(640, 480, 320.0, 240.0, 200.0, True)
    assert fov.contains(320, 240, margin=30)
    assert not fov.contains(320 + 190, 240, margin=30)  # its crop would cross the edge
    mask = fov.mask()
    assert mask[240, 320] and not mask[5, 5]
    assert fov.area_fraction == pytest.approx(np.pi * 200**2 / (640 * 480), rel=0.02)


def test_flat_field_undoes_vignetting_and_the_lamps_colour(smear: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    eye = Eyepiece(
        stop_radius=0.8, stop_dx=0.02, stop_dy=-0.01, vignetting=0.65,
        cast=(1.25, 1.0, 0.8), gamma=1.0, scale=1.0, blur_px=0.0, noise=1.0,
        jpeg_quality=90,
    )  # fmt: skip
    sim = simulate(smear, eye, rng)
    fov = find_field(sim.rgb)
    h, w = sim.rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - fov.cx, yy - fov.cy) / fov.radius
    centre, rim = r < 0.4, (r > 0.75) & (r < 0.95)
    before = _glass(sim.rgb, centre)[1] / _glass(sim.rgb, rim)[1]
    assert before > 1.25  # the simulated vignetting is there to undo
    out = flat_field(sim.rgb, fov)
    after = _glass(out, centre)[1] / _glass(out, rim)[1]
    assert after == pytest.approx(1.0, abs=0.04)
    glass = _glass(out, centre)
    assert glass[0] / glass[1] == pytest.approx(1.0, abs=0.04)  # the red cast is gone
    assert glass[2] / glass[1] == pytest.approx(1.0, abs=0.04)
    assert (out[~fov.mask()] == round(GLASS_LEVEL)).all()  # no dark surround left


def test_a_blank_field_reference_replaces_the_fitted_light(smear: np.ndarray) -> None:
    h, w = smear.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    light = 1.0 - 0.4 * ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w * w / 4)
    lamp = np.asarray([1.0, 0.9, 0.7])
    photo = np.clip(smear * light[..., None] * lamp, 0, 255).astype(np.uint8)
    blank = np.clip(245 * light[..., None] * lamp, 0, 255).astype(np.uint8)
    out = flat_field(photo, FieldOfView.whole(w, h), reference=blank)
    assert out.shape == photo.shape
    corner = _glass(out, (xx < w / 6) & (yy < h / 6))
    middle = _glass(out, np.hypot(xx - w / 2, yy - h / 2) < h / 6)
    assert corner == pytest.approx(middle, rel=0.05)


def test_the_fitted_light_is_divided_out_to_the_glass_level_everywhere() -> None:
    """A blank field under a lopsided quadratic light (every term, each channel its own):
    the fitted surface, evaluated over the whole photo, leaves it one even grey."""
    h, w = 486, 648
    yy, xx = np.mgrid[0:h, 0:w]
    x, y = (xx + 0.5) / w - 0.5, (yy + 0.5) / h - 0.5
    light = 1.0 + 0.15 * x - 0.1 * y - 0.3 * x * x + 0.2 * x * y - 0.4 * y * y
    lamp = np.asarray([230.0, 215.0, 190.0])
    photo = np.clip(light[..., None] * lamp, 0, 255).round().astype(np.uint8)
    err = np.abs(flat_field(photo, FieldOfView.whole(w, h)).astype(int) - round(GLASS_LEVEL))
    assert err.mean() < 1.0 and err[8:-8, 8:-8].max() <= 3  # the coarse grid's edge: 4 px


@pytest.mark.parametrize("height", [968, 971])  # 8 x 121 rows: band by band; else whole
def test_the_gain_applied_band_by_band_gives_the_pixels_of_one_whole_resize(
    smear: np.ndarray, height: int
) -> None:
    img = np.ascontiguousarray(
        (smear[:height] * np.linspace(0.7, 1.0, smear.shape[1])[None, :, None]).astype(np.uint8)
    )
    h, w = img.shape[:2]
    fov = FieldOfView(w, h, w / 2, h / 2, 0.45 * h, True)
    light = _fitted_light(img, fov.mask())
    gain = cv2.resize(GLASS_LEVEL / np.maximum(light, 1.0), (w, h), interpolation=cv2.INTER_LINEAR)
    expected = cv2.convertScaleAbs(img.astype(np.float32) * gain)
    expected[~fov.mask()] = round(GLASS_LEVEL)
    assert np.array_equal(flat_field(img, fov), expected)


def test_an_unknown_severity_is_refused() -> None:
    with pytest.raises(ValueError, match="severity must be one of"):
        draw("extreme", np.random.default_rng(0))


def test_an_arc_centred_outside_the_photo_is_not_a_field_stop() -> None:
    """A dark band whose edge is a wide arc (its circle centred far above the frame, as a
    bit-flipped JPEG gave) was taken for a stop, and the focus window, centred on it, was
    empty: `leukoscope classify` and the daemon died on a cv2 error (issue 17's campaign).
    """
    from leukoscope.analysis.quality import assess

    rgb = make_smear(640, 480, seed=5, px_per_um=4.0, n_wbc=3).image.copy()
    yy, xx = np.mgrid[0:480, 0:640]
    rgb[np.hypot(xx + 0.5 - 320, yy + 0.5 + 2000) > 2200] = 8  # the top ~190 rows dark
    fov = find_field(rgb)
    assert fov.stop is False and (fov.cx, fov.cy) == (320, 240)
    sharpness = assess(rgb, fov=fov, px_per_um=4.0).metrics.sharpness
    assert sharpness is not None and np.isfinite(sharpness)
