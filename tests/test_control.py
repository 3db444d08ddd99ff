"""The control socket on its own: bad bytes and silent clients get an answer, not a thread."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from leukoscope.appliance import control
from leukoscope.appliance.control import ControlServer, request


class Target:
    def control(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "echo": req.get("cmd")}


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(control._Handler, "timeout", 0.5)
    srv = ControlServer(tmp_path / "c.sock", Target())
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


def _exchange(path: Path, data: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        with sock.makefile("rb") as f:
            return json.loads(f.readline())


@pytest.mark.parametrize("data", [b"\x00\xff\x88\n", b"[1, 2]\n", b"{not json\n"])
def test_garbage_gets_a_bad_request_reply(server: ControlServer, data: bytes) -> None:
    reply = _exchange(server.path, data)
    assert reply["ok"] is False and reply["error"].startswith("bad request: ")
    assert request(server.path, {"cmd": "status"})["echo"] == "status"


def test_a_client_that_never_sends_is_answered_and_dropped(server: ControlServer) -> None:
    before = threading.active_count()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(server.path))
        t0 = time.monotonic()
        with sock.makefile("rb") as f:
            reply = json.loads(f.readline())
            assert f.readline() == b""  # then the daemon hangs up
    assert time.monotonic() - t0 < 3
    assert reply == {"ok": False, "error": "bad request: none within 0.5 s"}
    deadline = time.monotonic() + 3
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


@pytest.mark.parametrize("size", [5_000, 2_000_000])
def test_a_request_too_long_gets_its_answer_not_a_broken_pipe(
    server: ControlServer, size: int
) -> None:
    # The daemon stops reading after MAX_REQUEST_BYTES; the client, still sending a long
    # request, must read the answer instead of reporting the daemon unreachable.
    reply = request(server.path, {"cmd": "x" * size}, timeout=5)
    assert reply == {"ok": False, "error": "bad request: request too long"}


def test_a_reply_that_is_not_json_is_a_control_error(tmp_path: Path) -> None:
    path = tmp_path / "fake.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"<html>not the daemon</html>\n")

        thread = threading.Thread(target=answer)
        thread.start()
        with pytest.raises(control.ControlError, match="not JSON"):
            request(path, {"cmd": "status"}, timeout=5)
        thread.join(5)
