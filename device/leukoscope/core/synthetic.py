"""Synthetic smear fields: red cells, white cells and blasts drawn from seeded random numbers.

These are the project's own images for demos, tests and bundles' golden inputs, so no
patient image is ever committed. They look like a stained smear to the pipeline (pink
red cells, purple nuclei), not to a hematologist: every file says "synthetic".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

#: A red cell's diameter in micrometres, used to place cells at a known scale.
RBC_DIAMETER_UM = 7.5


@dataclass(frozen=True)
class Cell:
    """One drawn cell: centre (x, y) and radius in pixels, and its kind."""

    x: float
    y: float
    radius: float
    kind: str  # "rbc", "wbc" or "blast"


@dataclass
class SyntheticSmear:
    """A generated field and what was drawn on it."""

    image: np.ndarray  # HxWx3 uint8 RGB
    px_per_um: float
    cells: list[Cell] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Cell]:
        """The cells of one kind."""
        return [c for c in self.cells if c.kind == kind]


def _free(placed: list[Cell], x: float, y: float, r: float, overlap: float) -> bool:
    return all((c.x - x) ** 2 + (c.y - y) ** 2 >= ((c.radius + r) * overlap) ** 2 for c in placed)


def make_smear(
    width: int = 640,
    height: int = 480,
    *,
    n_wbc: int = 2,
    n_blasts: int = 0,
    rbc_density: float = 0.45,
    px_per_um: float = 4.0,
    seed: int = 0,
    n_touching_pairs: int = 0,
) -> SyntheticSmear:
    """Draw one stained-smear field.

    Args:
        width, height: image size in pixels.
        n_wbc: mature white cells (lymphocytes and neutrophils).
        n_blasts: lymphoblasts: larger, round nucleus filling most of the cell.
        rbc_density: fraction of the field covered by red cells.
        px_per_um: scale; a red cell is 7.5 micrometres across.
        seed: the random seed; the same seed gives the same image.
        n_touching_pairs: extra pairs of blasts whose outlines touch (as in clumps),
            drawn after the other white cells; 0 leaves the image as before.
    """
    rng = np.random.default_rng(seed)
    bg = np.array([236, 222, 226], np.float32) + rng.normal(0, 3, 3).astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[:] = bg
    # Uneven illumination, as through a real eyepiece.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    vignette = 1.0 - 0.08 * (((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2)
    r_rbc = RBC_DIAMETER_UM * px_per_um / 2
    placed: list[Cell] = []
    # White cells and blasts first, so red cells fill around them.
    for kind, count in (("blast", n_blasts), ("wbc", n_wbc)):
        for _ in range(count):
            r = r_rbc * (rng.uniform(1.6, 2.1) if kind == "blast" else rng.uniform(1.2, 1.6))
            for _try in range(200):
                x = rng.uniform(r + 2, width - r - 2)
                y = rng.uniform(r + 2, height - r - 2)
                if _free(placed, x, y, r, 1.05):
                    placed.append(Cell(float(x), float(y), float(r), kind))
                    break
    for _ in range(n_touching_pairs):
        r1, r2 = r_rbc * rng.uniform(1.6, 2.1, 2)
        for _try in range(200):
            x = rng.uniform(r1 + 2, width - r1 - 2)
            y = rng.uniform(r1 + 2, height - r1 - 2)
            a = rng.uniform(0, 2 * np.pi)
            # Cell outlines overlap slightly; nuclei (0.8-0.88 of the radius) do not.
            d = (r1 + r2) * 0.95
            x2, y2 = x + d * np.cos(a), y + d * np.sin(a)
            inside = r2 + 2 <= x2 <= width - r2 - 2 and r2 + 2 <= y2 <= height - r2 - 2
            if inside and _free(placed, x, y, r1, 1.05) and _free(placed, x2, y2, r2, 1.05):
                placed.append(Cell(float(x), float(y), float(r1), "blast"))
                placed.append(Cell(float(x2), float(y2), float(r2), "blast"))
                break
    n_rbc = int(rbc_density * width * height / (np.pi * r_rbc**2))
    for _ in range(n_rbc):
        r = r_rbc * rng.uniform(0.9, 1.1)
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        if _free(placed, x, y, r, 0.85):
            placed.append(Cell(float(x), float(y), float(r), "rbc"))
    for c in placed:
        centre = (round(c.x), round(c.y))
        if c.kind == "rbc":
            tone = np.array([218, 140, 152]) + rng.normal(0, 6, 3)
            cv2.circle(img, centre, round(c.radius), tone.tolist(), -1, cv2.LINE_AA)
            pallor = tone * 0.35 + bg * 0.65
            cv2.circle(img, centre, round(c.radius * 0.45), pallor.tolist(), -1, cv2.LINE_AA)
        else:
            _draw_white_cell(img, c, rng)
    img *= vignette[:, :, None]
    blurred = cv2.GaussianBlur(img, (0, 0), 0.9) + rng.normal(0, 2.5, img.shape)
    out = np.clip(blurred, 0, 255).astype(np.uint8)
    return SyntheticSmear(out, px_per_um, placed)


def _draw_white_cell(img: np.ndarray, c: Cell, rng: np.random.Generator) -> None:
    centre = (round(c.x), round(c.y))
    cyto = np.array([200, 190, 225]) + rng.normal(0, 5, 3)
    cv2.circle(img, centre, round(c.radius), cyto.tolist(), -1, cv2.LINE_AA)
    if c.kind == "blast":
        # High nucleus-to-cytoplasm ratio, fine chromatin, pale nucleoli.
        nucleus = np.array([125, 70, 160]) + rng.normal(0, 6, 3)
        nr = c.radius * rng.uniform(0.8, 0.88)
        off = rng.normal(0, c.radius * 0.04, 2)
        nc = (round(c.x + off[0]), round(c.y + off[1]))
        cv2.circle(img, nc, round(nr), nucleus.tolist(), -1, cv2.LINE_AA)
        for _ in range(rng.integers(1, 4)):
            a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, nr * 0.5)
            p = (round(nc[0] + d * np.cos(a)), round(nc[1] + d * np.sin(a)))
            cv2.circle(img, p, max(1, round(nr * 0.15)), (nucleus * 1.25).tolist(), -1)
    elif rng.random() < 0.5:
        # Lymphocyte: round, dense nucleus with a thin rim of cytoplasm.
        nucleus = np.array([95, 45, 130]) + rng.normal(0, 6, 3)
        cv2.circle(img, centre, round(c.radius * 0.72), nucleus.tolist(), -1, cv2.LINE_AA)
    else:
        # Neutrophil: three to five dark lobes.
        nucleus = np.array([100, 50, 135]) + rng.normal(0, 6, 3)
        n_lobes = int(rng.integers(3, 6))
        for k in range(n_lobes):
            a = 2 * np.pi * k / n_lobes + rng.uniform(-0.3, 0.3)
            d = c.radius * 0.42
            p = (round(c.x + d * np.cos(a)), round(c.y + d * np.sin(a)))
            cv2.circle(img, p, round(c.radius * 0.3), nucleus.tolist(), -1, cv2.LINE_AA)


#: The demo fields, in this order: (file name part, intended outcome with the shipped
#: bundle, how it is drawn). A few mature cells are "no leukemia suspected"; a field of
#: blasts is "indeterminate": the shipped cells bundle (1.1.0) calls each drawn blast a
#: blast at its cell cut, but only at p 0.5-0.65 (real blasts score higher), so no drawn
#: field reaches "leukemia suspected" and none is offered; a blurred, a dark and an empty
#: field are retakes.
DEMO_FIELDS: tuple[tuple[str, str, dict[str, float]], ...] = (
    ("no-leukemia", "no-leukemia-suspected", {"n_wbc": 4, "n_blasts": 0}),
    ("blasts", "indeterminate", {"n_wbc": 0, "n_blasts": 8}),
    ("retake-focus", "out-of-focus", {"n_wbc": 4, "n_blasts": 0, "blur_sigma": 3.0}),
    ("retake-exposure", "too-dark", {"n_wbc": 4, "n_blasts": 0, "gain": 0.2}),
    ("retake-no-white-cells", "no-white-cells", {"n_wbc": 0, "n_blasts": 0}),
)


def demo_field(index: int, *, seed: int = 2026) -> tuple[str, str, np.ndarray]:
    """Demo field `index` (the outcomes repeat every len(DEMO_FIELDS)): its name part,
    intended outcome (a verdict, or the retake reason) and RGB image."""
    name, outcome, spec = DEMO_FIELDS[index % len(DEMO_FIELDS)]
    smear = make_smear(
        1024,
        768,
        n_wbc=int(spec["n_wbc"]),
        n_blasts=int(spec["n_blasts"]),
        px_per_um=5.0,
        seed=seed + index,
    )
    img = smear.image
    if "blur_sigma" in spec:  # the microscope out of focus
        img = cv2.GaussianBlur(img, (0, 0), spec["blur_sigma"])
    if "gain" in spec:  # the lamp turned down
        img = (img.astype(np.float32) * spec["gain"]).astype(np.uint8)
    return name, outcome, img


def write_demo_images(
    folder: Path, count: int = len(DEMO_FIELDS), *, seed: int = 2026
) -> list[Path]:
    """Write `count` synthetic fields as PNG, one per outcome in `DEMO_FIELDS` order
    (no leukemia suspected, indeterminate, then retakes for focus, exposure and no white
    cells), repeating with other seeds past five.

    Files are named `synthetic-NN-<outcome>.png` so nobody mistakes them for patient
    images. Existing files with the same names are overwritten (the output is
    deterministic).
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        name, _outcome, img = demo_field(i, seed=seed)
        path = folder / f"synthetic-{i:02d}-{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths
