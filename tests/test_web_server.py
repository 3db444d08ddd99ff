"""Serving the app with waitress on a thread, and the password file's format and mode."""

from __future__ import annotations

import json
import socket
import stat
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from leukoscope.config import WebConfig
from leukoscope.web import create_app
from leukoscope.web.auth import (
    LoginLimiter,
    PasswordFile,
    PasswordFileError,
    hash_password,
    verify_password,
    write_password_file,
)
from leukoscope.web.fake import FakeSource
from leukoscope.web.server import WebServer, WebServerError


def test_waitress_serves_concurrent_clients_and_stops(tmp_path: Path):
    source = FakeSource(tmp_path / "images")
    source.add_record("no-leukemia-suspected", p=0.05)
    app = create_app(source, WebConfig(password_file=tmp_path / "pw"))
    server = WebServer(app, "127.0.0.1", 0, threads=4)
    with server:
        server.start()

        def get(_: int) -> tuple[int, str]:
            with urllib.request.urlopen(server.url + "api/status", timeout=10) as resp:
                return resp.status, json.load(resp)["last_result"]["outcome"]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(get, range(40)))
        assert answers == [(200, "no-leukemia-suspected")] * 40
    # After close, nothing answers on that port any more.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), 1):
        pass


def test_a_port_in_use_is_a_clear_error(tmp_path: Path):
    app = create_app(FakeSource(tmp_path / "i"), WebConfig(password_file=tmp_path / "pw"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(WebServerError, match=f"127.0.0.1:{port}"):
            WebServer(app, "127.0.0.1", port)


def test_password_file_is_private_salted_and_verifies(tmp_path: Path):
    path = tmp_path / "etc" / "web-password"
    write_password_file(path, "a long enough secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    line = path.read_text().strip()
    assert line.startswith("scrypt$") and "a long enough secret" not in line
    assert verify_password("a long enough secret", line)
    assert not verify_password("a long enough secreT", line)
    assert hash_password("same") != hash_password("same")  # salted
    pf = PasswordFile(path)
    assert pf.check("a long enough secret") and not pf.check("")
    with pytest.raises(ValueError, match="at least 8"):
        write_password_file(path, "short")
    assert pf.check("a long enough secret")  # a refused password changes nothing
    path.write_text("not a hash\n")
    with pytest.raises(PasswordFileError):
        pf.check("anything")


def test_login_limiter_backs_off_per_address_and_never_locks_everyone():
    lim = LoginLimiter(free=3, base_s=10, max_s=80, forget_s=600)
    for t in range(3):
        assert lim.retry_after("a", now=float(t)) == 0
        lim.failed("a", now=float(t))
    assert lim.retry_after("a", now=2.0) == 10  # the third failure: a first wait
    lim.failed("a", now=12.0)
    assert lim.retry_after("a", now=12.0) == 20  # then twice as long each time ...
    for _ in range(10):
        lim.failed("a", now=40.0)
    assert lim.retry_after("a", now=40.0) == 80  # ... up to the longest wait
    # Thousands of failures from other addresses never lock out one that has none.
    for i in range(2000):
        lim.failed(f"10.0.{i // 250}.{i % 250}", now=50.0)
    assert lim.retry_after("b", now=50.0) == 0
    assert lim.retry_after("a", now=200.0) == 0  # the wait ends ...
    assert lim.retry_after("a", now=800.0) == 0  # ... and a quiet hour forgets it
    lim.clear()  # the 5 s hold of the capture button
    assert lim.retry_after("10.0.0.1", now=51.0) == 0


def test_unknown_paths_over_http_are_json_404(tmp_path: Path):
    app = create_app(FakeSource(tmp_path / "i"), WebConfig(password_file=tmp_path / "pw"))
    with WebServer(app, "127.0.0.1", 0) as server:
        server.start()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.url + "api/results/12345", timeout=10)
        assert info.value.code == 404
        assert json.load(info.value)["error"].startswith("no result")
        assert info.value.headers["Server"] == "leukoscope"


def test_set_password_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    import io

    from leukoscope.cli.main import main

    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[paths]\nstate_dir = "{tmp_path / "state"}"\nbundle = "{tmp_path / "b"}"\n'
        f'[camera]\nbackend = "replay"\n[camera.replay]\nfolder = "{tmp_path}"\n'
        '[gpio]\npin_factory = "mock"\n'
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("a fine passphrase\n"))
    assert main(["set-password", "--config", str(cfg), "--stdin"]) == 0
    pw = tmp_path / "state" / "web-password"
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600
    assert PasswordFile(pw).check("a fine passphrase")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["set-password", "--config", str(cfg), "--stdin"]) == 1
    assert "nothing changed" in capsys.readouterr().err
    assert PasswordFile(pw).check("a fine passphrase")


def _daemon_stub(tmp_path: Path, **web: object) -> object:
    from types import SimpleNamespace

    cfg = SimpleNamespace(web=WebConfig(password_file=tmp_path / "pw", **web))  # type: ignore[arg-type]
    store = SimpleNamespace(database=tmp_path / "db.sqlite3", images_dir=tmp_path / "images")
    state = SimpleNamespace(phase="ready", result_seq=0)
    return SimpleNamespace(cfg=cfg, store=store, state=state, lockout_clearers=[])


def test_serve_daemon_raises_when_its_page_cannot_listen(tmp_path: Path):
    from leukoscope.app import serve_daemon

    assert serve_daemon(_daemon_stub(tmp_path, enabled=False)) is None  # type: ignore[arg-type]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stub = _daemon_stub(tmp_path, port=port)
        said = f"cannot serve the status page on 127.0.0.1:{port}"
        with pytest.raises(WebServerError, match=said):
            serve_daemon(stub)  # type: ignore[arg-type]


def test_the_daemon_exits_when_its_port_is_taken(tmp_path: Path):
    """Not a daemon without a page (and /healthz answered by whatever holds the port): a
    clear error and exit 69, so systemd restarts it until the port is free."""
    from tests.conftest import SHIPPED_BUNDLE
    from tests.daemon_helpers import DaemonProcess, daemon_config, replay_set

    replay_set(tmp_path / "replay")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = daemon_config(
            tmp_path,
            SHIPPED_BUNDLE,
            tmp_path / "replay",
            web={"enabled": True, "host": "127.0.0.1", "port": port},
        )
        proc = DaemonProcess(cfg)
        try:
            rc = proc.proc.wait(60)
        finally:
            proc.stop()
    assert rc == 69, proc.log
    assert f"cannot start: cannot serve the status page on 127.0.0.1:{port}" in proc.log
    assert "another program holds the port?" in proc.log
