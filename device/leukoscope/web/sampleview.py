"""What the sample pages draw: the blast-percentage bar, the fields table, the gallery.

The bar is an SVG drawn on the server (no script, no outside assets): a scale from 0 to
at least `MIN_TOP_PERCENT`, far enough to hold the interval's upper end; the 95% interval
as a band, the estimate as a tick, the referral threshold as a labelled line. Its
coordinates are computed here so the template only places them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from leukoscope.appliance.samples import FieldStatus, ReviewLabel, Sample, SampleCell
from leukoscope.web.charts import Tick

#: The bar's scale reaches at least this far (percent): 5% and 20% both sit well inside.
MIN_TOP_PERCENT = 30.0
#: The SVG's user units: drawn 100% wide, so about 1 unit per CSS pixel on a phone.
WIDTH = 360.0
HEIGHT = 70.0
PAD = 16.0
BAR_Y = 24.0
BAR_H = 16.0


@dataclass(frozen=True)
class Bar:
    """One blast-percentage bar, in the SVG's units."""

    width: float
    height: float
    bar_y: float
    bar_h: float
    left: float
    right: float
    #: The interval's band, the estimate and the threshold line.
    low_x: float
    high_x: float
    estimate_x: float
    threshold_x: float
    threshold_label: str
    #: The threshold label's anchor: kept inside the drawing near either end.
    threshold_anchor: str
    ticks: list[Tick]
    #: The bar in words (its title, for screen readers and tooltips).
    text: str


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def scale_top(high_percent: float) -> float:
    """Where the scale ends: MIN_TOP_PERCENT, or the next 10% above the interval."""
    top = max(MIN_TOP_PERCENT, math.ceil(high_percent / 10.0) * 10.0)
    return min(100.0, top)


def bar(
    estimate: float, interval: tuple[float, float], threshold: float, top: float | None = None
) -> Bar:
    """The bar of a blast percentage with its 95% interval against the threshold (all %).

    Args:
        top: the scale's end; give two bars the same one to compare them.
    """
    top = scale_top(interval[1]) if top is None else top
    left, right = PAD, WIDTH - PAD

    def x(value: float) -> float:
        return round(left + (right - left) * min(max(value, 0.0), top) / top, 1)

    step = 5.0 if top <= 30 else (10.0 if top <= 60 else 20.0)
    ticks = [Tick(x(v), f"{v:g}%") for v in _steps(top, step)]
    tx = x(threshold)
    anchor = "start" if tx < left + 45 else ("end" if tx > right - 45 else "middle")
    text = (
        f"blasts {_fmt(estimate)}% (95% interval {_fmt(interval[0])}–{_fmt(interval[1])}%), "
        f"threshold {threshold:g}%"
    )
    return Bar(
        WIDTH, HEIGHT, BAR_Y, BAR_H, left, right,
        x(interval[0]), x(interval[1]), x(estimate), tx, f"threshold {threshold:g}%", anchor,
        ticks, text,
    )  # fmt: skip


def _steps(top: float, step: float) -> list[float]:
    n = int(top // step)
    return [i * step for i in range(n + 1)]


@dataclass(frozen=True)
class FieldRow:
    """One photo of a sample as the fields table shows it."""

    record_id: int
    position: int
    status: str
    #: The status in words: "counted", "repeat of field 2", "retake".
    said: str
    n_cells: int
    n_blasts: int


def field_rows(sample: Sample) -> list[FieldRow]:
    """The sample's fields in the order they were taken, with their status in words."""
    position = {f.record_id: f.position for f in sample.fields}
    rows = []
    for f in sample.fields:
        if f.status is FieldStatus.REPEAT:
            of = position.get(f.repeats_record or -1)
            shared = "" if f.shared is None else f" ({100 * f.shared:.0f}% shared)"
            said = (f"repeat of field {of}" if of else "repeat of a counted field") + shared
        elif f.status is FieldStatus.RETAKE:
            said = "retake: not counted"
        else:
            said = "counted"
        rows.append(FieldRow(f.record_id, f.position, f.status.value, said, f.n_cells, f.n_blasts))
    return rows


def called_blast(cell: SampleCell) -> bool:
    """The cell's reading: the reviewer's when reviewed, else the model's."""
    if cell.review is not None:
        return cell.review.label is ReviewLabel.BLAST
    return cell.model_blast


def report_cells(cells: list[SampleCell]) -> list[SampleCell]:
    """The cells a report shows: every cell called a blast, by the model or a reviewer."""
    return [c for c in cells if c.model_blast or called_blast(c)]
