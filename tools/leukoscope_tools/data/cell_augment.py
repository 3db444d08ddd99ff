"""A change of lab, simulated on cell crops: stain, scale, focus, sensor noise and JPEG.

The same cell looks different on another lab's slide: the stain's hue and strength
(May-Grunwald-Giemsa against Wright, batch to batch), the camera's white balance and
gamma, the magnification (a ruler off by up to a quarter when red cells are few), the
focus, the sensor's noise and the file's compression. Each training crop gets a random
draw of each (seeded), so the classifier cannot lean on any one lab's look:

- stain: a shift of hue and a scale of saturation in HSV, and a gain per channel;
- brightness and contrast;
- scale: the crop zoomed about its centre by 0.75-1.25 (edges repeat the border, as
  glass);
- blur: a Gaussian of up to 1.5 px on a share of crops (a lower or defocused objective);
- noise: Gaussian, up to 6 grey levels;
- JPEG at quality 40-95 on a share of crops;
- optionally (off by default, `gamma`): the camera's gamma, 1/(1 +- this);
- optionally (off by default, `camera_share`): a share of crops photographed again by a
  coarse camera, as a Pi on an eyepiece or a 224x224 photo sees a cell: shrunk to
  1.5-3 px/um, blurred there by 0.3-1.2 of its pixels (defocus in micrometres, not crop
  pixels: up to 0.8 um), noise and JPEG at that scale, enlarged back and filtered again
  with the paper's filters, as the device cuts such a photo's crops. These crops skip
  the crop-scale blur, noise and JPEG above. The eyepiece simulator's realistic rigs blur
  kaggle-all's photos by up to 0.75 um, beyond the 0.3 um the crop-scale blur reaches.

Crops arrive as the device makes them (white-balanced, filtered); the jitter is applied
on top, to training crops only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from leukoscope.analysis.preprocess import PreprocessParams, filter_paper


@dataclass(frozen=True)
class LabJitter:
    """Ranges of each change (0 turns one off)."""

    hue_deg: float = 8.0
    saturation: float = 0.3  # scale in 1 +- this
    channel_gain: float = 0.08  # each of R, G, B scaled by 1 +- this
    brightness: float = 0.1  # in 1 +- this
    contrast: float = 0.15  # in 1 +- this
    scale: float = 0.25  # zoom in 1 +- this
    blur_share: float = 0.3
    blur_sigma: float = 1.5
    noise_sigma: float = 6.0
    jpeg_share: float = 0.3
    jpeg_quality: tuple[int, int] = (40, 95)
    gamma: float = 0.0  # 1/gamma with gamma in 1 +- this (0: off)
    camera_share: float = 0.0  # share of crops photographed again by a coarse camera
    camera_px_per_um: tuple[float, float] = (1.5, 3.0)
    camera_blur_px: tuple[float, float] = (0.3, 1.2)  # in the coarse camera's pixels
    camera_noise: float = 4.0
    camera_jpeg: tuple[int, int] = (75, 92)
    crop_um: float = 24.0


def _stain(img: np.ndarray, rng: np.random.Generator, p: LabJitter) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    # OpenCV's 8-bit hue runs 0-180 for 0-360 degrees.
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-p.hue_deg, p.hue_deg) / 2.0) % 180.0
    hsv[..., 1] *= rng.uniform(1 - p.saturation, 1 + p.saturation)
    rgb = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
    out = rgb.astype(np.float32) * rng.uniform(1 - p.channel_gain, 1 + p.channel_gain, 3)
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - p.contrast, 1 + p.contrast) + mean
    out = out * rng.uniform(1 - p.brightness, 1 + p.brightness)
    if p.gamma:
        g = rng.uniform(1 - p.gamma, 1 + p.gamma)
        out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** (1.0 / g)
    return out


_FILTERS = PreprocessParams()


def _coarse_camera(img: np.ndarray, rng: np.random.Generator, p: LabJitter) -> np.ndarray:
    """`img` (float, 0-255) as a coarser, slightly defocused camera sees it; float out."""
    side = img.shape[0]
    s = max(8, round(p.crop_um * rng.uniform(*p.camera_px_per_um)))
    tiny = cv2.resize(np.clip(img, 0, 255).astype(np.float32), (s, s), interpolation=cv2.INTER_AREA)
    tiny = cv2.GaussianBlur(tiny, (0, 0), float(rng.uniform(*p.camera_blur_px)))
    if p.camera_noise:
        sigma = np.float32(rng.uniform(0, p.camera_noise))
        tiny = tiny + sigma * rng.standard_normal(tiny.shape, dtype=np.float32)
    small = np.clip(tiny + 0.5, 0, 255).astype(np.uint8)
    if p.jpeg_share and rng.random() < p.jpeg_share:
        q = int(rng.integers(p.camera_jpeg[0], p.camera_jpeg[1] + 1))
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            small = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    big = cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
    # The device filters the enlarged crop (median, sharpen): so does this.
    return filter_paper(big, _FILTERS).astype(np.float32)


def _zoom(img: np.ndarray, factor: float) -> np.ndarray:
    side = img.shape[0]
    c = (side - 1) / 2.0
    m = np.array([[factor, 0, c * (1 - factor)], [0, factor, c * (1 - factor)]], np.float32)
    out: np.ndarray = cv2.warpAffine(
        img, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return out


def lab_jitter(x: np.ndarray, rng: np.random.Generator, p: LabJitter = LabJitter()) -> np.ndarray:
    """A seeded change of lab for each crop of `x` (N x h x w x 3 uint8); uint8 out."""
    out = np.empty_like(x)
    for i in range(len(x)):
        img = np.ascontiguousarray(x[i])
        if p.scale:
            img = _zoom(img, float(rng.uniform(1 - p.scale, 1 + p.scale)))
        f = _stain(img, rng, p)
        if p.camera_share and rng.random() < p.camera_share:
            out[i] = np.clip(_coarse_camera(f, rng, p) + 0.5, 0, 255).astype(np.uint8)
            continue
        if p.blur_share and rng.random() < p.blur_share:
            f = cv2.GaussianBlur(f, (0, 0), float(rng.uniform(0.5, p.blur_sigma)))
        if p.noise_sigma:
            sigma = np.float32(rng.uniform(0, p.noise_sigma))
            f = f + sigma * rng.standard_normal(f.shape, dtype=np.float32)
        img = np.clip(f + 0.5, 0, 255).astype(np.uint8)
        if p.jpeg_share and rng.random() < p.jpeg_share:
            q = int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1))
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok:
                img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        out[i] = img
    return out
