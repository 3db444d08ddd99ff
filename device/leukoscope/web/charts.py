"""The history page's pictures, drawn on the server as SVG (no script, no outside assets):
results per day by verdict, and the distribution of the leukemia score with the model's
thresholds marked.

Coordinates are computed here, in the drawing's own units (its viewBox), so the template
only places them and the tests can check counts and positions on known inputs. Every
drawing carries its numbers in words too (a title per bar, a summary), for screen readers
and for anyone who would rather read than look.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo

#: The verdicts, bottom of a day's stack first, and how a chart names them.
VERDICT_ORDER = (
    "no-leukemia-suspected",
    "indeterminate",
    "leukemia-suspected",
    "retake",
    "fault",
)
VERDICT_WORDS = {
    "no-leukemia-suspected": "no leukemia suspected",
    "indeterminate": "indeterminate",
    "leukemia-suspected": "leukemia suspected",
    "retake": "retake",
    "fault": "fault",
}

#: The drawings' sizes in their own units (they scale to the page's width).
WIDTH, HEIGHT = 480.0, 200.0
LEFT, RIGHT, TOP, BOTTOM = 34.0, 8.0, 14.0, 30.0
FONT = 12
#: A generous width of one character of the labels (drawing units), to keep them inside.
LABEL_CHAR_W = 0.62 * FONT


@dataclass(frozen=True)
class Segment:
    """One verdict's part of a day's bar."""

    outcome: str
    count: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class DayBar:
    """One day: its segments bottom up, its total and its label."""

    day: date
    total: int
    segments: list[Segment]
    #: The bar's middle (for the label and the total).
    centre: float
    #: Where the total is written (above the bar).
    top: float
    #: The day's label under the axis ("3 Dec"), empty when skipped to avoid crowding.
    label: str
    #: The day in words (the bar's title).
    text: str


@dataclass(frozen=True)
class GridLine:
    """A horizontal grid line with its value."""

    y: float
    label: str


@dataclass(frozen=True)
class HistoryChart:
    """Results per day by verdict over the last `len(days)` days."""

    width: float
    height: float
    left: float
    right: float
    baseline: float
    days: list[DayBar]
    grid: list[GridLine]
    #: The verdicts that occur, in stacking order, with their totals (the legend).
    legend: list[tuple[str, int]]
    total: int
    #: The chart in words (its desc).
    text: str


def nice_top(n: int) -> tuple[int, int]:
    """The axis's end and its step for a largest value `n`: 1, 2, 5, 10, 20, 50, ..."""
    n = max(n, 1)
    for step in (1, 2, 5):
        if n <= 4 * step:
            return math.ceil(n / step) * step, step
    magnitude = 10 ** math.floor(math.log10(n / 4))
    for mult in (1, 2, 5, 10):
        step = mult * magnitude
        if n <= 4 * step:
            return math.ceil(n / step) * step, step
    return n, n  # pragma: no cover - the loop always returns


def local_day(unix: float, zone: tzinfo) -> date:
    """The local calendar day of a unix time."""
    return datetime.fromtimestamp(unix, UTC).astimezone(zone).date()


def history_chart(
    results: Iterable[tuple[float, str]], today: date, zone: tzinfo, n_days: int = 14
) -> HistoryChart:
    """Count results per local day and verdict for the `n_days` days ending `today`.

    Args:
        results: (created_unix, outcome) of each result; those outside the days are ignored.
        zone: the time zone whose calendar days are counted (the appliance's).
    """
    days = [today - timedelta(days=n_days - 1 - i) for i in range(n_days)]
    counts: dict[date, dict[str, int]] = {d: {} for d in days}
    for unix, outcome in results:
        d = local_day(unix, zone)
        if d in counts:
            counts[d][outcome] = counts[d].get(outcome, 0) + 1
    order = list(VERDICT_ORDER) + sorted(
        {o for c in counts.values() for o in c} - set(VERDICT_ORDER)
    )
    top, step = nice_top(max((sum(c.values()) for c in counts.values()), default=0))
    baseline = HEIGHT - BOTTOM
    span = baseline - TOP
    slot = (WIDTH - LEFT - RIGHT) / n_days
    bar_w = round(slot * 0.7, 1)
    every = 1 if n_days <= 8 else 2 if n_days <= 16 else math.ceil(n_days / 8)

    def y_of(v: float) -> float:
        return round(baseline - span * v / top, 1)

    bars = []
    for i, d in enumerate(days):
        c = counts[d]
        centre = round(LEFT + slot * (i + 0.5), 1)
        x = round(centre - bar_w / 2, 1)
        segments, below = [], 0
        for o in order:
            k = c.get(o, 0)
            if not k:
                continue
            y_top, y_bottom = y_of(below + k), y_of(below)
            segments.append(Segment(o, k, x, y_top, bar_w, round(y_bottom - y_top, 1)))
            below += k
        said = ", ".join(f"{c[o]} {VERDICT_WORDS.get(o, o)}" for o in order if c.get(o))
        # the newest day is always labelled; the others alternate back from it
        shown = (n_days - 1 - i) % every == 0
        bars.append(
            DayBar(
                d, below, segments, centre, y_of(below) - 3,
                f"{d.day} {d:%b}" if shown else "",
                f"{d:%a} {d.day} {d:%b}: " + (said or "no results"),
            )
        )  # fmt: skip
    grid = [GridLine(y_of(v), str(v)) for v in range(0, top + 1, step)]
    totals = {o: sum(c.get(o, 0) for c in counts.values()) for o in order}
    legend = [(o, n) for o, n in totals.items() if n]
    total = sum(totals.values())
    text = f"{total} result{'s' if total != 1 else ''} from {days[0]:%d %b} to {days[-1]:%d %b}" + (
        ": " + ", ".join(f"{n} {VERDICT_WORDS.get(o, o)}" for o, n in legend) if legend else ""
    )
    return HistoryChart(
        WIDTH, HEIGHT, LEFT, WIDTH - RIGHT, baseline, bars, grid, legend, total, text
    )


@dataclass(frozen=True)
class Bin:
    """One bar of the score histogram: scores in [low, high)."""

    low: float
    high: float
    count: int
    x: float
    y: float
    width: float
    height: float
    #: "no" (below the low threshold), "mid" (between), "refer" (at or above the high one).
    zone: str


@dataclass(frozen=True)
class Tick:
    """An axis tick and its label."""

    x: float
    label: str


@dataclass(frozen=True)
class ThresholdMark:
    """A threshold's line and its label."""

    x: float
    label: str
    anchor: str


@dataclass(frozen=True)
class ScoreChart:
    """The distribution of leukemia scores with the verdict thresholds."""

    width: float
    height: float
    left: float
    right: float
    baseline: float
    top_y: float
    bins: list[Bin]
    ticks: list[Tick]
    grid: list[GridLine]
    thresholds: list[ThresholdMark]
    #: The three verdict regions' x ranges: (zone, x0, x1).
    regions: list[tuple[str, float, float]]
    n: int
    text: str


def score_chart(
    scores: Iterable[float], low: float | None, high: float | None, n_bins: int = 20
) -> ScoreChart:
    """Histogram of scores in 0..1 (others ignored) with the thresholds `low` and `high`
    (no leukemia suspected below `low`, leukemia suspected at or above `high`)."""
    counts = [0] * n_bins
    n = below = above = 0
    for s in scores:
        if isinstance(s, bool) or not isinstance(s, int | float) or not 0.0 <= s <= 1.0:
            continue
        if not math.isfinite(s):  # pragma: no cover - excluded by the range check
            continue
        counts[min(int(s * n_bins), n_bins - 1)] += 1
        n += 1
        below += low is not None and s < low
        above += high is not None and s >= high
    left, right = LEFT, WIDTH - RIGHT
    baseline, top_y = HEIGHT - BOTTOM, TOP + 12
    top, step = nice_top(max(counts, default=0))

    def x_of(v: float) -> float:
        return round(left + (right - left) * v, 1)

    def y_of(v: float) -> float:
        return round(baseline - (baseline - top_y) * v / top, 1)

    def zone_of(mid: float) -> str:
        if low is not None and mid < low:
            return "no"
        if high is not None and mid >= high:
            return "refer"
        return "mid"

    bins = []
    for i, k in enumerate(counts):
        lo, hi = i / n_bins, (i + 1) / n_bins
        x0, x1 = x_of(lo), x_of(hi)
        y = y_of(k)
        bins.append(
            Bin(lo, hi, k, round(x0 + 0.5, 1), y, round(x1 - x0 - 1, 1), round(baseline - y, 1),
                zone_of((lo + hi) / 2))
        )  # fmt: skip
    ticks = [Tick(x_of(v / 100), f"{v}%") for v in (0, 25, 50, 75, 100)]
    marks, regions = [], []
    edges = [0.0] + [t for t in (low, high) if t is not None] + [1.0]
    names = ["no", "mid", "refer"] if low is not None and high is not None else ["mid"]
    if len(edges) == 4:
        regions = [(names[i], x_of(edges[i]), x_of(edges[i + 1])) for i in range(3)]
    for t, words, prefer in ((low, "no leukemia <", "end"), (high, "refer ≥", "start")):
        if t is None:
            continue
        x = x_of(t)
        text = f"{words}{100 * t:.0f}%"
        wide = LABEL_CHAR_W * len(text) + 4
        # towards its own side of the line, unless that side is too narrow to hold it
        fits_end, fits_start = x - wide >= 0, x + wide <= WIDTH
        anchor = (
            prefer
            if (fits_end if prefer == "end" else fits_start)
            else ("start" if prefer == "end" else "end")
        )
        marks.append(ThresholdMark(x, text, anchor))
    grid = [GridLine(y_of(v), str(v)) for v in range(0, top + 1, step)]
    parts = []
    if low is not None and high is not None:
        parts.append(
            f"{below} below the low threshold {100 * low:.0f}%, "
            f"{n - below - above} between, {above} at or above the high threshold {100 * high:.0f}%"
        )
    text = f"{n} leukemia score{'s' if n != 1 else ''}" + (": " + parts[0] if parts else "")
    return ScoreChart(
        WIDTH, HEIGHT, left, right, baseline, top_y, bins, ticks, grid, marks, regions, n, text
    )
