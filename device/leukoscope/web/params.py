"""Validation of every parameter the web app accepts; a bad one is a 400, never a guess."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

from werkzeug.exceptions import BadRequest
from werkzeug.routing import PathConverter

from leukoscope.appliance.records import OUTCOMES, RecordFilter
from leukoscope.appliance.samples import SampleError, check_sample_id

MAX_LIMIT = 200
DEFAULT_LIMIT = 20
#: Record ids are SQLite rowids: positive and below 2**63.
MAX_ID = 2**63 - 1
#: The daemon's rule for sample ids: what a technician types on a label.
SAMPLE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,63}")
_DIGITS_RE = re.compile(r"[0-9]{1,19}")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def limit(raw: str | None, default: int = DEFAULT_LIMIT) -> int:
    """A page size in 1..MAX_LIMIT."""
    if raw is None or raw == "":
        return default
    if not _DIGITS_RE.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer in 1..{MAX_LIMIT}")
    return int(raw)


def record_id(raw: str | int) -> int:
    """A record id: a positive integer below 2**63 (a bad one is treated as unknown)."""
    text = str(raw)
    if not _DIGITS_RE.fullmatch(text) or not 1 <= int(text) <= MAX_ID:
        raise BadRequest("a record id is a positive integer")
    return int(text)


def cursor(raw: str | None) -> int | None:
    """The `cursor` of a listing: the `next_cursor` a previous page gave (an id)."""
    if raw is None or raw == "":
        return None
    if not _DIGITS_RE.fullmatch(raw) or not 1 <= int(raw) <= MAX_ID:
        raise BadRequest("cursor must be the next_cursor of a previous page")
    return int(raw)


def day(raw: str | None, name: str) -> date | None:
    """A date as YYYY-MM-DD."""
    if raw is None or raw == "":
        return None
    try:
        if not _DATE_RE.fullmatch(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a date as YYYY-MM-DD") from None


#: The query parameters of the CSV export, and of a listing page.
FILTER_KEYS = frozenset({"verdict", "date_from", "date_to"})
LISTING_KEYS = FILTER_KEYS | {"limit", "cursor"}


def known_only(args: Iterable[str], allowed: frozenset[str]) -> None:
    """Refuse a parameter the endpoint does not take: a misspelt filter would list everything."""
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r} (known: {', '.join(sorted(allowed))})")


def result_filter(args: dict[str, str]) -> RecordFilter:
    """The outcome and date range of a listing or an export."""
    outcome = args.get("verdict") or None
    if outcome is not None and outcome not in OUTCOMES:
        raise BadRequest(f"verdict must be one of {', '.join(OUTCOMES)}")
    date_from = day(args.get("date_from"), "date_from")
    date_to = day(args.get("date_to"), "date_to")
    if date_from and date_to and date_from > date_to:
        raise BadRequest("date_from must not be after date_to")
    return RecordFilter(outcome, date_from, date_to)


def sample_id(raw: object) -> str | None:
    """An optional sample id: 1-64 characters, letters, digits, space and . _ : / -."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not SAMPLE_ID_RE.fullmatch(raw):
        raise BadRequest(
            "sample id must be 1-64 characters: letters, digits, space and . _ : / - "
            "(starting with a letter or digit)"
        )
    return raw


def sample_key(raw: object) -> str:
    """A sample id that names a sample (in a path or a start request): required and valid."""
    try:
        return check_sample_id(raw)
    except SampleError as exc:
        raise BadRequest(str(exc)) from None


#: A cell's index in its record's list (a `cells` bundle classifies at most 4,096 cells).
MAX_CELL_INDEX = 1_000_000
_DECIMAL_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")


def cell_index(raw: str | int) -> int:
    """A cell's index within its record: a non-negative integer."""
    text = str(raw)
    if not _DIGITS_RE.fullmatch(text) or int(text) > MAX_CELL_INDEX:
        raise BadRequest("a cell index is a non-negative integer")
    return int(text)


def sample_cursor(raw: str | None) -> float | None:
    """The `cursor` of the sample listing: the `next_cursor` a previous page gave."""
    if raw is None or raw == "":
        return None
    if not _DECIMAL_RE.fullmatch(raw):
        raise BadRequest("cursor must be the next_cursor of a previous page")
    return float(raw)


#: The query parameters of the sample listing.
SAMPLE_LISTING_KEYS = frozenset({"limit", "cursor"})


class SampleIdConverter(PathConverter):
    """A sample id in a URL path: like `path` (ids may hold "/"), but any character, line
    breaks included, so that a bad id reaches `sample_key` and gets its 400, not a 404."""

    regex = "(?s:[^/].*?)"
