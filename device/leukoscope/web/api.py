"""The JSON API: status, results (paged), images, capture, live preview, health, metrics, CSV."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file, stream_with_context, url_for
from werkzeug.exceptions import BadRequest, NotFound, ServiceUnavailable, UnsupportedMediaType

from leukoscope.analysis.reasons import reason_text
from leukoscope.appliance.records import EXPORT_PAGE, Record, RecordFilter
from leukoscope.web import params
from leukoscope.web.common import ctx, login_required
from leukoscope.web.overlay import cell_counts
from leukoscope.web.prometheus import render_metrics
from leukoscope.web.source import CaptureRefusedError

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

bp = Blueprint("api", __name__)

#: CSV columns taken from a record's cell counts (empty in whole-field mode).
CELL_COLUMNS = ("n_found", "n_classified", "n_blasts")
#: The columns of the CSV export, in order (the cell counts last).
CSV_COLUMNS = (
    "id",
    "created_at",
    "trigger",
    "sample_id",
    "outcome",
    "p_leukemia",
    "retake_reasons",
    "error",
    "model_name",
    "model_version",
    "model_sha256",
    "image_sha256",
    "image_deleted",
    "quality",
    "timings_ms",
    *CELL_COLUMNS,
)


def public(record: dict[str, Any] | None, *, full: bool = True) -> dict[str, Any] | None:
    """A record's plain form (`Record.to_json()`, or the daemon's last result) as the API
    shows it: links to its page and image, `cell_counts`, and `retake_messages` (the
    retake reasons in the technician's words).

    Args:
        full: keep the per-cell result (`cells`, up to thousands of boxes); listings and
            the status poll leave it out and carry only `cell_counts`.
    """
    if record is None:
        return None
    out = dict(record)
    out["cell_counts"] = cell_counts(out.get("cells"))
    codes = out.get("retake_reasons")
    out["retake_messages"] = [reason_text(c) for c in codes] if isinstance(codes, list) else []
    if not full:
        out.pop("cells", None)
    rid = out.get("id")
    if isinstance(rid, int):
        out["url"] = url_for("api.result", record_id=rid)
        out["page_url"] = url_for("pages.result", record_id=rid)
        has_image = bool(out.get("image_path")) and not out.get("image_deleted")
        out["image_url"] = url_for("api.result_image", record_id=rid) if has_image else None
    return out


def status_json() -> dict[str, Any]:
    """The daemon's state with the last result made public and the active sample."""
    source = ctx().source
    snap = dict(source.status())
    snap["last_result"] = public(snap.get("last_result"), full=False)
    snap["active_sample"] = source.active_sample()
    snap["time_unix"] = round(time.time(), 3)
    return snap


@bp.get("/api/status")
def status() -> Response:
    """The appliance's state and its latest result."""
    return jsonify(status_json())


def listing_args() -> tuple[int, int | None, RecordFilter]:
    """limit, cursor and filter of a listing request (unknown parameters refused)."""
    args = request.args
    params.known_only(args, params.LISTING_KEYS)
    return (
        params.limit(args.get("limit")),
        params.cursor(args.get("cursor")),
        params.result_filter(args),
    )


@bp.get("/api/results")
def results() -> Response:
    """Records newest first: `limit` (1-200), `cursor`, `verdict`, `date_from`, `date_to`."""
    limit, before, flt = listing_args()
    page = ctx().source.list_results(limit, before, flt)
    return jsonify(
        {
            "items": [public(r.to_json(), full=False) for r in page.items],
            "next_cursor": None if page.next_before is None else str(page.next_before),
        }
    )


def _record(raw: str) -> Record:
    rid = params.record_id(raw)
    rec = ctx().source.get_result(rid)
    if rec is None:
        raise NotFound(f"no result with id {rid}")
    return rec


@bp.get("/api/results/<record_id>")
def result(record_id: str) -> Response:
    """One record with every stored field, the per-cell result (`cells`) included."""
    return jsonify(public(_record(record_id).to_json()))


@bp.get("/api/results/<record_id>/image")
def result_image(record_id: str) -> Response:
    """The photo a record was made from (404 once retention deleted it)."""
    rec = _record(record_id)
    path = ctx().source.image_file(rec)
    if path is None or not path.is_file():
        raise NotFound("this result's image is not kept (none taken, or deleted by retention)")
    resp = send_file(path, conditional=True, max_age=3600)
    resp.headers["Cache-Control"] = "private, max-age=3600"
    return resp


@bp.post("/api/capture")
@login_required
def capture() -> tuple[Response, int]:
    """Start a capture like the button does; JSON or form body may carry `sample_id`."""
    if not request.is_json and request.mimetype not in FORM_TYPES and request.get_data():
        # e.g. JSON sent as text/plain: its sample id would be lost without a word
        raise UnsupportedMediaType("send the body as application/json or as a form")
    body: Any = request.get_json(silent=True) if request.is_json else request.form
    if request.is_json and not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body or ()) - {"sample_id", "csrf_token"})
    if unknown:  # a misspelt sample_id would otherwise be a capture without one
        raise BadRequest(f"unknown field {unknown[0]!r}: the body may only carry sample_id")
    sample_id = params.sample_id((body or {}).get("sample_id"))
    try:
        started = ctx().source.request_capture(sample_id)
    except CaptureRefusedError as exc:
        return jsonify({"error": str(exc), "status": exc.status}), exc.status
    poll = url_for("api.capture_result", capture_id=started["capture_id"])
    resp = jsonify({"accepted": True, "sample_id": sample_id, **started, "poll_url": poll})
    resp.headers["Location"] = poll
    return resp, 202


@bp.get("/api/captures/<capture_id>")
def capture_result(capture_id: str) -> tuple[Response, int]:
    """Where a capture started by POST /api/capture stands: running (poll again), or done
    with its record's id and URLs (or why no record was made)."""
    if not capture_id.isascii() or not capture_id.isdigit() or not 0 < int(capture_id) < 2**63:
        raise BadRequest("a capture id is a positive integer")
    cid = int(capture_id)
    state = ctx().source.capture_result(cid)
    if state is None:
        raise NotFound(f"no capture {cid} (only the last few are kept)")
    out: dict[str, Any] = {"capture_id": cid, **state}
    if not state["done"]:
        out["poll_url"] = url_for("api.capture_result", capture_id=cid)
        resp = jsonify(out)
        resp.headers["Retry-After"] = "1"
        return resp, 200
    rid = state.get("record_id")
    if isinstance(rid, int):
        out["url"] = url_for("api.result", record_id=rid)
        out["page_url"] = url_for("pages.result", record_id=rid)
    return jsonify(out), 200


@bp.post("/api/clock")
@login_required
def clock() -> tuple[Response, int]:
    """A logged-in browser's time ({"unix": seconds}): if the appliance's clock agrees,
    it is trusted for this boot (records then count for retention by age); if not, 409
    with the offset and how to set it."""
    body: Any = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) - {"unix", "csrf_token"}:
        raise BadRequest('send {"unix": <seconds since 1970>} as JSON')
    unix = body.get("unix")
    if isinstance(unix, bool) or not isinstance(unix, int | float) or not 0 < unix < 2**33:
        raise BadRequest("unix must be the browser's time in seconds since 1970")
    reply = ctx().source.confirm_clock(float(unix))
    return jsonify(reply), (200 if reply.get("ok") else 409)


@bp.get("/api/preview.jpg")
def preview() -> Response:
    """The live view's latest low-resolution frame; focus score in X-Focus-* headers."""
    try:
        frame = ctx().source.preview()
    except CaptureRefusedError as exc:
        raise ServiceUnavailable(str(exc)) from None
    resp = Response(frame.jpeg, mimetype="image/jpeg")
    resp.headers["X-Focus-Score"] = f"{frame.focus:.1f}"
    resp.headers["X-Focus-Good"] = "1" if frame.good_enough else "0"
    resp.headers["X-Preview-Paused"] = "1" if frame.paused else "0"
    return resp


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 when the appliance is ready to capture, else 503 with the reason."""
    snap = ctx().source.status()
    if snap.get("ready"):
        return jsonify({"ready": True, "phase": snap.get("phase")}), 200
    faults = snap.get("faults") or {}
    reason = "; ".join(f"{k}: {v}" for k, v in faults.items()) or str(snap.get("phase"))
    return jsonify({"ready": False, "phase": snap.get("phase"), "reason": reason}), 503


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format: captures by outcome, stage timings, faults, disk, model."""
    text = render_metrics(ctx().source.metrics())
    # content_type, not mimetype: Flask adds "; charset=utf-8" to a text mimetype again.
    return Response(text, content_type="text/plain; version=0.0.4; charset=utf-8")


def csv_cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True)
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@bp.get("/api/export.csv")
@login_required
def export_csv() -> Response:
    """Every record matching `verdict`/`date_from`/`date_to`, newest first, as CSV."""
    params.known_only(request.args, params.FILTER_KEYS)
    flt = params.result_filter(request.args)
    source = ctx().source

    def rows() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_COLUMNS)
        for n, rec in enumerate(source.export(flt), 1):
            counts = cell_counts(rec.cells) or {}
            row = {**rec.to_json(), **{c: counts.get(c) for c in CELL_COLUMNS}}
            writer.writerow([csv_cell(row.get(c)) for c in CSV_COLUMNS])
            if n % EXPORT_PAGE == 0:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    resp = Response(stream_with_context(rows()), content_type="text/csv; charset=utf-8")
    resp.headers["Content-Disposition"] = f'attachment; filename="leukoscope-{stamp}.csv"'
    return resp
