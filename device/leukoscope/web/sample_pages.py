"""The sample pages: the list, one sample (fields, counts, the bar, both readings, the
gallery with its review buttons) and the printable one-page report; and their forms.

Every form works without JavaScript: it posts, and the answer is a redirect back to the
page (or an error page that says what was wrong). The checks are the API's own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest

from leukoscope.appliance.samples import Sample
from leukoscope.web import params
from leukoscope.web.common import ctx, login_required
from leukoscope.web.pages import safe_next
from leukoscope.web.sample_api import (
    cell_or_404,
    check_reviewer,
    close_sample,
    crop_url,
    request_body,
    review_cell,
    sample_or_404,
    start_sample,
)
from leukoscope.web.sampleview import bar, called_blast, field_rows, report_cells, scale_top

bp = Blueprint("sample_pages", __name__)

#: The report shows at most this many blast thumbnails (it must fit one printed page).
REPORT_THUMBS = 24


def _readings(sample: Sample) -> dict[str, Any]:
    """The model's and the reviewed reading of a sample, with their bars on one scale."""
    d, rd = sample.differential(), sample.reviewed_differential()
    threshold = 100.0 * sample.rule.threshold
    top = scale_top(max(d.interval_percent[1], rd.interval_percent[1]))
    return {
        "d": d,
        "rd": rd,
        "threshold": threshold,
        "bar": bar(d.blast_percent, d.interval_percent, threshold, top),
        "reviewed_bar": bar(rd.blast_percent, rd.interval_percent, threshold, top),
    }


@bp.get("/samples")
def samples() -> tuple[str, int]:
    """The samples, newest first, and the form that starts one."""
    params.known_only(request.args, params.SAMPLE_LISTING_KEYS)
    limit = params.limit(request.args.get("limit"))
    before = params.sample_cursor(request.args.get("cursor"))
    page = ctx().source.list_samples(limit, before)
    older = (
        None
        if page.next_before is None
        else url_for("sample_pages.samples", cursor=f"{page.next_before:.6f}", limit=limit)
    )
    return render_template(
        "samples.html",
        active="samples",
        items=page.items,
        active_sample=ctx().source.active_sample(),
        older=older,
        newest_url=url_for("sample_pages.samples", limit=limit) if before is not None else None,
    ), 200


@bp.post("/samples")
@login_required
def start() -> ResponseReturnValue:
    """The start form: start a sample and go to its page."""
    body = request_body(frozenset({"sample_id"}))
    sample = start_sample(body.get("sample_id"))
    return redirect(url_for("sample_pages.sample", sample_id=sample.id), code=303)


@bp.post("/reviewer")
@login_required
def reviewer() -> ResponseReturnValue:
    """Remember who reviews in this session (the review buttons then sign with it)."""
    body = request_body(frozenset({"reviewer", "next"}))
    session["reviewer"] = check_reviewer(body.get("reviewer"))
    return redirect(safe_next(body.get("next")), code=303)


@bp.get("/samples/<sample:sample_id>")
def sample(sample_id: str) -> tuple[str, int]:
    """One sample: its fields, its counts and bar, both readings, and the gallery."""
    params.known_only(request.args, frozenset())
    s = sample_or_404(sample_id)
    cells = ctx().source.sample_cells(s)
    return render_template(
        "sample.html",
        active="samples",
        s=s,
        fields=field_rows(s),
        cells=cells,
        crop_url=lambda c: crop_url(s, c),
        called_blast=called_blast,
        is_active=ctx().source.active_sample() == s.id,
        reviewer=session.get("reviewer"),
        **_readings(s),
    ), 200


@bp.get("/samples/<sample:sample_id>/report")
def report(sample_id: str) -> tuple[str, int]:
    """The printable one-page report of a sample."""
    params.known_only(request.args, frozenset())
    s = sample_or_404(sample_id)
    shown = report_cells(ctx().source.sample_cells(s))
    return render_template(
        "report.html",
        active="report",
        s=s,
        thumbs=shown[:REPORT_THUMBS],
        more=max(0, len(shown) - REPORT_THUMBS),
        crop_url=lambda c: crop_url(s, c),
        called_blast=called_blast,
        now_iso=datetime.now(UTC).isoformat(timespec="seconds"),
        **_readings(s),
    ), 200


@bp.post("/samples/<sample:sample_id>/close")
@login_required
def close(sample_id: str) -> ResponseReturnValue:
    """The close button: the sample takes no more fields."""
    request_body(frozenset())
    s = close_sample(sample_or_404(sample_id))
    return redirect(url_for("sample_pages.sample", sample_id=s.id), code=303)


@bp.post("/samples/<sample:sample_id>/cells/<record_id>/<cell_index>/review")
@login_required
def review(sample_id: str, record_id: str, cell_index: str) -> ResponseReturnValue:
    """A review button: store the reading, signed with this session's reviewer."""
    body = request_body(frozenset({"label", "reviewer"}))
    s = sample_or_404(sample_id)
    cell = cell_or_404(s, record_id, cell_index)
    who = body.get("reviewer") or session.get("reviewer")
    if not who:
        raise BadRequest("give your name as the reviewer first (the form above the cells)")
    review_cell(s, cell, body.get("label"), who)
    session["reviewer"] = check_reviewer(who)
    anchor = f"cell-{cell.record_id}-{cell.cell_index}"
    return redirect(url_for("sample_pages.sample", sample_id=s.id, _anchor=anchor), code=303)
