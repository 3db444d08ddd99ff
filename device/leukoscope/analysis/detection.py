"""White cells in a smear photo: colour normalisation, scale from red cells, nuclei, crops.

The pipeline, each step a pure function of numpy arrays (OpenCV only, no TensorFlow):

1. `optical_density()`: divide by the field's background colour (white balance), then
   take -log, so stain and lamp differences become differences of scale, not of hue.
2. `estimate_scale()`: pixels per micrometre from the diameter of isolated red cells
   (about 7.5 um in any smear), so every later size is in physical units.
3. `detect_white_cells()`: purple nuclei (they absorb green and pass blue; red cells
   absorb both), split where they touch (distance transform + watershed), kept by size.
4. `crop_cells()`: a square of the same physical size around each nucleus, resized to
   the classifier's input, whatever the microscope's magnification.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from leukoscope.core.errors import ImageError

logger = logging.getLogger(__name__)

#: A red cell's diameter in micrometres: the ruler every field carries.
RBC_DIAMETER_UM = 7.5
#: Detection runs at this scale (a red cell is 15 px across): cheap, and the same
#: kernels in pixels for every microscope.
DETECT_PX_PER_UM = 2.0
#: The fewest isolated red cells a scale is estimated from.
MIN_RED_CELLS = 5
#: Largest interquartile range of their diameters, relative to the median.
MAX_DIAMETER_SPREAD = 0.3
#: Smallest share of the stained (non-nucleus) area the measured red cells must cover.
MIN_COVER = 0.03
#: Scale estimation runs on a copy no larger than this on its long side.
SCALE_MAX_SIDE = 1400


@dataclass(frozen=True)
class DetectParams:
    """Detection thresholds; defaults chosen on the tuning slides (models/reports)."""

    #: Minimum "purple" optical density (OD green - OD blue) of a nucleus pixel.
    purple_min: float = 0.35
    #: Smallest nucleus kept (um^2); platelets are 2-4 um across (< 12 um^2).
    min_area_um2: float = 12.0
    #: Largest single nucleus (um^2); bigger segments are kept but flagged as clumps.
    max_area_um2: float = 400.0
    #: Pieces too small for a nucleus this close (um) are one cell's lobes.
    lobe_gap_um: float = 2.0
    #: Gaps closed inside one nucleus (lobes of a neutrophil, pale chromatin), um.
    close_um: float = 1.0
    #: A touching neighbour becomes its own cell when its core is at least this
    #: radius (um) deep (the cores are smaller than the nuclei they sit in).
    split_min_radius_um: float = 2.0
    #: Two cores closer than this (um) are one nucleus.
    split_min_distance_um: float = 5.0
    #: A core is stain above this fraction of the strongest stain nearby.
    core_fraction: float = 0.6


DEFAULT_PARAMS = DetectParams()


@dataclass(frozen=True)
class ScaleEstimate:
    """Pixels per micrometre of the input image, and how it was found."""

    px_per_um: float
    n_red_cells: int  # isolated red cells measured; 0 when the value was given or a default
    source: str  # "red-cells", "given" or "default"


@dataclass(frozen=True)
class WhiteCell:
    """One detected white-cell nucleus, in the input image's pixel coordinates."""

    x: float
    y: float
    area_um2: float
    radius_px: float  # radius of a disc of the nucleus's area
    clump: bool = False  # larger than any single nucleus: maybe several unsplit cells


@dataclass(frozen=True)
class Detection:
    """The white cells of one field and the scale they were measured at."""

    cells: list[WhiteCell]
    scale: ScaleEstimate
    background_rgb: tuple[float, float, float]


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"need an HxWx3 RGB image, got {getattr(rgb, 'shape', type(rgb))}")
    if rgb.dtype != np.uint8:
        raise ImageError(f"need uint8 RGB, got {rgb.dtype}")
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise ImageError(f"image too small for cell analysis: {rgb.shape[1]}x{rgb.shape[0]}")


def _shrink(rgb: np.ndarray, factor: float) -> np.ndarray:
    if factor >= 1.0:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def background_colour(rgb: np.ndarray) -> np.ndarray:
    """The empty glass's colour: the median of the brightest tenth of the pixels.

    A smear field always shows some glass between cells; cells only darken it.
    """
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 60_000)))
    sample = rgb[::step, ::step].reshape(-1, 3).astype(np.float32)
    brightness = sample[:, 0] + sample[:, 1] + sample[:, 2]
    bright = sample[brightness >= np.percentile(brightness, 90)]
    bg = np.median(bright, axis=0)
    return np.maximum(bg, 1.0).astype(np.float32)


def optical_density(rgb: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """Per-channel optical density (float32, >= 0) relative to the background colour.

    Dividing by the background is a white balance; the log makes a paler stain a
    smaller density of the same hue, so one threshold suits many labs.
    """
    bg = background_colour(rgb) if background is None else background
    levels = np.maximum(np.arange(256, dtype=np.float32), 0.5)[:, None]
    lut = -np.log(np.clip(levels / bg[None, :], 1e-3, 1.0)).astype(np.float32)
    od: np.ndarray = cv2.LUT(rgb, lut.reshape(1, 256, 3))
    return od


def purple(od: np.ndarray) -> np.ndarray:
    """Nucleus stain strength: green absorbed, blue passed (red cells absorb both)."""
    return od[:, :, 1] - od[:, :, 2]


def estimate_scale(rgb: np.ndarray, *, default: float | None = None) -> ScaleEstimate:
    """Pixels per micrometre from the median diameter of isolated, round red cells.

    Args:
        rgb: the field, HxWx3 uint8.
        default: returned (source "default") when too few red cells can be measured;
            without it that is an ImageError.
    """
    _check_rgb(rgb)
    factor = min(1.0, SCALE_MAX_SIDE / max(rgb.shape[:2]))
    small = _shrink(rgb, factor)
    bg = background_colour(small)
    # Green and blue suffice: red cells and nuclei both absorb green most.
    green, blue = (_channel_density(small[:, :, c], float(bg[c])) for c in (1, 2))
    diameters, stained_px = _isolated_red_cell_diameters(green, green - blue)
    problem = ""
    if len(diameters) < MIN_RED_CELLS:
        problem = f"only {len(diameters)} isolated red cells"
    else:
        q1, med, q3 = np.percentile(diameters, [25, 50, 75])
        # Red cells of one smear vary by about 10%; a wide spread means the blobs were
        # not single red cells (overlapping cells, ghosts, debris), and the ruler is bent.
        cover = len(diameters) * np.pi * (med / 2) ** 2 / max(1, stained_px)
        if (q3 - q1) / med > MAX_DIAMETER_SPREAD:
            problem = f"red-cell sizes too varied (interquartile range {(q3 - q1) / med:.0%})"
        elif cover < MIN_COVER:
            # A few small round specks in a field of overlapping cells are not its red cells.
            problem = f"the round blobs measured cover only {cover:.1%} of the red-cell area"
    if problem:
        if default is not None:
            return ScaleEstimate(default, 0, "default")
        raise ImageError(f"cannot estimate scale from red cells: {problem}")
    d = float(np.median(diameters)) / factor
    return ScaleEstimate(d / RBC_DIAMETER_UM, len(diameters), "red-cells")


def _channel_density(channel: np.ndarray, background: float) -> np.ndarray:
    levels = np.maximum(np.arange(256, dtype=np.float32), 0.5)
    lut = -np.log(np.clip(levels / background, 1e-3, 1.0)).astype(np.float32)
    out: np.ndarray = cv2.LUT(np.ascontiguousarray(channel), lut.reshape(1, 256))
    return out


def _isolated_red_cell_diameters(density: np.ndarray, stain: np.ndarray) -> tuple[np.ndarray, int]:
    """Equivalent diameters (px) of round, solid, single red-cell blobs, and the stained area.

    Args:
        density: optical density of the green channel.
        stain: the nucleus stain (`purple()`), to leave nuclei out.
    """
    not_nucleus = stain < 0.3
    faint = 0.08
    step = max(1, int(np.sqrt(density.size / 60_000)))
    d_s, keep_s = density[::step, ::step], not_nucleus[::step, ::step]
    sample = d_s[(d_s > faint) & keep_s]
    if sample.size == 0:
        return np.zeros(0), 0
    # Outline at half a red cell's typical density: blur moves it neither in nor out.
    level = max(faint, 0.5 * float(np.percentile(sample, 75)))
    mask: np.ndarray = ((density > level) & not_nucleus).astype(np.uint8)
    mask = cv2.morphologyEx(
        mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    )
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = []
    for cnt in contours:
        area = cv2.contourArea(cnt)  # the outline's area: the pale centre counts as filled
        if area < 20:
            continue
        perimeter = cv2.arcLength(cnt, True)
        hull = cv2.contourArea(cv2.convexHull(cnt))
        if perimeter <= 0 or hull <= 0:
            continue
        circularity = 4 * np.pi * area / perimeter**2
        if circularity > 0.8 and area / hull > 0.95:
            # The outline runs through the edge pixels' centres: add the half pixel outside.
            out.append(2.0 * np.sqrt((area + perimeter / 2) / np.pi))
    stained_px = int(np.count_nonzero(mask))
    if not out:
        return np.zeros(0), stained_px
    arr = np.asarray(out)
    # Clumps of two that happen to look round are rare but large: drop outliers.
    med = np.median(arr)
    return arr[(arr > 0.6 * med) & (arr < 1.5 * med)], stained_px


def _disc(radius_px: float) -> np.ndarray:
    k = max(1, 2 * round(radius_px) + 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def _square(radius_px: float) -> np.ndarray:
    # A square window: OpenCV runs it as two 1-D passes, many times faster than a disc.
    k = max(1, 2 * round(radius_px) + 1)
    return np.ones((k, k), np.uint8)


def detect_white_cells(
    rgb: np.ndarray,
    *,
    px_per_um: float | None = None,
    default_px_per_um: float | None = None,
    params: DetectParams = DEFAULT_PARAMS,
) -> Detection:
    """Find white-cell nuclei in a smear field.

    Args:
        rgb: HxWx3 uint8 RGB.
        px_per_um: the scale if known (a calibrated microscope); else estimated from red cells.
        default_px_per_um: the scale to assume when red cells cannot be measured;
            without it such a field raises ImageError.
        params: thresholds (defaults tuned on real smears).
    """
    _check_rgb(rgb)
    if px_per_um is not None:
        scale = ScaleEstimate(float(px_per_um), 0, "given")
    else:
        scale = estimate_scale(rgb, default=default_px_per_um)
    factor = min(1.0, DETECT_PX_PER_UM / scale.px_per_um)
    small = _shrink(rgb, factor)
    work_scale = scale.px_per_um * factor  # px per um in `small`
    bg = background_colour(rgb if factor == 1.0 else small)
    stain = cv2.GaussianBlur(purple(optical_density(small, bg)), (0, 0), 0.5 * work_scale)
    mask: np.ndarray = (stain > params.purple_min).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disc(0.5 * work_scale))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _disc(params.close_um * work_scale))
    mask = _fill_holes(mask)
    labels, depth = _split_touching(mask, stain, work_scale, params)
    labels = _join_lobes(labels, mask, work_scale, params)
    # Centres are weighted by depth into the cores: on the nucleus, not on a smudge or
    # pale cytoplasm that shares its segment.
    cells = _measure(labels, depth + 1e-3 * stain, work_scale, factor, params)
    return Detection(cells, scale, (float(bg[0]), float(bg[1]), float(bg[2])))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, (1,), thickness=cv2.FILLED)
    return filled


def _cores(
    stain: np.ndarray, mask: np.ndarray, work_scale: float, params: DetectParams
) -> np.ndarray:
    """The dense centres of nuclei: stain above a fraction of its local maximum.

    Where two nuclei touch, the rims between them are paler than either centre, so the
    cores come apart even where the outline of the pair is nearly convex.
    """
    local_max = cv2.dilate(stain, _square(params.split_min_distance_um * work_scale))
    core = (stain > params.core_fraction * local_max) & (mask > 0)
    return cv2.morphologyEx(core.astype(np.uint8), cv2.MORPH_OPEN, _disc(0.5 * work_scale))


def _split_touching(
    mask: np.ndarray, stain: np.ndarray, work_scale: float, params: DetectParams
) -> tuple[np.ndarray, np.ndarray]:
    """Label image (int32, 0 background): one label per nucleus, touching ones split.

    Also returns the depth into the cores (deepest at nucleus centres).

    Markers are the deepest points of the cores (the pale rims between touching nuclei
    separate them); each pixel of a blob then goes to its nearest marker.
    """
    n, comp = cv2.connectedComponents(mask, connectivity=8)
    if n <= 1:
        return comp.astype(np.int32), np.zeros(mask.shape, np.float32)
    dist = cv2.distanceTransform(_cores(stain, mask, work_scale, params), cv2.DIST_L2, 5)
    # Markers: core points that are the deepest within the minimum split distance.
    sep = params.split_min_distance_um * work_scale
    peaks = (dist >= cv2.dilate(dist, _square(sep))) & (
        dist >= params.split_min_radius_um * work_scale
    )
    # Every component keeps at least its deepest point as a core, even a small one.
    n_peaks, peak_lab = cv2.connectedComponents(peaks.astype(np.uint8), connectivity=8)
    markers = np.zeros(mask.shape, np.int32)
    has_core = np.zeros(n, bool)
    if n_peaks > 1:
        # Merge plateau pixels of one peak; label cores by component first hit.
        markers[peak_lab > 0] = peak_lab[peak_lab > 0]
        has_core[np.unique(comp[peak_lab > 0])] = True
    has_core[0] = True
    missing = np.flatnonzero(~has_core)
    if missing.size:
        # The deepest pixel of each component without a core: sort by component, then depth.
        inside = np.flatnonzero(comp.ravel())
        c_in = comp.ravel()[inside]
        order = np.lexsort((-dist.ravel()[inside], c_in))
        first = np.searchsorted(c_in[order], missing)
        markers.ravel()[inside[order[first]]] = np.arange(n_peaks, n_peaks + missing.size)
    next_label = n_peaks + missing.size
    if next_label - 1 == n - 1:
        # One core per component: nothing to split.
        return comp.astype(np.int32), dist
    return _nearest_marker(markers, comp), dist


def _nearest_marker(markers: np.ndarray, comp: np.ndarray) -> np.ndarray:
    """Give every pixel of a component the label of the nearest marker in that component.

    A Voronoi split: for round nuclei of similar size the cut falls where they touch.
    (OpenCV's watershed floods by local colour differences, so across a flat background
    one nucleus's marker can leak into a neighbouring component; this cannot.)
    """
    free = (markers == 0).astype(np.uint8)
    _, near = cv2.distanceTransformWithLabels(free, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    # `near` numbers the marker pixels themselves (1..K, in scan order); map them to markers.
    marker_pixels = markers > 0
    to_marker = np.zeros(int(near.max()) + 1, np.int32)
    to_marker[near[marker_pixels]] = markers[marker_pixels]
    out = to_marker[near]
    # A pixel closer to another component's marker goes to one of its own component's.
    comp_of_marker = np.zeros(int(markers.max()) + 1, np.int32)
    comp_of_marker[markers[marker_pixels]] = comp[marker_pixels]
    marker_of_comp = np.zeros(int(comp.max()) + 1, np.int32)
    marker_of_comp[comp[marker_pixels]] = markers[marker_pixels]
    stray = comp_of_marker[out] != comp
    out[stray] = marker_of_comp[comp[stray]]
    out[comp == 0] = 0
    return out


def _join_lobes(
    labels: np.ndarray, mask: np.ndarray, work_scale: float, params: DetectParams
) -> np.ndarray:
    """Give pieces too small to be a nucleus on their own one label per lobe cluster.

    A neutrophil's lobes can stain as separate blobs a micrometre apart; together they
    are one white cell. A lone platelet stays small and is dropped by the size filter.
    """
    areas = np.bincount(labels.ravel())
    min_px = params.min_area_um2 * work_scale**2
    # Judged per label first: most fields have no small piece, and then the photo-sized
    # lookup below (a few ms at 2 px/um of a 5 MP still) is not needed.
    is_small = areas < min_px
    is_small[0] = False
    if not is_small.any():
        return labels
    small = is_small[labels]
    near = cv2.dilate(mask, _disc(params.lobe_gap_um * work_scale / 2))
    _, groups = cv2.connectedComponents(near, connectivity=8)
    out = labels.copy()
    out[small] = int(labels.max()) + groups[small]
    return out


def _measure(
    labels: np.ndarray,
    weight_map: np.ndarray,
    work_scale: float,
    factor: float,
    params: DetectParams,
) -> list[WhiteCell]:
    """One WhiteCell per label big enough, centred on its `weight_map`-weighted centroid."""
    inside = np.flatnonzero(labels)
    if inside.size == 0:
        return []
    flat = labels.ravel()[inside]
    n = int(flat.max()) + 1
    weight = np.clip(weight_map.ravel()[inside], 1e-6, None).astype(np.float64)
    ys, xs = np.divmod(inside, labels.shape[1])
    areas = np.bincount(flat, minlength=n)
    w_sum = np.bincount(flat, weights=weight, minlength=n)
    x_sum = np.bincount(flat, weights=weight * xs, minlength=n)
    y_sum = np.bincount(flat, weights=weight * ys, minlength=n)
    px_area_um2 = 1.0 / work_scale**2
    cells = []
    for k in range(1, n):
        area_um2 = float(areas[k]) * px_area_um2
        if areas[k] == 0 or area_um2 < params.min_area_um2:
            continue
        # Pixel centres: (i + 0.5) in the small image maps to (i + 0.5) / factor in the input.
        x = (x_sum[k] / w_sum[k] + 0.5) / factor - 0.5
        y = (y_sum[k] / w_sum[k] + 0.5) / factor - 0.5
        radius = float(np.sqrt(areas[k] / np.pi)) / factor
        clump = area_um2 > params.max_area_um2
        cells.append(WhiteCell(float(x), float(y), area_um2, radius, clump=clump))
    return cells


def crop_cells(
    rgb: np.ndarray,
    cells: list[WhiteCell],
    px_per_um: float,
    *,
    size_um: float = 24.0,
    out_px: int = 128,
    background: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Square crops of `size_um` micrometres around each cell, resized to `out_px`.

    The same physical field of view at any magnification. Outside the image the crop
    is filled with the background colour (or edge pixels when none is given).

    Returns:
        N x out_px x out_px x 3 uint8 (N = 0 gives an empty array of that shape).
    """
    _check_rgb(rgb)
    out = np.empty((len(cells), out_px, out_px, 3), np.uint8)
    if not cells:
        return out
    side = max(2, round(size_um * px_per_um))
    half = side / 2.0
    h, w = rgb.shape[:2]
    fill = None if background is None else tuple(round(v) for v in background)
    interp = cv2.INTER_AREA if side > out_px else cv2.INTER_LINEAR
    for i, c in enumerate(cells):
        x0, y0 = round(c.x + 0.5 - half), round(c.y + 0.5 - half)
        x1, y1 = x0 + side, y0 + side
        patch = rgb[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
        pads = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
        if any(pads):
            if patch.size == 0:
                patch = np.zeros((side, side, 3), np.uint8)
                patch[:] = fill if fill is not None else 0
            elif fill is None:
                patch = cv2.copyMakeBorder(patch, *pads, cv2.BORDER_REPLICATE)
            else:
                patch = cv2.copyMakeBorder(patch, *pads, cv2.BORDER_CONSTANT, value=fill)
        out[i] = cv2.resize(patch, (out_px, out_px), interpolation=interp)
    return out
