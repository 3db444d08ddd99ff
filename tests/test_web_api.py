"""The status page's JSON API and pages on a fake appliance: every endpoint, every bad input."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from leukoscope.config import WebConfig
from leukoscope.web import create_app
from leukoscope.web.auth import write_password_file
from leukoscope.web.fake import FakeSource

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"')


@pytest.fixture
def source(tmp_path: Path) -> FakeSource:
    return FakeSource(tmp_path / "images")


def make_app(source: FakeSource, tmp_path: Path, read_access: str = "open") -> Flask:
    pw = tmp_path / "web-password"
    if not pw.exists():
        write_password_file(pw, PASSWORD)
    cfg = WebConfig(password_file=pw, read_access=read_access)
    return create_app(source, cfg)


def csrf_of(client: FlaskClient, path: str = "/login") -> str:
    """The CSRF token a page gives this client's session."""
    m = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert m, "page without a CSRF token"
    return m.group(1)


def login(client: FlaskClient, password: str = PASSWORD) -> tuple[int, str]:
    """Log in through the form; return the status and the session's new CSRF token."""
    token = csrf_of(client)
    resp = client.post("/login", data={"password": password, "csrf_token": token})
    if resp.status_code != 303:
        return resp.status_code, token
    return resp.status_code, csrf_of(client, "/")


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def fill(source: FakeSource, n: int) -> None:
    outcomes = ("no-leukemia-suspected", "leukemia-suspected", "retake")
    for i in range(n):
        source.add_record(outcomes[i % 3], p=0.1 + 0.01 * i)


# --- status, health, metrics ---------------------------------------------------------------


def test_status_reports_the_latest_result_with_links(client: FlaskClient, source: FakeSource):
    assert client.get("/api/status").get_json()["last_result"] is None
    rec = source.add_record("leukemia-suspected", p=0.91, sample_id="S-1")
    body = client.get("/api/status").get_json()
    assert body["ready"] is True and body["phase"] == "ready"
    last = body["last_result"]
    assert last["id"] == rec.id and last["outcome"] == "leukemia-suspected"
    assert last["image_url"] == f"/api/results/{rec.id}/image"
    assert last["page_url"] == f"/results/{rec.id}"
    page = client.get("/").get_data(as_text=True)
    assert "Leukemia suspected" in page and "91.0 %" in page and "S-1" in page


def test_healthz_is_200_when_ready_and_503_with_the_reason(client, source):
    ok = client.get("/healthz")
    assert ok.status_code == 200 and ok.get_json()["ready"] is True
    source.faults["camera"] = "no camera detected"
    bad = client.get("/healthz")
    assert bad.status_code == 503
    assert "camera: no camera detected" in bad.get_json()["reason"]


def test_metrics_are_prometheus_text(client, source):
    fill(source, 5)
    source.faults["storage"] = "disk full"
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    assert 'leukoscope_captures_total{outcome="no-leukemia-suspected"} 2' in text
    assert 'leukoscope_captures_total{outcome="retake"} 1' in text
    assert re.search(r'leukoscope_stage_seconds\{stage="inference",quantile="0.5"\} 0\.03', text)
    assert 'leukoscope_fault{part="storage"} 1' in text
    assert 'leukoscope_fault{part="camera"} 0' in text
    assert "leukoscope_disk_free_bytes 10737418240" in text
    assert 'leukoscope_model_info{name="fake-model",version="1.2.3",' in text
    sample = re.compile(r'^[a-z_]+(\{[a-z_0-9]+="[^"]*"(,[a-z_0-9]+="[^"]*")*\})? [-+0-9.eE]+$')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.match(line), line


def test_health_and_model_pages(client):
    health = client.get("/health").get_data(as_text=True)
    assert "48.3 °C" in health and "10.0 GiB" in health and "leukoscope" in health
    model = client.get("/model").get_data(as_text=True)
    assert "Current: fake-model 1.2.3" in model and "Previous: fake-model 1.2.2" in model
    assert "Sensitivity" in model and "{'" not in model  # words, not a Python dict


def test_preview_is_a_jpeg_with_its_focus_score(client, source):
    resp = client.get("/api/preview.jpg")
    assert resp.status_code == 200 and resp.data[:2] == b"\xff\xd8"
    assert resp.headers["X-Focus-Score"] == "42.0" and resp.headers["X-Focus-Good"] == "1"
    source.faults["camera"] = "gone"
    assert client.get("/api/preview.jpg").status_code == 503


# --- listing, paging, filters ----------------------------------------------------------


def test_results_page_through_everything_newest_first(client, source):
    fill(source, 25)
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        url = "/api/results?limit=10" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url).get_json()
        seen += [r["id"] for r in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(25, 0, -1))


@pytest.mark.parametrize(
    "query",
    [
        "limit=-1",
        "limit=0",
        "limit=201",
        "limit=99999999999999999999999",
        "limit=abc",
        "limit=1.5",
        "limit=%EF%BC%91",  # a full-width digit one
        "cursor=abc",
        "cursor=-5",
        "cursor=0",
        "cursor=1e3",
        "cursor=" + "9" * 30,
        "cursor=%D9%A3",  # an Arabic-Indic digit three
        "verdict=maybe",
        "date_from=2026-13-01",
        "date_from=yesterday",
        "date_to=2026-02-30",
        "date_from=2026-05-02&date_to=2026-05-01",
    ],
)
def test_bad_listing_parameters_are_400(client, source, query):
    fill(source, 3)
    resp = client.get("/api/results?" + query)
    assert resp.status_code == 400, query
    assert "error" in resp.get_json()
    assert client.get("/history?" + query).status_code == 400


def test_a_misspelt_filter_is_400_not_everything(client, source):
    fill(source, 3)
    for path in ("/api/results?verdcit=retake", "/history?verdcit=retake"):
        resp = client.get(path, headers={"Accept": "application/json"})
        assert resp.status_code == 400
    assert "'verdcit'" in client.get("/api/results?verdcit=retake").get_json()["error"]
    login(client)
    assert client.get("/api/export.csv?limit=5").status_code == 400  # the export has no pages


@pytest.mark.parametrize("query", ["limit=5&limit=7", "verdict=retake&verdict=fault"])
def test_a_repeated_parameter_is_400_not_a_guess(client, source, query):
    fill(source, 3)
    resp = client.get("/api/results?" + query)
    assert resp.status_code == 400
    assert query.split("=")[0] + " is given 2 times" in resp.get_json()["error"]


def test_filters_by_verdict_and_date(client, source):
    source.add_record("retake", created=datetime(2026, 5, 1, 10, tzinfo=UTC))
    source.add_record("leukemia-suspected", created=datetime(2026, 5, 2, 23, 59, tzinfo=UTC))
    source.add_record("leukemia-suspected", created=datetime(2026, 5, 3, 0, 1, tzinfo=UTC))

    def ids(q: str) -> list[int]:
        return [r["id"] for r in client.get("/api/results?" + q).get_json()["items"]]

    assert ids("verdict=leukemia-suspected") == [3, 2]
    assert ids("date_from=2026-05-02&date_to=2026-05-02") == [2]
    assert ids("verdict=retake&date_from=2026-05-02") == []
    page = client.get("/history?verdict=leukemia-suspected").get_data(as_text=True)
    assert 'href="/results/3"' in page and 'href="/results/1"' not in page


def test_history_pages_with_an_older_link(client, source):
    fill(source, 7)
    page = client.get("/history?limit=5").get_data(as_text=True)
    assert 'href="/results/7"' in page and 'href="/results/2"' not in page
    older = re.search(r'id="older" href="([^"]+)"', page)
    assert older
    page2 = client.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert 'href="/results/2"' in page2 and 'href="/results/3"' not in page2


# --- one result ------------------------------------------------------------------------------


def test_result_detail_json_page_and_image(client, source):
    rec = source.add_record("no-leukemia-suspected", p=0.12, sample_id="LAB 7/2")
    body = client.get(f"/api/results/{rec.id}").get_json()
    assert body["sample_id"] == "LAB 7/2" and body["model_sha256"] == "ab" * 32
    page = client.get(f"/results/{rec.id}").get_data(as_text=True)
    assert "No leukemia suspected" in page and "LAB 7/2" in page and "12.0 %" in page
    img = client.get(f"/api/results/{rec.id}/image")
    assert img.status_code == 200 and img.mimetype == "image/jpeg"
    assert img.data == (source.images_dir / rec.image_path).read_bytes()


def test_deleted_image_is_404_but_the_record_stays(client, source):
    rec = source.add_record("retake", image_deleted=True)
    assert client.get(f"/api/results/{rec.id}/image").status_code == 404
    assert client.get(f"/api/results/{rec.id}").status_code == 200
    page = client.get(f"/results/{rec.id}").get_data(as_text=True)
    assert "deleted by retention" in page
    assert re.search(r"<th>Retake because</th><td>[^<]*out of focus", page)  # in words


@pytest.mark.parametrize(
    ("rid", "status"),
    [("99999", 404), ("abc", 400), ("-1", 400), ("0", 400), ("9" * 30, 400), ("1.0", 400)],
)
def test_bad_or_unknown_ids(client, source, rid, status):
    source.add_record("retake")
    for path in (f"/api/results/{rid}", f"/api/results/{rid}/image", f"/results/{rid}"):
        resp = client.get(path)
        assert resp.status_code == status, path
        assert b"Traceback" not in resp.data


# --- capture ----------------------------------------------------------------------------------


def test_capture_from_the_api_yields_a_new_result(client, source):
    fill(source, 1)
    _, token = login(client)
    seq = client.get("/api/status").get_json()["result_seq"]
    resp = client.post(
        "/api/capture", json={"sample_id": "P-0042"}, headers={"X-CSRF-Token": token}
    )
    assert resp.status_code == 202
    assert resp.get_json()["result_seq"] == seq
    wait_until(lambda: client.get("/api/status").get_json()["result_seq"] > seq)
    last = client.get("/api/status").get_json()["last_result"]
    assert last["sample_id"] == "P-0042" and last["id"] == 2


def test_capture_form_without_javascript(client, source):
    _, token = login(client)
    resp = client.post("/capture", data={"csrf_token": token, "sample_id": "F1"})
    assert resp.status_code == 303 and resp.headers["Location"] == "/"
    wait_until(lambda: source.get_result(1) is not None)
    assert source.captures_requested == ["F1"]


def test_capture_needs_a_login_and_a_csrf_token(client, source):
    token = csrf_of(client)
    anon = client.post("/api/capture", json={}, headers={"X-CSRF-Token": token})
    assert anon.status_code == 401
    _, token = login(client)
    no_token = client.post("/api/capture", json={})
    assert no_token.status_code == 403
    wrong = client.post("/api/capture", json={}, headers={"X-CSRF-Token": token[:-2] + "xx"})
    assert wrong.status_code == 403
    assert client.post("/capture", data={"sample_id": "A"}).status_code == 403
    assert source.captures_requested == []
    assert client.get("/api/status").get_json()["result_seq"] == 0


@pytest.mark.parametrize(
    "sample_id",
    [
        "x" * 65,
        "Probe-ä",
        "サンプル",
        " leading-space",
        "-starts-with-dash",
        "a\nb",
        "ok\n",
        "semi;colon",
        "<script>",
        42,
        ["a"],
    ],
)
def test_bad_sample_ids_are_400_and_start_nothing(client, source, sample_id):
    _, token = login(client)
    resp = client.post(
        "/api/capture", json={"sample_id": sample_id}, headers={"X-CSRF-Token": token}
    )
    assert resp.status_code == 400
    assert "sample id" in resp.get_json()["error"]
    assert source.captures_requested == []


def test_capture_while_busy_is_409_and_with_a_fault_503(client, source):
    source.capture_s = 0.5
    _, token = login(client)
    h = {"X-CSRF-Token": token}
    assert client.post("/api/capture", json={}, headers=h).status_code == 202
    busy = client.post("/api/capture", json={}, headers=h)
    assert busy.status_code == 409 and "busy" in busy.get_json()["error"]
    wait_until(lambda: source.status()["phase"] == "ready")
    source.faults["camera"] = "not detected"
    refused = client.post("/api/capture", json={}, headers=h)
    assert refused.status_code == 503 and "not detected" in refused.get_json()["error"]
    assert len(source.captures_requested) == 1


def test_capture_body_must_be_an_object_and_small(client, source):
    _, token = login(client)
    h = {"X-CSRF-Token": token}
    assert client.post("/api/capture", json=["x"], headers=h).status_code == 400
    big = client.post("/api/capture", data="x" * 40_000, headers=h, content_type="application/json")
    assert big.status_code == 413
    assert client.get("/api/capture").status_code == 405
    assert source.captures_requested == []


def test_capture_body_of_another_type_misspelt_or_repeated_starts_nothing(client, source):
    _, token = login(client)
    h = {"X-CSRF-Token": token}
    as_text = client.post(
        "/api/capture", data='{"sample_id": "P-7"}', headers=h, content_type="text/plain"
    )
    assert as_text.status_code == 415 and "application/json" in as_text.get_json()["error"]
    misspelt = client.post("/api/capture", json={"sampleid": "P-7"}, headers=h)
    assert misspelt.status_code == 400 and "'sampleid'" in misspelt.get_json()["error"]
    twice = client.post("/api/capture", data={"sample_id": ["P-7", "P-8"]}, headers=h)
    assert twice.status_code == 400 and "sample_id" in twice.get_json()["error"]
    assert source.captures_requested == []


# --- login, sessions, access ------------------------------------------------------------------


def test_wrong_password_is_401_and_grants_nothing(client, source):
    status, token = login(client, "not the password")
    assert status == 401
    resp = client.post("/api/capture", json={}, headers={"X-CSRF-Token": token})
    assert resp.status_code == 401 and source.captures_requested == []
    assert client.get("/api/export.csv").status_code == 401


def test_login_without_csrf_token_is_refused(client):
    client.get("/login")
    resp = client.post("/login", data={"password": PASSWORD})
    assert resp.status_code == 403
    assert client.get("/api/export.csv").status_code == 401


def test_failed_logins_are_rate_limited(client):
    for _ in range(5):
        assert login(client, "guess")[0] == 401
    token = csrf_of(client)
    limited = client.post("/login", data={"password": PASSWORD, "csrf_token": token})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert client.get("/api/export.csv").status_code == 401  # the right password did not pass


def test_logout_ends_the_session(client, source):
    _, token = login(client)
    assert client.post("/logout", data={}).status_code == 403  # CSRF applies to logout too
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    resp = client.post("/api/capture", json={}, headers={"X-CSRF-Token": token})
    assert resp.status_code in (401, 403) and source.captures_requested == []


def test_a_new_password_ends_old_sessions(client, tmp_path):
    login(client)
    assert client.get("/api/export.csv").status_code == 200
    write_password_file(tmp_path / "web-password", "another long password")
    assert client.get("/api/export.csv").status_code == 401


def test_login_redirects_only_within_the_site(client):
    token = csrf_of(client)
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        resp = client.post("/login", data={"password": PASSWORD, "csrf_token": token, "next": evil})
        assert resp.status_code == 303 and resp.headers["Location"] == "/", evil
        token = csrf_of(client, "/")
    resp = client.post(
        "/login",
        data={"password": PASSWORD, "csrf_token": token, "next": "/history?verdict=retake"},
    )
    assert resp.headers["Location"] == "/history?verdict=retake"


def test_without_a_password_nobody_can_log_in(source, tmp_path):
    app = create_app(source, WebConfig(password_file=tmp_path / "none"))
    with app.test_client() as c:
        token = csrf_of(c)
        resp = c.post("/login", data={"password": "anything at all", "csrf_token": token})
        assert resp.status_code == 401 and "set-password" in resp.get_data(as_text=True)


def test_password_protected_reading(source, tmp_path):
    app = make_app(source, tmp_path, read_access="password")
    source.add_record("retake")
    with app.test_client() as c:
        assert c.get("/api/status").status_code == 401
        assert c.get("/api/results/1/image").status_code == 401
        assert c.get("/metrics").status_code == 401
        page = c.get("/history")
        assert page.status_code == 302 and page.headers["Location"].startswith("/login?next=")
        assert c.get("/healthz").status_code == 200
        assert c.get("/static/style.css").status_code == 200
        login(c)
        assert c.get("/api/status").status_code == 200
        assert c.get("/history").status_code == 200


# --- export ------------------------------------------------------------------------------------


def test_csv_export_needs_login_and_has_every_matching_row(client, source):
    fill(source, 250)
    source.add_record("fault")
    assert client.get("/api/export.csv").status_code == 401
    login(client)
    resp = client.get("/api/export.csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    lines = resp.get_data(as_text=True).splitlines()
    assert lines[0].startswith("id,created_at,trigger,sample_id,outcome")
    assert len(lines) == 1 + 251
    assert lines[1].startswith("251,")
    faults = client.get("/api/export.csv?verdict=fault").get_data(as_text=True).splitlines()
    assert len(faults) == 2 and "camera: timed out" in faults[1]
    assert client.get("/api/export.csv?date_from=bad").status_code == 400


def test_csv_cells_cannot_become_formulas(client, source):
    source.add_record("fault", error='=HYPERLINK("http://x")')
    login(client)
    text = client.get("/api/export.csv").get_data(as_text=True)
    assert "'=HYPERLINK" in text


# --- headers and errors ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/history", "/api/status", "/login", "/healthz", "/nope"])
def test_security_headers(client, path):
    resp = client.get(path)
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"


def test_pages_have_no_inline_script_or_outside_assets(client, source):
    fill(source, 2)
    login(client)
    for path in ("/", "/history", "/results/1", "/model", "/health", "/login"):
        html = client.get(path).get_data(as_text=True)
        for tag in re.findall(r"<script[^>]*>", html):
            assert 'src="/static/' in tag, (path, tag)
        assert not re.search(r"""(src|href)="(https?:)?//""", html), path
        assert not re.search(r"<[^>]+\son[a-z]+=", html), path


def test_errors_are_json_or_a_plain_page_without_internals(client, source, monkeypatch):
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.is_json
    page = client.get("/nothing-here")
    assert page.status_code == 404 and page.mimetype == "text/html"

    def broken(*args: object) -> None:
        raise RuntimeError("secret internal detail /var/lib/leukoscope")

    monkeypatch.setattr(source, "status", broken)
    for path in ("/api/status", "/"):
        resp = client.get(path)
        assert resp.status_code == 500
        body = resp.get_data(as_text=True)
        assert "secret internal detail" not in body and "Traceback" not in body


def test_status_page_says_ready_or_busy(client, source):
    assert "Ready for the next photo." in client.get("/").get_data(as_text=True)
    source.phase = "busy"
    page = client.get("/").get_data(as_text=True)
    assert "Taking and analysing a photo" in page
    assert "Ready for the next photo." not in page
