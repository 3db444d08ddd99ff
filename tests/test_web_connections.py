"""Hundreds of idle connections on the clinic LAN (issue 17): the page and /healthz still
answer within a second, and a capture never waits on the web server."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

from leukoscope.config import WebConfig
from leukoscope.web import create_app
from leukoscope.web.fake import FakeSource
from leukoscope.web.server import WebServer

IDLE = 300


def _timed_get(url: str) -> float:
    t0 = time.monotonic()
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        resp.read()
    return time.monotonic() - t0


def test_healthz_and_the_page_answer_with_hundreds_of_idle_connections(tmp_path: Path):
    app = create_app(FakeSource(tmp_path / "images"), WebConfig(password_file=tmp_path / "pw"))
    idle: list[socket.socket] = []
    with WebServer(app, "127.0.0.1", 0) as server:
        server.start()
        try:
            for i in range(IDLE):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                if i % 2:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never finish
                idle.append(s)
            time.sleep(0.5)
            worst = max(
                _timed_get(server.url + p) for p in ("healthz", "", "healthz", "api/status")
            )
        finally:
            for s in idle:
                s.close()
    assert worst < 1.0, f"{worst:.1f} s to answer with {IDLE} idle connections open"
