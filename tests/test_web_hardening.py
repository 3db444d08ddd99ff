"""The status page against a hostile LAN (issue 17): odd CSRF tokens, a flood of wrong
passwords from other machines, and the capture button's override of login lockouts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flask import Flask
from gpiozero.pins.mock import MockFactory

from leukoscope.appliance.gpio import CaptureButton
from leukoscope.web.fake import FakeSource
from tests.test_web_api import PASSWORD, csrf_of, login, make_app


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(FakeSource(tmp_path / "images"), tmp_path)


@pytest.mark.parametrize("path", ["/api/capture", "/login", "/logout"])
@pytest.mark.parametrize("token", ["é" * 43, "\u2603", "\u00ff\u0000"])
def test_a_non_ascii_csrf_token_is_403_not_500(app: Flask, path: str, token: str):
    with app.test_client() as client:
        # The session has a token; the request sends another. Logged in, or /api/capture
        # would answer 401 (login required) before looking at the token.
        login(client) if path == "/api/capture" else csrf_of(client)
        by_form = client.post(path, data={"csrf_token": token, "password": PASSWORD})
        assert by_form.status_code == 403, by_form.get_data(as_text=True)
        by_header = client.post(
            path, json={}, headers={"X-CSRF-Token": token.encode("utf-8", "replace").decode()}
        )
        assert by_header.status_code == 403


def test_a_header_with_latin1_bytes_is_403_not_500(app: Flask):
    with app.test_client() as client:
        login(client)
        resp = client.post(
            "/api/capture", json={}, environ_base={"HTTP_X_CSRF_TOKEN": "caf\xe9\xff"}
        )
        assert resp.status_code == 403


def _login_from(app: Flask, address: str, password: str) -> int:
    with app.test_client() as client:
        client.environ_base["REMOTE_ADDR"] = address
        token = csrf_of(client)
        resp = client.post("/login", data={"password": password, "csrf_token": token})
        return resp.status_code


def test_wrong_passwords_from_the_lan_never_lock_out_another_address(app: Flask):
    for i in range(120):  # 30 from anywhere locked everyone out for 300 s
        assert _login_from(app, f"192.168.1.{10 + i % 20}", "a wrong guess") in (401, 429)
    assert _login_from(app, "192.168.1.200", PASSWORD) == 303
    # The guessing addresses themselves wait, longer with each failure.
    assert _login_from(app, "192.168.1.10", PASSWORD) == 429


def test_holding_the_button_5_s_clears_the_lockouts(app: Flask):
    for _ in range(6):
        _login_from(app, "192.168.1.7", "a wrong guess")
    assert _login_from(app, "192.168.1.7", PASSWORD) == 429
    factory = MockFactory()
    cleared: list[int] = []
    limiter = app.extensions["leukoscope"].limiter
    button = CaptureButton(
        17,
        bounce_ms=0,
        pin_factory=factory,
        on_press=lambda: None,
        on_long_press=lambda: None,
        long_press_s=0.1,
        on_clear_hold=lambda: cleared.append(limiter.clear()),
        clear_hold_s=0.3,
    )
    try:
        pin = factory.pin(17)
        pin.drive_low()  # a 0.2 s hold is only a long press: nothing is cleared
        time.sleep(0.2)
        pin.drive_high()
        time.sleep(0.1)
        assert cleared == [] and _login_from(app, "192.168.1.7", PASSWORD) == 429
        pin.drive_low()
        deadline = time.monotonic() + 5
        while not cleared and time.monotonic() < deadline:
            time.sleep(0.02)
        pin.drive_high()
    finally:
        button.close()
        factory.close()
    assert cleared == [1]
    assert _login_from(app, "192.168.1.7", PASSWORD) == 303


def test_an_untrusted_clock_is_shown_and_a_browser_can_confirm_it(tmp_path: Path):
    source = FakeSource(tmp_path / "images")
    source.clock_trusted = False
    app = make_app(source, tmp_path)
    with app.test_client() as client:
        page = client.get("/").get_data(as_text=True)
        assert 'id="clock-warning"' in page and "Log in to confirm" in page
        token = csrf_of(client)
        # Not logged in: 401 (login required) with or without a CSRF token.
        assert client.post("/api/clock", json={"unix": time.time()}).status_code == 401
        headers = {"X-CSRF-Token": token}
        assert (
            client.post("/api/clock", json={"unix": time.time()}, headers=headers).status_code
            == 401
        )
        resp = client.post("/login", data={"password": PASSWORD, "csrf_token": token})
        assert resp.status_code == 303
        headers = {"X-CSRF-Token": csrf_of(client, "/")}
        for bad in ({"unix": "now"}, {"unix": True}, {"unix": -1}, {"time": 1}, [1]):
            assert client.post("/api/clock", json=bad, headers=headers).status_code == 400
        off = client.post("/api/clock", json={"unix": time.time() - 3600}, headers=headers)
        assert off.status_code == 409 and "off your browser" in off.get_json()["error"]
        ok = client.post("/api/clock", json={"unix": time.time()}, headers=headers)
        assert ok.status_code == 200 and ok.get_json()["trusted"] is True
        assert 'id="clock-warning"' not in client.get("/").get_data(as_text=True)
