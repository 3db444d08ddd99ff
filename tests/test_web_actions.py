"""The API's actions as a script or a curious user meets them: 401 without a login, a
capture followed to its record, one charset per text reply, failed logins in the log."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from leukoscope.web.fake import FakeSource
from tests.test_web_api import PASSWORD, csrf_of, login


@pytest.fixture
def source(tmp_path: Path) -> FakeSource:
    return FakeSource(tmp_path / "images", capture_s=0.3)


@pytest.mark.parametrize(
    "path",
    ["/api/capture", "/api/clock", "/api/samples", "/api/samples/S-1/close", "/capture"],
)
def test_an_action_without_a_login_is_401_whatever_the_token(
    client: FlaskClient, source: FakeSource, path: str
) -> None:
    token = csrf_of(client)
    for headers in ({}, {"X-CSRF-Token": token}, {"X-CSRF-Token": "wrong"}):
        resp = client.post(path, json={}, headers=headers)
        assert resp.status_code == 401, (path, headers, resp.get_data(as_text=True))
        if path.startswith("/api/"):
            assert resp.get_json()["error"].startswith("login required: log in at /login")
    assert source.captures_requested == []


def test_a_logged_in_session_still_needs_its_csrf_token(
    client: FlaskClient, source: FakeSource
) -> None:
    _, token = login(client)
    resp = client.post("/api/capture", json={})
    assert resp.status_code == 403 and "CSRF" in resp.get_json()["error"]
    assert (
        client.post("/api/capture", json={}, headers={"X-CSRF-Token": "x" + token}).status_code
        == 403
    )
    assert source.captures_requested == []


def test_a_capture_is_followed_to_its_record(client: FlaskClient) -> None:
    _, token = login(client)
    started = client.post(
        "/api/capture", json={"sample_id": "P-7"}, headers={"X-CSRF-Token": token}
    )
    assert started.status_code == 202
    body = started.get_json()
    poll = body["poll_url"]
    assert poll == f"/api/captures/{body['capture_id']}" and started.headers["Location"] == poll
    running = client.get(poll)
    assert running.status_code == 200 and running.get_json()["done"] is False
    assert running.get_json()["poll_url"] == poll and running.headers["Retry-After"] == "1"
    deadline = time.monotonic() + 10
    while not (state := client.get(poll).get_json())["done"]:
        assert time.monotonic() < deadline, "the capture never finished"
        time.sleep(0.05)
    rid = state["record_id"]
    assert isinstance(rid, int) and state["url"] == f"/api/results/{rid}"
    assert state["page_url"] == f"/results/{rid}"
    record = client.get(state["url"]).get_json()
    assert record["id"] == rid and record["sample_id"] == "P-7"
    assert record["outcome"] == state["outcome"]
    assert client.get("/api/captures/999").status_code == 404
    assert client.get("/api/captures/x1").status_code == 400


@pytest.mark.parametrize("path", ["/api/export.csv", "/metrics", "/api/samples.csv"])
def test_text_replies_name_their_charset_once(client: FlaskClient, path: str) -> None:
    login(client)
    resp = client.get(path)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].count("charset=utf-8") == 1, resp.headers["Content-Type"]


def test_failed_logins_and_the_lockout_are_logged_without_the_password(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="leukoscope.web.auth")
    for n in range(5):
        assert login(client, f"guess-{n}-secret")[0] == 401
    token = csrf_of(client)
    for _ in range(3):  # refused unchecked while locked out: one line, not three
        resp = client.post("/login", data={"password": PASSWORD, "csrf_token": token})
        assert resp.status_code == 429
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "failed login from 127.0.0.1 (1 in a row)"
    assert lines[4].startswith(
        "failed login from 127.0.0.1 (5 in a row): locked out for 15 s, until "
    )
    assert sum("refused unchecked: locked out until" in line for line in lines) == 1
    assert len(lines) == 6
    logged = caplog.text
    assert "secret" not in logged and PASSWORD not in logged
