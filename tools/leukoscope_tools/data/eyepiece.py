"""An eyepiece simulator: a dataset photo as a Pi camera held on an eyepiece would take it.

The public sets were taken through camera adapters: the whole frame is evenly lit smear.
A camera on an eyepiece sees the field stop (a bright disc on a dark surround, sometimes
cut by the frame's edges), vignetting towards the rim, the lamp's colour, a gamma of its
own, another scale (eyepiece, camera lens and zoom), slight defocus, sensor noise and
JPEG. `simulate()` applies these in the order light meets them, with every setting drawn
from a seeded generator at one of three severities, and returns the true field and scale
so the analysis can be checked against them. Used by the robustness report (field-level
results with and without the simulator, side by side; `without` takes one effect away to
say what it costs) and the eyepiece tests. Not (yet) used to train: the classifier's
training crops get the change of lab (`data.cell_augment`) instead, whose blur is smaller
than this simulator's on coarse photos (see `models/reports/eyepiece-robustness.md`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np


@dataclass(frozen=True)
class Eyepiece:
    """One simulated rig; every field is what the camera does to the photo."""

    #: Field stop radius as a share of the frame's half-diagonal (above ~1: no stop seen).
    stop_radius: float
    #: The stop's centre, offset from the frame's centre as shares of width and height.
    stop_dx: float
    stop_dy: float
    #: Brightness at the stop's rim relative to its centre (1 = no vignetting).
    vignetting: float
    #: Per-channel gains of the lamp (R, G, B), before white balance.
    cast: tuple[float, float, float]
    gamma: float
    #: The photo is resized by this factor (another magnification on the sensor).
    scale: float
    #: Gaussian defocus, in pixels of the output.
    blur_px: float
    #: Sensor noise, standard deviation in 8-bit levels.
    noise: float
    #: JPEG quality of the saved still; None: not compressed.
    jpeg_quality: int | None
    #: The stop's dark surround is seen (False: the disc's vignetting stays, the dark
    #: surround does not: what the stop alone costs).
    surround: bool = True


#: The simulator's effects, in the order light meets them; `without` takes one away.
EFFECTS = ("scale", "blur", "stop", "vignetting", "cast", "gamma", "noise", "jpeg")


def without(eye: Eyepiece, effect: str) -> Eyepiece:
    """`eye` with one effect taken away and every other setting unchanged, so that a
    report can say what each effect costs."""
    changes: dict[str, dict[str, object]] = {
        "scale": {"scale": 1.0},
        "blur": {"blur_px": 0.0},
        "stop": {"surround": False},
        "vignetting": {"vignetting": 1.0},
        "cast": {"cast": (1.0, 1.0, 1.0)},
        "gamma": {"gamma": 1.0},
        "noise": {"noise": 0.0},
        "jpeg": {"jpeg_quality": None},
    }
    if effect not in changes:
        raise ValueError(f"effect must be one of {', '.join(EFFECTS)}, got {effect!r}")
    return replace(eye, **changes[effect])  # type: ignore[arg-type]


#: Severity -> (low, high) of each random setting; "none" is the photo unchanged.
SEVERITIES: dict[str, dict[str, tuple[float, float]]] = {
    "mild": {
        "stop_radius": (0.85, 1.0), "stop_shift": (0.0, 0.03), "vignetting": (0.85, 0.95),
        "cast": (0.92, 1.08), "gamma": (0.9, 1.1), "scale": (0.85, 1.15),
        "blur_px": (0.0, 0.8), "noise": (0.0, 2.0), "jpeg_quality": (85, 95),
    },
    "realistic": {
        "stop_radius": (0.62, 0.9), "stop_shift": (0.0, 0.08), "vignetting": (0.7, 0.9),
        "cast": (0.8, 1.2), "gamma": (0.8, 1.25), "scale": (0.75, 1.25),
        "blur_px": (0.3, 1.2), "noise": (1.0, 4.0), "jpeg_quality": (75, 92),
    },
    "harsh": {
        "stop_radius": (0.5, 0.75), "stop_shift": (0.05, 0.15), "vignetting": (0.55, 0.75),
        "cast": (0.7, 1.3), "gamma": (0.7, 1.4), "scale": (0.65, 1.35),
        "blur_px": (0.8, 1.8), "noise": (3.0, 7.0), "jpeg_quality": (65, 80),
    },
}  # fmt: skip


def draw(severity: str, rng: np.random.Generator) -> Eyepiece:
    """A random rig at one severity ("mild", "realistic" or "harsh")."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    s = SEVERITIES[severity]

    def u(key: str) -> float:
        lo, hi = s[key]
        return float(rng.uniform(lo, hi))

    angle = rng.uniform(0, 2 * np.pi)
    shift = u("stop_shift")
    lo, hi = s["cast"]
    return Eyepiece(
        stop_radius=u("stop_radius"),
        stop_dx=float(shift * np.cos(angle)),
        stop_dy=float(shift * np.sin(angle)),
        vignetting=u("vignetting"),
        cast=(float(rng.uniform(lo, hi)), 1.0, float(rng.uniform(lo, hi))),
        gamma=u("gamma"),
        scale=u("scale"),
        blur_px=u("blur_px"),
        noise=u("noise"),
        jpeg_quality=round(u("jpeg_quality")),
    )


@dataclass(frozen=True)
class Simulated:
    """A simulated photo and the truth about it."""

    rgb: np.ndarray
    #: The field stop in the output's pixels: centre and radius (radius inf: no stop).
    cx: float
    cy: float
    radius: float
    #: Output pixels per input pixel (multiply a known scale by this).
    scale: float


def simulate(rgb: np.ndarray, eye: Eyepiece, rng: np.random.Generator) -> Simulated:
    """The photo as seen through `eye` (uint8 RGB in, uint8 RGB out)."""
    h0, w0 = rgb.shape[:2]
    w, h = max(16, round(w0 * eye.scale)), max(16, round(h0 * eye.scale))
    interp = cv2.INTER_AREA if eye.scale < 1 else cv2.INTER_LINEAR
    resized = (
        rgb[..., :3]
        if (w, h) == (w0, h0)
        else cv2.resize(rgb[..., :3], (w, h), interpolation=interp)
    )
    if eye.blur_px > 0.05:
        resized = cv2.GaussianBlur(resized, (0, 0), eye.blur_px)
    img = resized.astype(np.float32) / 255.0
    half_diag = float(np.hypot(w, h)) / 2
    cx, cy = w / 2 + eye.stop_dx * w, h / 2 + eye.stop_dy * h
    radius = eye.stop_radius * half_diag
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rr = np.hypot(xx + 0.5 - cx, yy + 0.5 - cy) / radius
    # Vignetting: a smooth fall-off to `vignetting` at the stop's rim.
    light = 1.0 - (1.0 - eye.vignetting) * np.clip(rr, 0, 1.5) ** 2
    # The stop: a soft dark edge a few pixels wide, then a faint glow of stray light.
    edge = max(2.0, 0.01 * radius)
    stop = np.clip((radius - rr * radius) / edge + 0.5, 0.0, 1.0)
    if eye.surround:
        light = light * stop + 0.015 * (1 - stop)
    img = img * light[..., None] * np.asarray(eye.cast, np.float32)[None, None, :]
    img = np.clip(img, 0, 1) ** (1.0 / eye.gamma)
    out = img * 255.0
    if eye.noise > 0:
        out = out + rng.normal(0, eye.noise, out.shape).astype(np.float32)
    final = np.clip(out, 0, 255).astype(np.uint8)
    if eye.jpeg_quality is not None:
        ok, buf = cv2.imencode(
            ".jpg", final[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, eye.jpeg_quality]
        )
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        final = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    no_stop = radius >= half_diag or not eye.surround
    return Simulated(final, cx, cy, float("inf") if no_stop else radius, w / w0)
