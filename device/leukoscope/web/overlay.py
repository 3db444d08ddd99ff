"""The result detail's white-cell overlay: a record's per-cell result, checked for drawing.

A record's `cells` is the CellReport JSON of a `cells` bundle (None in whole-field mode).
It is data from the database, so nothing in it is trusted: a box is drawn only from four
finite numbers, clipped to the photo (`image_size`); a box wholly outside it, a cell that
is not an object, or a probability outside 0..1 is left out and counted, never drawn
blindly. Text reaches the page only through the template's escaping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: The largest photo side an overlay is drawn for (pixels); beyond it image_size is not trusted.
MAX_SIDE = 65_536
#: At most this many boxes are drawn (a `cells` bundle classifies at most 4,096 cells).
MAX_BOXES = 4096


@dataclass(frozen=True)
class Box:
    """One white cell's box, inside the photo, in its pixels."""

    x: float
    y: float
    width: float
    height: float
    #: "blast", "other", or "unclassified" (no usable class or probability).
    kind: str
    p_blast: float | None
    clump: bool

    @property
    def label(self) -> str:
        """What the box says: its class and probability."""
        name = {"blast": "blast", "other": "not a blast"}.get(self.kind, "not classified")
        p = "" if self.p_blast is None else f" {100.0 * self.p_blast:.0f} %"
        return name + p + (" (clump)" if self.clump else "")

    @property
    def short(self) -> str:
        """The probability as drawn beside the box."""
        return "?" if self.p_blast is None else f"{100.0 * self.p_blast:.0f}%"


@dataclass(frozen=True)
class Label:
    """A box's percentage, placed in CSS pixels over the photo (by percentages of it)."""

    x_pct: float
    y_pct: float
    #: The text's offset from the box's top edge (CSS px), and which edge of the text's
    #: em box sits there: above the box ("text-after-edge", its bottom on the box), or
    #: inside it ("text-before-edge", its top) when the box is near the photo's top.
    dy: int
    baseline: str
    #: "start" at the box's left edge, or "end" at its right edge near the photo's right
    #: side, so the label is never cut off at either edge.
    anchor: str
    text: str
    kind: str

    @property
    def dx(self) -> int:
        """A nudge inwards (CSS px) so the text's outline stays inside the photo too."""
        return -3 if self.anchor == "end" else 3


#: Boxes whose left edge is past this share of the photo get their label right-aligned.
LABEL_RIGHT_FROM = 0.8
#: Boxes nearer the top than this share of the photo get their label inside the box
#: (a label is about 16 CSS px tall; 10% of a photo shown 160 px tall or more holds it).
LABEL_INSIDE_ABOVE = 0.1


@dataclass(frozen=True)
class CellView:
    """What the detail page shows of a record's cells: counts, and the boxes to draw."""

    width: int | None  # image_size, None when unusable (no boxes then)
    height: int | None
    boxes: list[Box]
    n_found: int | None
    n_classified: int | None
    n_blasts: int | None
    score: float | None
    px_per_um: float | None
    scale_source: str | None
    #: Cells in the record that are not drawn (bad numbers, outside the photo, over MAX_BOXES).
    not_drawn: int
    #: Cells the store left out of an oversized record (`cells_omitted`).
    omitted: int | None

    @property
    def font_px(self) -> float:
        """Label size in the photo's pixels: readable whatever its resolution."""
        return round(max(10.0, (self.width or 0) / 55.0), 1)

    @property
    def labels(self) -> list[Label]:
        """The boxes' percentages as labels of a fixed screen size (>= 11 CSS px on a
        phone, where labels in the photo's own pixels shrank to 6 px)."""
        if not self.width or not self.height:
            return []
        out = []
        for b in self.boxes:
            right = b.x / self.width > LABEL_RIGHT_FROM
            x = (b.x + b.width) if right else b.x
            inside = b.y / self.height < LABEL_INSIDE_ABOVE
            out.append(
                Label(
                    round(100.0 * x / self.width, 2),
                    round(100.0 * b.y / self.height, 2),
                    1 if inside else -1,
                    "text-before-edge" if inside else "text-after-edge",
                    "end" if right else "start",
                    b.short,
                    b.kind,
                )
            )
        return out

    @property
    def stroke_px(self) -> float:
        """Stroke width in the photo's pixels (the drawn one is fixed by CSS)."""
        return round(max(1.0, (self.width or 0) / 400.0), 1)


def _number(value: Any, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) and lo <= v <= hi else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**7:
        return None
    return value


def _size(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    w, h = (_number(v, 1, MAX_SIDE) for v in value)
    if w is None or h is None or w != int(w) or h != int(h):
        return None
    return int(w), int(h)


def _box(cell: Any, width: int, height: int) -> Box | None:
    if not isinstance(cell, dict):
        return None
    raw = cell.get("box")
    if not isinstance(raw, list | tuple) or len(raw) != 4:
        return None
    nums = [_number(v, -1e9, 1e9) for v in raw]
    if any(v is None for v in nums):
        return None
    x0, y0, x1, y1 = (float(v) for v in nums)  # type: ignore[arg-type]
    x0, x1 = max(0.0, min(x0, x1)), min(float(width), max(x0, x1))
    y0, y1 = max(0.0, min(y0, y1)), min(float(height), max(y0, y1))
    if x1 - x0 < 1.0 or y1 - y0 < 1.0:  # outside the photo (or no area): not drawn
        return None
    p = cell.get("p_blast")
    p_blast = _number(p, 0.0, 1.0)
    if p is not None and p_blast is None:
        return None  # a probability that is not one: this cell's result is not trusted
    blast = cell.get("blast")
    kind = "unclassified" if not isinstance(blast, bool) else ("blast" if blast else "other")
    clump = cell.get("clump") is True
    return Box(
        round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1), kind, p_blast, clump
    )


def cell_view(cells: Any) -> CellView | None:
    """The overlay and counts for a record's `cells`, or None (whole-field, or not a result)."""
    if not isinstance(cells, dict):
        return None
    size = _size(cells.get("image_size"))
    listed = cells.get("cells")
    listed = listed if isinstance(listed, list) else []
    boxes: list[Box] = []
    if size is not None:
        for cell in listed[:MAX_BOXES]:
            box = _box(cell, *size)
            if box is not None:
                boxes.append(box)
    source = cells.get("scale_source")
    return CellView(
        width=None if size is None else size[0],
        height=None if size is None else size[1],
        boxes=boxes,
        n_found=_count(cells.get("n_found")),
        n_classified=_count(cells.get("n_classified")),
        n_blasts=_count(cells.get("n_blasts")),
        score=_number(cells.get("score"), 0.0, 1.0),
        px_per_um=_number(cells.get("px_per_um"), 0.0, 1e4),
        scale_source=source if isinstance(source, str) else None,
        not_drawn=len(listed) - len(boxes),
        omitted=_count(cells.get("cells_omitted")),
    )


def cell_counts(cells: Any) -> dict[str, Any] | None:
    """The counts of a record's cells for listings and the CSV (None in whole-field mode)."""
    if not isinstance(cells, dict):
        return None
    return {
        "n_found": _count(cells.get("n_found")),
        "n_classified": _count(cells.get("n_classified")),
        "n_blasts": _count(cells.get("n_blasts")),
        "score": _number(cells.get("score"), 0.0, 1.0),
    }
