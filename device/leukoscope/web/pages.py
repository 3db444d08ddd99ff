"""The HTML pages: status, history, result detail, model, health, login."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, TooManyRequests

from leukoscope.appliance.records import OUTCOMES, RecordFilter
from leukoscope.web import charts, display, params
from leukoscope.web.api import listing_args, public, status_json
from leukoscope.web.auth import MAX_PASSWORD_CHARS, PasswordFileError, new_csrf_token
from leukoscope.web.common import ctx, error_response, login_required
from leukoscope.web.modelview import MAX_METRIC_ROWS, summarise
from leukoscope.web.overlay import CellView, cell_view
from leukoscope.web.reasons import reason_text
from leukoscope.web.source import CaptureRefusedError

bp = Blueprint("pages", __name__)


def _page(template: str, code: int = 200, **values: Any) -> tuple[str, int]:
    return render_template(template, **values), code


#: The history chart's days, and at most how many records its pictures read.
CHART_DAYS = 14
CHART_MAX_RECORDS = 20_000


def _latest_view(s: dict[str, Any]) -> CellView | None:
    """The latest result's white-cell boxes for the banner's thumbnail (None: none)."""
    last = s.get("last_result")
    if not isinstance(last, dict) or not isinstance(last.get("id"), int):
        return None
    rec = ctx().source.get_result(last["id"])
    return None if rec is None else cell_view(rec.cells)


@bp.get("/")
def status() -> tuple[str, int]:
    """The verdict of the latest result first, then the appliance's state and the live view."""
    s = status_json()
    return _page("status.html", active="status", s=s, cv=_latest_view(s))


@bp.get("/status/latest")
def latest() -> tuple[str, int]:
    """The latest result's banner and details alone (the status page's script swaps it in
    when a new result arrives, so the page and the script draw it the same way)."""
    s = status_json()
    return _page("_latest.html", s=s, cv=_latest_view(s))


def _thresholds() -> tuple[float | None, float | None]:
    """The current model's verdict thresholds (low, high), or Nones."""
    for b in ctx().source.models():
        th = b.get("thresholds")
        if b.get("role") == "current" and isinstance(th, list | tuple) and len(th) == 2:
            lo, hi = th
            if isinstance(lo, int | float) and isinstance(hi, int | float):
                return float(lo), float(hi)
    return None, None


def history_charts(today: date | None = None) -> tuple[charts.HistoryChart, charts.ScoreChart]:
    """The last CHART_DAYS days' results per day, and their leukemia scores."""
    zone = display.local_zone()
    today = today or datetime.now(zone).date()
    # the filter's days are UTC days: take one more, the chart keeps the local ones
    start = today - timedelta(days=CHART_DAYS)
    records = list(
        itertools.islice(ctx().source.export(RecordFilter(date_from=start)), CHART_MAX_RECORDS)
    )
    per_day = charts.history_chart(
        ((r.created_unix, r.outcome) for r in records), today, zone, CHART_DAYS
    )
    first = per_day.days[0].day
    scores = (
        r.p_leukemia
        for r in records
        if r.p_leukemia is not None and charts.local_day(r.created_unix, zone) >= first
    )
    return per_day, charts.score_chart(scores, *_thresholds())


@bp.get("/history")
def history() -> tuple[str, int]:
    """Past results, newest first, filtered by verdict and date."""
    limit, before, flt = listing_args()
    page = ctx().source.list_results(limit, before, flt)
    query: dict[str, Any] = {
        k: v
        for k, v in {
            "verdict": flt.outcome,
            "date_from": flt.date_from,
            "date_to": flt.date_to,
        }.items()
        if v
    }
    older = (
        None
        if page.next_before is None
        else url_for("pages.history", cursor=page.next_before, limit=limit, **query)
    )
    return _page(
        "history.html",
        active="history",
        items=[public(r.to_json(), full=False) for r in page.items],
        flt=flt,
        outcomes=OUTCOMES,
        older=older,
        newest=before is not None,
        export_url=url_for("api.export_csv", **query),
        newest_url=url_for("pages.history", limit=limit, **query),
        charts=history_charts() if before is None else None,
    )


@bp.get("/results/<record_id>")
def result(record_id: str) -> tuple[str, int]:
    """One result with its photo (and white cells boxed, in cells mode) and every field."""
    rid = params.record_id(record_id)
    rec = ctx().source.get_result(rid)
    if rec is None:
        return _page("error.html", 404, status=404, message=f"no result with id {rid}")
    return _page("result.html", active="history", r=public(rec.to_json()), cv=cell_view(rec.cells))


@bp.get("/model")
def model() -> tuple[str, int]:
    """The current and previous model bundles, their cards and metrics."""
    bundles = ctx().source.models()
    return _page(
        "model.html",
        active="model",
        bundles=[(b, summarise(b)) for b in bundles],
        max_rows=MAX_METRIC_ROWS,
    )


@bp.get("/health")
def health() -> tuple[str, int]:
    """Camera, model, disk, temperature, uptime and versions."""
    return _page("health.html", active="health", h=ctx().source.health())


def safe_next(raw: str | None) -> str:
    """Where to go after logging in: only a path on this site."""
    if not raw:
        return url_for("pages.status")
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not raw.startswith("/") or raw.startswith("//"):
        return url_for("pages.status")
    if "\\" in raw or any(ord(c) < 32 for c in raw):
        return url_for("pages.status")
    return raw


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """The password form; failures are rate-limited per client."""
    c = ctx()
    nxt = safe_next(request.values.get("next"))
    try:
        password_set = c.password.is_set()
    except PasswordFileError:
        password_set = False
    if request.method == "GET":
        return _page("login.html", active="login", next=nxt, password_set=password_set)
    client = request.remote_addr or "?"
    wait = c.limiter.retry_after(client)
    if wait:
        raise TooManyRequests(f"too many failed logins: try again in {wait} s", retry_after=wait)
    password = request.form.get("password", "")
    if len(password) > MAX_PASSWORD_CHARS:
        raise BadRequest("password too long")
    if not password_set:
        return _page(
            "login.html",
            401,
            active="login",
            next=nxt,
            password_set=False,
            error="No password is set: run `leukoscope set-password` on the device.",
        )
    try:
        ok = c.password.check(password)
    except PasswordFileError:
        return error_response(500, "the password file is unreadable; see the daemon's log")
    if not ok:
        c.limiter.failed(client)
        return _page(
            "login.html",
            401,
            active="login",
            next=nxt,
            password_set=True,
            error="Wrong password.",
        )
    c.limiter.succeeded(client)
    session.clear()
    session.permanent = True
    session["user"] = "maintainer"
    session["pw"] = c.password.fingerprint()
    session["csrf"] = new_csrf_token()
    return redirect(nxt, code=303)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the session."""
    session.clear()
    return redirect(url_for("pages.status"), code=303)


@bp.post("/capture")
@login_required
def capture() -> ResponseReturnValue:
    """The capture form without JavaScript: start one and go back to the status page."""
    sample_id = params.sample_id(request.form.get("sample_id"))
    try:
        ctx().source.request_capture(sample_id)
    except CaptureRefusedError as exc:
        return _page("error.html", exc.status, status=exc.status, message=str(exc))
    return redirect(url_for("pages.status"), code=303)


@bp.app_template_filter("pct")
def pct(value: float | None) -> str:
    """A probability as a percentage."""
    return "–" if value is None else f"{100.0 * float(value):.1f} %"


bp.app_template_filter("reason")(reason_text)
bp.app_template_filter("label")(display.label)
bp.app_template_filter("value")(display.value)
bp.app_template_filter("rows")(display.rows)
bp.app_template_filter("local_text")(display.local_text)
bp.app_template_filter("utc_iso")(display.utc_iso)


@bp.app_template_filter("mib")
def mib(value: float | None) -> str:
    """Bytes as MiB or GiB."""
    if value is None:
        return "–"
    v = float(value)
    return f"{v / 2**30:.1f} GiB" if v >= 2**30 else f"{v / 2**20:.0f} MiB"


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """Seconds as d h m."""
    if seconds is None:
        return "–"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d} d {h} h {m} min" if d else (f"{h} h {m} min" if h else f"{m} min {s} s")
