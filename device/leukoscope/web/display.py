"""How the pages say things: field names in words, values without Python's spelling, and
stored UTC times in the appliance's local time zone.

The API keeps its keys and UTC times; only the HTML pages go through here. Times are
rendered on the server in the device's zone (so the page is right without JavaScript)
inside `<time datetime="...">`, whose UTC value the page's script may show in the
browser's own zone instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

#: Record fields and measures in the technician's words; others are turned into words
#: by `label()` (underscores to spaces, a unit suffix in brackets).
LABELS: dict[str, str] = {
    "id": "Record",
    "created_at": "Taken",
    "created_unix": "Taken (unix seconds)",
    "trigger": "Started by",
    "sample_id": "Sample",
    "outcome": "Verdict",
    "p_leukemia": "Leukemia score",
    "retake_reasons": "Retake because",
    "error": "Error",
    "model_name": "Model",
    "model_version": "Model version",
    "model_sha256": "Model SHA-256",
    "image_path": "Photo file",
    "image_sha256": "Photo SHA-256",
    "image_bytes": "Photo size",
    "image_deleted": "Photo deleted",
    "image_deleted_at": "Photo deleted on",
    "clock_trusted": "Clock trusted",
    # quality measures
    "mean_luma": "Mean brightness (0–255)",
    "focus": "Focus",
    "stain": "Stain",
    "sharpness": "Sharpness",
    "saturation": "Colour saturation",
    "clipped": "Clipped pixels",
    # timings
    "capture": "Capture",
    "decode": "Decode",
    "quality": "Quality check",
    "inference": "Model",
    "detect": "Find white cells",
    "crops": "Cut cell crops",
    "decision": "Decision",
    "record": "Write record",
    "trigger_to_indicator": "Button to light",
    "total": "Total",
    # probabilities
    "normal": "Normal",
    "leukemia": "Leukemia",
}

#: Unit suffixes of snake_case keys, said as units.
UNITS = {"ms": "ms", "um": "µm", "px": "px", "s": "s", "pct": "%", "c": "°C"}


def label(key: str) -> str:
    """A field name in words: "mean_luma" -> "Mean brightness (0–255)", "gap_um" -> "Gap (µm)"."""
    if key in LABELS:
        return LABELS[key]
    words = [w for w in key.replace("-", "_").split("_") if w]
    if not words:
        return key
    unit = None
    if len(words) > 1 and words[-1].lower() in UNITS:
        unit = UNITS[words.pop().lower()]
    text = " ".join(words)
    text = text[:1].upper() + text[1:]
    return f"{text} ({unit})" if unit else text


def value(v: Any) -> str:
    """A value as a person reads it: yes/no, "–" for nothing, numbers without noise."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
    if isinstance(v, Mapping):
        return "; ".join(f"{label(str(k))}: {value(x)}" for k, x in v.items()) or "–"
    if isinstance(v, list | tuple):
        return ", ".join(value(x) for x in v) or "–"
    return str(v)


def rows(d: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """A mapping as (label, value) rows for a two-column table."""
    return [(label(str(k)), value(v)) for k, v in (d or {}).items()]


def local_zone() -> tzinfo:
    """The appliance's local time zone (the system's; UTC when it has none)."""
    return datetime.now().astimezone().tzinfo or UTC


def parse_time(iso: str | None) -> datetime | None:
    """A stored ISO time as an aware datetime (naive ones are UTC), or None."""
    if not iso:
        return None
    try:
        when = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def zone_text(when: datetime) -> str:
    """The UTC offset of an aware time: "UTC", "UTC+01:00", "UTC−05:00" (a true minus)."""
    offset = when.utcoffset()
    minutes = 0 if offset is None else int(offset.total_seconds() // 60)
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "\u2212"
    h, m = divmod(abs(minutes), 60)
    return f"UTC{sign}{h:02d}:{m:02d}"


def local_text(iso: str | None, zone: tzinfo | None = None) -> str:
    """A stored time in the appliance's zone, year first with its offset said:
    "2026-12-03 14:05 (UTC+01:00)" (the page's script writes the same form)."""
    when = parse_time(iso)
    if when is None:
        return iso or "–"
    here = when.astimezone(zone or local_zone())
    return f"{here:%Y-%m-%d %H:%M} ({zone_text(here)})"


def utc_iso(iso: str | None) -> str:
    """A stored time as a UTC ISO string for `<time datetime>` ("" when unreadable)."""
    when = parse_time(iso)
    return "" if when is None else when.astimezone(UTC).isoformat(timespec="seconds")
