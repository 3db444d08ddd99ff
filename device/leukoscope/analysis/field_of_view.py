"""The illuminated field of a photo taken through an eyepiece, and its flat-field correction.

A camera held on an eyepiece sees the eyepiece's field stop: a bright disc of smear on a
dark surround, often cut by the frame's edges, dimmer towards its rim (vignetting) and
tinted by the lamp. Photos through a proper camera adapter fill the frame. Steps:

1. `find_field()`: on a small grey copy, pixels far darker than the field's bright glass
   are the surround (a stained nucleus absorbs at most about two thirds of the light; the
   surround passes almost none). No real surround: the whole frame is the field.
   Otherwise the largest lit region's edge, where it is not the frame's edge, is fitted
   with a circle (least squares, then refitted without the worst tenth of the points, so
   a cell touching the rim does not bend it).
2. `flat_field()`: the glass between cells should be one neutral colour everywhere. Its
   brightness per channel is fitted inside the field with a smooth surface (a quadratic
   in x and y), and each channel is divided by it, so vignetting and the lamp's colour
   go before anything measures colour; the surround is set to the glass colour, so later
   steps see no dark stain there. A blank-field reference photo, when the rig has one,
   is used instead of the fit.
3. `prepare_field()`: both, as the analysis runs them before anything measures colour or
   size. A frame with no stop, no reference and light even to within `EVEN_LIGHT` is
   left as it is (a camera adapter's photo: the white balance against the glass that
   detection does is all it needs), so dataset photos are analysed exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from leukoscope.analysis.preprocess import shrink_area

#: The grey copy the field is found on: its long side in pixels.
FIND_SIDE = 320
#: A pixel darker than this fraction of the bright glass is surround, not smear.
SURROUND_FRACTION = 0.25
#: Less surround than this share of the frame: no field stop, the whole frame is the field.
MIN_SURROUND = 0.005
#: A field stop's radius is at least this share of the frame's half-diagonal.
MIN_STOP_RADIUS = 0.3
#: The field's edge is taken this share of its radius inwards (the rim is dim and soft).
RIM_MARGIN = 0.04
#: Glass pixels: within this fraction of the brightest glass, and nearly colourless.
GLASS_FRACTION = 0.85
#: The level the glass is corrected to (8-bit).
GLASS_LEVEL = 235.0
#: Light whose brightest and dimmest glass inside the field differ by less than this
#: ratio is even enough: a uniform lamp colour is undone by detection's white balance.
EVEN_LIGHT = 1.12


@dataclass(frozen=True)
class FieldOfView:
    """The usable field: a disc (centre and radius in pixels) or the whole frame."""

    width: int
    height: int
    cx: float
    cy: float
    radius: float
    #: False when there is no field stop and the whole frame is the field.
    stop: bool

    @classmethod
    def whole(cls, width: int, height: int) -> FieldOfView:
        """The whole frame as the field."""
        return cls(width, height, width / 2, height / 2, float(np.hypot(width, height)) / 2, False)

    def mask(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """A bool mask of the field, at the photo's size or another (h, w) of the same frame."""
        h, w = (self.height, self.width) if shape is None else shape
        if not self.stop:
            return np.ones((h, w), bool)
        sx, sy = w / self.width, h / self.height
        out = np.zeros((h, w), np.uint8)
        # Drawn with 4 bits of sub-pixel precision: a filled circle is all a disc needs.
        centre = (round(self.cx * sx * 16 - 8), round(self.cy * sy * 16 - 8))
        axes = (max(0, round(self.radius * sx * 16)), max(0, round(self.radius * sy * 16)))
        cv2.ellipse(out, centre, axes, 0, 0, 360, (1,), thickness=-1, shift=4)
        return out.astype(bool)

    def contains(self, x: float, y: float, margin: float = 0.0) -> bool:
        """True when the point lies inside the field at least `margin` px from its edge."""
        if not self.stop:
            return margin <= x <= self.width - margin and margin <= y <= self.height - margin
        return float(np.hypot(x - self.cx, y - self.cy)) <= self.radius - margin

    @property
    def area_fraction(self) -> float:
        """The share of the frame the field covers."""
        return float(self.mask((min(self.height, 240), min(self.width, 320))).mean())

    @property
    def area_px(self) -> float:
        """The field's area in pixels of the photo (a disc cut by the frame counts its part)."""
        return self.area_fraction * self.width * self.height

    def shrunk(self, margin: float) -> FieldOfView:
        """The part of the field at least `margin` px inside a field stop's edge.

        The whole frame is returned as it is: a frame edge cuts no cell (crops there are
        padded with glass), a field stop's dark rim does.
        """
        if not self.stop or margin <= 0:
            return self
        return FieldOfView(
            self.width, self.height, self.cx, self.cy, max(0.0, self.radius - margin), True
        )


def _grey_small(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    scale = min(1.0, FIND_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Halved exactly first (shrink_area): a one-step fractional area resize of a 5 MP
    # still takes 25-30 ms, and the field's edge needs no more than this grey copy's pixels.
    small = shrink_area(rgb, size) if scale < 1.0 else rgb
    return cv2.cvtColor(np.ascontiguousarray(small[..., :3]), cv2.COLOR_RGB2GRAY), scale


def _fit_circle(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float]:
    """Least-squares circle (Kasa) through points: centre x, centre y, radius."""
    a = np.column_stack([xs, ys, np.ones_like(xs)])
    b = xs**2 + ys**2
    (c0, c1, c2), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = c0 / 2, c1 / 2
    return float(cx), float(cy), float(np.sqrt(max(c2 + cx**2 + cy**2, 0.0)))


def find_field(rgb: np.ndarray) -> FieldOfView:
    """The illuminated field of the photo (see the module's steps)."""
    h, w = rgb.shape[:2]
    grey, scale = _grey_small(rgb)
    bright = float(np.percentile(grey, 95))
    if bright < 10:
        return FieldOfView.whole(w, h)  # a black frame: exposure, not a field stop
    below = (grey < SURROUND_FRACTION * bright).astype(np.uint8)
    dark = cv2.morphologyEx(below, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if dark.mean() < MIN_SURROUND:
        return FieldOfView.whole(w, h)
    lit = (1 - dark).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=8)
    if n < 2:
        return FieldOfView.whole(w, h)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == biggest).astype(np.uint8)
    # Fill the region's holes (dark debris inside the field) before taking its edge.
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = max(contours, key=len)[:, 0, :].astype(np.float64)
    sh, sw = grey.shape
    inner = (
        (points[:, 0] > 1) & (points[:, 0] < sw - 2) & (points[:, 1] > 1) & (points[:, 1] < sh - 2)
    )
    if inner.sum() < 12:
        return FieldOfView.whole(w, h)
    xs, ys = points[inner, 0] + 0.5, points[inner, 1] + 0.5
    cx, cy, r = _fit_circle(xs, ys)
    resid = np.abs(np.hypot(xs - cx, ys - cy) - r)
    keep = resid <= np.percentile(resid, 90)
    if keep.sum() >= 12:
        cx, cy, r = _fit_circle(xs[keep], ys[keep])
    # A field stop is a large disc, lit inside and dark outside. Dark stain in a dense
    # field (the 1712x1368 ALL-IDB1 photos) can leave a lit "region" whose edge is
    # anything but that: then there is no stop.
    # A stop's centre is in the photo (the camera looks down the eyepiece): an arc that
    # fits a circle centred outside is the edge of something else, such as a dark band
    # of a damaged frame (the fault campaign's bit-flipped JPEGs).
    if not (0 <= cx <= sw and 0 <= cy <= sh):
        return FieldOfView.whole(w, h)
    yy, xx = np.mgrid[0:sh, 0:sw]
    disc = np.hypot(xx + 0.5 - cx, yy + 0.5 - cy) <= r
    outside_dark = float(dark[~disc].mean()) if (~disc).any() else 0.0
    if r < MIN_STOP_RADIUS * np.hypot(sw, sh) / 2 or dark[disc].mean() > 0.05 or outside_dark < 0.8:
        return FieldOfView.whole(w, h)
    r *= 1.0 - RIM_MARGIN
    return FieldOfView(w, h, cx / scale, cy / scale, r / scale, True)


def _design(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys])


def flat_field(
    rgb: np.ndarray, fov: FieldOfView, reference: np.ndarray | None = None
) -> np.ndarray:
    """The photo with vignetting and the lamp's colour divided out (uint8 RGB).

    Args:
        rgb: the photo.
        fov: its field (from `find_field`); outside it the glass colour is filled in.
        reference: an optional blank-field photo of the same rig (no smear), used as
            the illumination instead of the surface fitted to the glass.
    """
    h, w = rgb.shape[:2]
    img = np.ascontiguousarray(rgb[..., :3])
    inside = fov.mask()
    if reference is not None:
        if reference.shape[:2] != (h, w):
            reference = cv2.resize(reference, (w, h), interpolation=cv2.INTER_AREA)
        ref = reference[..., :3].astype(np.float32)
        light = cv2.GaussianBlur(ref, (0, 0), 8)
        gain = GLASS_LEVEL / np.maximum(light, 1.0)
        # uint8 times float32 into float32 in one pass: the same products as converting
        # the photo to float32 first, without that 60 MB copy (5 MP).
        out = cv2.convertScaleAbs(cv2.multiply(img, gain, dtype=cv2.CV_32F))
    else:
        out = _apply_gain(img, GLASS_LEVEL / np.maximum(_fitted_light(img, inside), 1.0))
    if fov.stop:
        outside = (~inside).astype(np.uint8)
        cv2.copyTo(np.full_like(out, round(GLASS_LEVEL)), outside, out)
    return out


#: The coarse light grid is 1/_GRID of the photo's size; `_apply_gain` corrects
#: _GRID * _GRID_ROWS rows at a time.
_GRID = 8
_GRID_ROWS = 8


def _apply_gain(img: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """`img` times `coarse` resized to the photo by OpenCV's INTER_LINEAR, rounded to uint8.

    When the photo is exactly `_GRID` times the grid's height, it is done a band of rows
    at a time: each band's gain is resized from the grid rows around it (one more on
    each side), which puts every photo row at the same place between the same grid rows
    with the same weights as one resize of the whole grid, so the pixels are the same
    (tested), without the photo-sized float32 gain and product (60 MB each for 5 MP),
    whose allocation took longer than the arithmetic.
    """
    h, w = img.shape[:2]
    gh = coarse.shape[0]
    if h != _GRID * gh:
        gain = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
        return cv2.convertScaleAbs(cv2.multiply(img, gain, dtype=cv2.CV_32F))
    out = np.empty_like(img)
    for g0 in range(0, gh, _GRID_ROWS):
        lo, hi = max(0, g0 - 1), min(gh, g0 + _GRID_ROWS + 1)
        band = cv2.resize(coarse[lo:hi], (w, _GRID * (hi - lo)), interpolation=cv2.INTER_LINEAR)
        top = _GRID * (g0 - lo)
        rows = slice(_GRID * g0, _GRID * min(gh, g0 + _GRID_ROWS))
        gain = band[top : top + rows.stop - rows.start]
        out[rows] = cv2.convertScaleAbs(cv2.multiply(img[rows], gain, dtype=cv2.CV_32F))
    return out


@dataclass(frozen=True)
class PreparedField:
    """A photo ready for measuring: its field, and the photo flat-fielded when it needed it."""

    rgb: np.ndarray
    fov: FieldOfView
    #: True when vignetting and the lamp's colour were divided out (`flat_field`).
    corrected: bool


def prepare_field(rgb: np.ndarray, reference: np.ndarray | None = None) -> PreparedField:
    """Find the field and flat-field the photo when it has a stop, a reference or uneven light.

    Args:
        rgb: the photo, HxWx3 uint8.
        reference: the rig's blank-field photo, if it has one (any size; resized).
    """
    fov = find_field(rgb)
    if reference is None and not fov.stop:
        h, w = rgb.shape[:2]
        step = max(1, round(max(h, w) / 200))
        light = _fitted_light(
            np.ascontiguousarray(rgb[::step, ::step, :3]),
            fov.mask((len(range(0, h, step)), len(range(0, w, step)))),
        ).mean(axis=2)
        lo, hi = float(light.min()), float(light.max())
        if lo > 0 and hi / lo < EVEN_LIGHT:
            return PreparedField(rgb, fov, False)
    return PreparedField(flat_field(rgb, fov, reference), fov, True)


def _fitted_light(img: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per channel, a quadratic surface fitted to the glass inside the field, on a coarse grid
    (1/8 of the photo's size: the surface is smooth, resizing interpolates it)."""
    h, w = img.shape[:2]
    step = max(1, round(max(h, w) / 200))
    sub = img[::step, ::step]
    sub_in = inside[::step, ::step]
    lum = sub.mean(axis=2)
    chroma = sub.max(axis=2) - sub.min(axis=2)
    top = float(np.percentile(lum[sub_in], 95)) if sub_in.any() else 255.0
    glass = sub_in & (lum >= GLASS_FRACTION * top) & (chroma <= 0.25 * top)
    if glass.sum() < 50:
        glass = sub_in & (lum >= np.percentile(lum[sub_in], 75)) if sub_in.any() else sub_in
    yy, xx = np.nonzero(glass)
    # A few thousand glass points pin six coefficients; more only cost time.
    thin = max(1, yy.size // 5000)
    yy, xx = yy[::thin], xx[::thin]
    xs, ys = (xx * step) / w - 0.5, (yy * step) / h - 0.5
    a = _design(xs, ys)
    gh, gw = max(2, h // _GRID), max(2, w // _GRID)
    # The three channels in one solve of the normal equations (6x6: well conditioned on
    # coordinates within +-0.5).
    coef = np.linalg.solve(a.T @ a + 1e-9 * np.eye(6), a.T @ sub[yy, xx].astype(np.float64))
    # The surface on the grid, row terms and column terms apart (c0 + c2 y + c5 y^2, then
    # plus x (c1 + c4 y) + c3 x^2): the same quadratic as `_design` @ coef without a
    # (gh * gw) x 6 design matrix, which took most of this function's time.
    gx = ((np.arange(gw) + 0.5) / gw - 0.5)[None, :, None]
    gy = ((np.arange(gh) + 0.5) / gh - 0.5)[:, None, None]
    c = coef[:, None, None, :]
    surface = c[0] + c[2] * gy + c[5] * gy * gy + gx * (c[1] + c[4] * gy) + c[3] * gx * gx
    coarse: np.ndarray = surface.astype(np.float32)
    return coarse
