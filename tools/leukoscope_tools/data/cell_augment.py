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
- JPEG at quality 40-95 on a share of crops.

Crops arrive as the device makes them (white-balanced, filtered); the jitter is applied
on top, to training crops only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


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


def _stain(img: np.ndarray, rng: np.random.Generator, p: LabJitter) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    # OpenCV's 8-bit hue runs 0-180 for 0-360 degrees.
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-p.hue_deg, p.hue_deg) / 2.0) % 180.0
    hsv[..., 1] *= rng.uniform(1 - p.saturation, 1 + p.saturation)
    rgb = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
    out = rgb.astype(np.float32) * rng.uniform(1 - p.channel_gain, 1 + p.channel_gain, 3)
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - p.contrast, 1 + p.contrast) + mean
    return out * rng.uniform(1 - p.brightness, 1 + p.brightness)


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
