"""The samples' JSON API: list, one sample with its cells, start, close, review a cell, cell
crops, the reviewed cells as a ZIP (crops and labels, for retraining) and the samples' CSV.

Every check happens before the appliance is asked: a bad id, an unknown sample, a cell
that is not one of the sample's counted cells, a bad label or reviewer is a 4xx that says
which, and nothing is stored. The helpers here serve the pages' forms too.
"""

from __future__ import annotations

import csv
import io
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request, send_file, url_for
from werkzeug.exceptions import BadRequest, NotFound, UnsupportedMediaType

from leukoscope.appliance.records import Record
from leukoscope.appliance.samples import (
    REVIEWER_RE,
    CellReview,
    ReviewLabel,
    Sample,
    SampleCell,
)
from leukoscope.web import params
from leukoscope.web.api import FORM_TYPES, csv_cell
from leukoscope.web.common import ctx, login_required
from leukoscope.web.crops import crop_png
from leukoscope.web.source import SampleRefusedError

bp = Blueprint("samples_api", __name__)

#: The columns of labels.csv in the review export.
LABEL_COLUMNS = (
    "file",
    "sample_id",
    "record_id",
    "cell_index",
    "label",
    "model_blast",
    "p_blast",
    "reviewer",
    "reviewed_at",
    "model_name",
    "model_version",
    "model_sha256",
)
#: The columns of the samples' CSV.
SAMPLE_CSV_COLUMNS = (
    "id",
    "started_at",
    "state",
    "verdict",
    "message",
    "closed_at",
    "n_fields",
    "n_cells",
    "n_blasts",
    "blast_percent",
    "interval_low",
    "interval_high",
    "threshold_percent",
    "n_reviews",
    "reviewed_n_blasts",
    "reviewed_blast_percent",
    "reviewed_interval_low",
    "reviewed_interval_high",
    "reviewed_verdict",
    "model_name",
    "model_version",
    "model_sha256",
)
#: Above this size the review export is spooled to disk rather than kept in memory.
ZIP_SPOOL_BYTES = 8 * 2**20
LABELS = tuple(label.value for label in ReviewLabel)


# --- lookups and checks (shared with the pages) ---------------------------------------------


def sample_or_404(raw: str) -> Sample:
    """The sample a path names: 400 for a malformed id, 404 for an unknown one."""
    sample_id = params.sample_key(raw)
    sample = ctx().source.get_sample(sample_id)
    if sample is None:
        raise NotFound(f"no sample {sample_id!r}")
    return sample


def cell_or_404(sample: Sample, raw_record: str, raw_index: str) -> SampleCell:
    """One white cell of the sample's counted fields: 400 if malformed, 404 if not there."""
    record_id = params.record_id(raw_record)
    index = params.cell_index(raw_index)
    for cell in ctx().source.sample_cells(sample):
        if cell.record_id == record_id and cell.cell_index == index:
            return cell
    raise NotFound(
        f"sample {sample.id!r} has no cell {index} in record {record_id} "
        "(only the cells of its counted fields can be reviewed)"
    )


def _refused(exc: SampleRefusedError) -> None:
    abort(exc.status, description=str(exc))


def start_sample(raw_id: Any) -> Sample:
    """Start a sample with a checked id (409 if it is in use, 503 if the appliance can't)."""
    sample_id = params.sample_key(raw_id)
    try:
        return ctx().source.start_sample(sample_id)
    except SampleRefusedError as exc:
        _refused(exc)
        raise  # pragma: no cover - abort raised


def close_sample(sample: Sample) -> Sample:
    """Close a sample by hand (closing a closed one changes nothing)."""
    try:
        return ctx().source.close_sample(sample.id)
    except SampleRefusedError as exc:
        _refused(exc)
        raise  # pragma: no cover - abort raised


def check_label(raw: Any) -> str:
    """A review's label: "blast" or "not-blast"."""
    if raw not in LABELS:
        raise BadRequest(f"label must be one of {', '.join(LABELS)}")
    return str(raw)


def check_reviewer(raw: Any) -> str:
    """Who reviews: a name of 1-64 characters, no control characters."""
    if not isinstance(raw, str) or not REVIEWER_RE.match(raw.strip()):
        raise BadRequest("reviewer must be the reviewer's name: 1-64 characters")
    return raw.strip()


def review_cell(sample: Sample, cell: SampleCell, raw_label: Any, raw_reviewer: Any) -> CellReview:
    """Store a checked review of a cell that exists."""
    label, reviewer = check_label(raw_label), check_reviewer(raw_reviewer)
    try:
        return ctx().source.review_cell(sample.id, cell.record_id, cell.cell_index, label, reviewer)
    except SampleRefusedError as exc:
        _refused(exc)
        raise  # pragma: no cover - abort raised


def request_body(allowed: frozenset[str]) -> Mapping[str, Any]:
    """A POST's fields from a JSON object or a form; a field not in `allowed` is refused
    by name (a misspelt one would otherwise be quietly missing)."""
    if not request.is_json and request.mimetype not in FORM_TYPES and request.get_data():
        raise UnsupportedMediaType("send the body as application/json or as a form")
    body: Any = request.get_json(silent=True) if request.is_json else request.form
    if request.is_json and not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    body = body or {}
    unknown = sorted(set(body) - allowed - {"csrf_token"})
    if unknown:
        known = ", ".join(sorted(allowed)) or "nothing"
        raise BadRequest(f"unknown field {unknown[0]!r}: the body may only carry {known}")
    return body


# --- plain forms ------------------------------------------------------------------------------


def sample_urls(sample: Sample) -> dict[str, str]:
    """The links of a sample: its JSON, its page and its report."""
    return {
        "url": url_for("samples_api.sample", sample_id=sample.id),
        "page_url": url_for("sample_pages.sample", sample_id=sample.id),
        "report_url": url_for("sample_pages.report", sample_id=sample.id),
    }


def sample_summary(sample: Sample, active: str | None) -> dict[str, Any]:
    """A sample as listings show it: counts, interval, verdicts; no fields or reviews.

    Args:
        active: the active sample's id (asked once per listing, not once per sample).
    """
    out = sample.to_json()
    out.pop("fields")
    out.pop("reviews")
    out["active"] = sample.id == active
    out.update(sample_urls(sample))
    return out


def review_json(review: CellReview | None) -> dict[str, Any] | None:
    """A review as plain data."""
    if review is None:
        return None
    return {
        "label": review.label.value,
        "model_blast": review.model_blast,
        "p_blast": review.p_blast,
        "reviewer": review.reviewer,
        "reviewed_at": review.reviewed_at,
    }


def cell_json(sample: Sample, cell: SampleCell) -> dict[str, Any]:
    """One white cell of a sample with its review and the links to its crop and record."""
    return {
        "record_id": cell.record_id,
        "cell_index": cell.cell_index,
        "box": list(cell.box),
        "p_blast": cell.p_blast,
        "model_blast": cell.model_blast,
        "review": review_json(cell.review),
        "crop_url": crop_url(sample, cell),
        "result_url": url_for("pages.result", record_id=cell.record_id),
    }


def crop_url(sample: Sample, cell: SampleCell) -> str:
    """Where a cell's crop is served."""
    return url_for(
        "samples_api.cell_image",
        sample_id=sample.id,
        record_id=cell.record_id,
        cell_index=cell.cell_index,
    )


def sample_json(sample: Sample) -> dict[str, Any]:
    """A sample with its fields, reviews and cells (blasts first) as the API gives it."""
    out = sample.to_json()
    out["active"] = sample.id == ctx().source.active_sample()
    out.update(sample_urls(sample))
    out["cells"] = [cell_json(sample, c) for c in ctx().source.sample_cells(sample)]
    return out


# --- endpoints --------------------------------------------------------------------------------


@bp.get("/api/samples")
def samples() -> Response:
    """Samples newest first: `limit` (1-200), `cursor` (the previous page's next_cursor)."""
    params.known_only(request.args, params.SAMPLE_LISTING_KEYS)
    limit = params.limit(request.args.get("limit"))
    before = params.sample_cursor(request.args.get("cursor"))
    page = ctx().source.list_samples(limit, before)
    cursor = None if page.next_before is None else f"{page.next_before:.6f}"
    active = ctx().source.active_sample()
    return jsonify(
        {
            "items": [sample_summary(s, active) for s in page.items],
            "next_cursor": cursor,
            "active_sample": active,
        }
    )


@bp.post("/api/samples")
@login_required
def start() -> tuple[Response, int]:
    """Start a sample: `{"sample_id": ...}`; later captures are its fields."""
    body = request_body(frozenset({"sample_id"}))
    if "sample_id" not in body:
        raise BadRequest("give the new sample's sample_id")
    sample = start_sample(body["sample_id"])
    resp = jsonify(sample_json(sample))
    resp.headers["Location"] = url_for("samples_api.sample", sample_id=sample.id)
    return resp, 201


@bp.get("/api/samples/<sample:sample_id>")
def sample(sample_id: str) -> Response:
    """One sample: fields, counts, interval, verdicts, reviews and its cells."""
    params.known_only(request.args, frozenset())
    return jsonify(sample_json(sample_or_404(sample_id)))


@bp.post("/api/samples/<sample:sample_id>/close")
@login_required
def close(sample_id: str) -> Response:
    """Close a sample by hand: it takes no more fields."""
    request_body(frozenset())
    return jsonify(sample_json(close_sample(sample_or_404(sample_id))))


@bp.post("/api/samples/<sample:sample_id>/cells/<record_id>/<cell_index>/review")
@login_required
def review(sample_id: str, record_id: str, cell_index: str) -> Response:
    """Review one cell: `{"label": "blast" | "not-blast", "reviewer": ...}`."""
    body = request_body(frozenset({"label", "reviewer"}))
    s = sample_or_404(sample_id)
    cell = cell_or_404(s, record_id, cell_index)
    done = review_cell(s, cell, body.get("label"), body.get("reviewer"))
    after = ctx().source.get_sample(s.id) or s
    summary = sample_summary(after, ctx().source.active_sample())
    return jsonify({"review": review_json(done), "sample": summary})


@bp.get("/api/samples/<sample:sample_id>/cells/<record_id>/<cell_index>.png")
def cell_image(sample_id: str, record_id: str, cell_index: str) -> Response:
    """A cell cut from its stored photo with a margin (404 once retention deleted it)."""
    s = sample_or_404(sample_id)
    cell = cell_or_404(s, record_id, cell_index)
    png = _crop(cell, ctx().source.get_result(cell.record_id))
    if png is None:
        raise NotFound("this cell's photo is not kept (deleted by retention)")
    resp = Response(png, mimetype="image/png")
    resp.headers["Cache-Control"] = "private, max-age=3600"
    return resp


def _image_size(record: Record | None) -> Any:
    cells = None if record is None else record.cells
    return cells.get("image_size") if isinstance(cells, dict) else None


def _crop(cell: SampleCell, record: Record | None) -> bytes | None:
    if record is None:
        return None
    path = ctx().source.image_file(record)
    if path is None:
        return None
    return crop_png(path, cell.box, _image_size(record))


@bp.get("/api/reviews/export.zip")
@login_required
def reviews_zip() -> Response:
    """Every reviewed cell as a PNG crop, and labels.csv: the reviews with the model's
    call beside them, for retraining. A cell whose photo is gone has an empty `file`."""
    params.known_only(request.args, frozenset())
    source = ctx().source
    spool = tempfile.SpooledTemporaryFile(max_size=ZIP_SPOOL_BYTES)  # noqa: SIM115 - sent below
    labels = io.StringIO()
    writer = csv.writer(labels)
    writer.writerow(LABEL_COLUMNS)
    records: dict[int, Record | None] = {}
    with zipfile.ZipFile(spool, "w") as zf:
        for n, (s, cell, _photo) in enumerate(source.reviewed_cells(), 1):
            if cell.review is None:
                continue
            if cell.record_id not in records:
                records[cell.record_id] = source.get_result(cell.record_id)
            png = _crop(cell, records[cell.record_id])
            name = f"cells/{n:05d}_r{cell.record_id}_c{cell.cell_index}.png" if png else ""
            if png:
                zf.writestr(name, png, compress_type=zipfile.ZIP_STORED)  # PNG is compressed
            r = cell.review
            row = (
                name, s.id, cell.record_id, cell.cell_index, r.label.value,
                int(r.model_blast), r.p_blast, r.reviewer, r.reviewed_at,
                s.model_name, s.model_version, s.model_sha256,
            )  # fmt: skip
            writer.writerow([csv_cell(v) for v in row])
        zf.writestr("labels.csv", labels.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    spool.seek(0)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return send_file(
        spool,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"leukoscope-reviews-{stamp}.zip",
    )


def sample_row(sample: Sample) -> list[str]:
    """A sample's row of the samples' CSV."""
    d, rd = sample.differential(), sample.reviewed_differential()
    values: dict[str, Any] = {
        "id": sample.id,
        "started_at": sample.started_at,
        "state": sample.state.value,
        "verdict": None if sample.verdict is None else sample.verdict.value,
        "message": sample.message,
        "closed_at": sample.closed_at,
        "n_fields": d.n_fields,
        "n_cells": d.n_cells,
        "n_blasts": d.n_blasts,
        "blast_percent": round(d.blast_percent, 3),
        "interval_low": round(d.interval_percent[0], 3),
        "interval_high": round(d.interval_percent[1], 3),
        "threshold_percent": round(100 * sample.rule.threshold, 3),
        "n_reviews": len(sample.reviews),
        "reviewed_n_blasts": rd.n_blasts,
        "reviewed_blast_percent": round(rd.blast_percent, 3),
        "reviewed_interval_low": round(rd.interval_percent[0], 3),
        "reviewed_interval_high": round(rd.interval_percent[1], 3),
        "reviewed_verdict": None if rd.verdict is None else rd.verdict.value,
        "model_name": sample.model_name,
        "model_version": sample.model_version,
        "model_sha256": sample.model_sha256,
    }
    return [csv_cell(values[c]) for c in SAMPLE_CSV_COLUMNS]


#: Samples read per page by the CSV export.
CSV_PAGE = 200


@bp.get("/api/samples.csv")
@login_required
def samples_csv() -> Response:
    """Every sample, newest first, as CSV (counts, interval, verdicts, reviews, model)."""
    params.known_only(request.args, frozenset())
    source = ctx().source

    def rows() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(SAMPLE_CSV_COLUMNS)
        before: float | None = None
        while True:
            page = source.list_samples(CSV_PAGE, before)
            for s in page.items:
                writer.writerow(sample_row(s))
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
            if page.next_before is None:
                return
            before = page.next_before

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    resp = Response(rows(), content_type="text/csv; charset=utf-8")
    resp.headers["Content-Disposition"] = f'attachment; filename="leukoscope-samples-{stamp}.csv"'
    return resp
