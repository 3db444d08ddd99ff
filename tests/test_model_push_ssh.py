"""End to end over real SSH: `leukoscope-tools push` to a local sshd, against a running daemon.

The test starts its own `sshd` on 127.0.0.1 (throwaway host and user keys, config in a
temporary folder) and the real daemon (replay camera, mock GPIO) on a model store with
a signed 1.0.1 active. It pushes a signed 1.0.2 and sees `/api/status` and `leukoscope
model list` report it and new records carry its sha256; then it checks what reaches the
maintainer when a bundle is refused, when the upload is cut half-way, when the install is
killed, when the daemon refuses the new model (automatic rollback), and `leukoscope model
rollback`. The tests share one appliance and run in order, each starting from where the
last one left it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from leukoscope.appliance.control import ControlError, request
from leukoscope.model.manifest import MODEL_FILE, sha256_file
from leukoscope.model.store import SIGNATURE_FILE
from tests.ssh_helpers import SKIP_NO_SSH, Sshd, free_port, running_sshd
from tests.test_modelstore import keys, signed  # noqa: F401 - shared fixtures

BIN = Path(sys.executable).parent
FAULTY = Path(__file__).with_name("faulty_leukoscope.py")
# `host`: the maintainer's side runs `leukoscope-tools push` (the host tools, TensorFlow).
pytestmark = [pytest.mark.slow, pytest.mark.host, SKIP_NO_SSH]
_free_port = free_port


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """sshd -D on 127.0.0.1 with a throwaway host key; only a throwaway user key may log in."""
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@dataclass
class Appliance:
    """The daemon under test, its config and folders."""

    root: Path
    config: Path
    incoming: Path
    proc: subprocess.Popen[bytes]
    web_port: int

    def api_status(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.web_port}/api/status"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return dict(json.load(reply))

    def status(self) -> dict[str, Any]:
        return request(self.root / "state" / "control.sock", {"cmd": "status"}, 10)["state"]

    def model_list(self) -> dict[str, Any]:
        res = subprocess.run(
            [BIN / "leukoscope", "model", "--config", str(self.config), "list", "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return json.loads(res.stdout)

    def capture(self) -> dict[str, Any]:
        reply = request(self.root / "state" / "control.sock", {"cmd": "capture"}, 60)
        assert reply["ok"], reply
        return reply["result"]

    def remote(self, fault: str = "") -> str:
        """How the Pi side runs `leukoscope` in this test (sudo on a real Pi); with a
        fault, through tests/faulty_leukoscope.py, which injects it."""
        run = f"{sys.executable} {FAULTY} {fault}" if fault else str(BIN / "leukoscope")
        return f"env LEUKOSCOPE_CONFIG={self.config} {run}"


def _wait(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def appliance(
    signed: list[Path],  # noqa: F811
    keys: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Appliance]:
    """The real daemon, replay camera and mock GPIO, running signed 1.0.1 from the store."""
    from leukoscope.core.synthetic import write_demo_images

    root = tmp_path_factory.mktemp("pi")
    web_port = _free_port()
    write_demo_images(root / "images", 4)
    incoming = root / "incoming"
    incoming.mkdir()
    config = root / "config.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{root / "state"}"\nbundle = "{root / "state/models/active"}"\n'
        f'[camera]\nbackend = "replay"\n[camera.replay]\nfolder = "{root / "images"}"\n'
        '[gpio]\npin_factory = "mock"\n[quality]\nenabled = false\n'
        f'[model]\nthreads = 1\nallowed_signers = "{keys / "allowed_signers"}"\n'
        'reload = "signal"\nreload_timeout_s = 20\nkeep = 3\n'
        f"[web]\nport = {web_port}\n"
    )
    first = subprocess.run(
        [BIN / "leukoscope", "model", "--config", str(config), "install", "--activate",
         str(signed[0])], capture_output=True, text=True,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    log = (root / "daemon.log").open("w")
    proc = subprocess.Popen(
        [BIN / "leukoscope", "run", "--config", str(config)], stdout=log, stderr=log
    )
    app = Appliance(root, config, incoming, proc, web_port)
    try:

        def ready() -> bool:
            assert proc.poll() is None, (root / "daemon.log").read_text()
            try:
                return bool(app.status()["ready"])
            except ControlError:
                return False

        _wait("the daemon to be ready", ready)
        yield app
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def push(sshd: Sshd, app: Appliance, bundle: Path, *extra: str, fault: str = ""):
    return subprocess.run(
        [BIN / "leukoscope-tools", "push", str(bundle), f"{sshd.user}@127.0.0.1",
         *sshd.push_args(), "--incoming", str(app.incoming),
         "--remote-leukoscope", app.remote(fault), *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def uploads(app: Appliance) -> list[str]:
    """What in the incoming folder looks like a bundle (hidden partial uploads excluded)."""
    return sorted(p.name for p in app.incoming.iterdir() if not p.name.startswith("."))


def daemon_sha(app: Appliance) -> str:
    return str(app.status()["model"]["sha256"])


def test_push_reaches_the_running_daemon_and_records_carry_the_new_model(
    sshd: Sshd,
    appliance: Appliance,
    signed: list[Path],  # noqa: F811
):
    v1_sha, v2_sha = (sha256_file(b / MODEL_FILE) for b in signed[:2])
    assert daemon_sha(appliance) == v1_sha
    res = push(sshd, appliance, signed[1], "--activate")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{sshd.user}@127.0.0.1: ok:" in res.stdout
    assert "signed by alice@lab" in res.stderr, "the Pi's progress reaches the maintainer"
    assert "reports it healthy" in res.stderr

    assert appliance.api_status()["model"]["sha256"] == v2_sha, "the status page says so"
    listed = appliance.model_list()
    assert listed["daemon"]["model"]["sha256"] == v2_sha
    active = next(v for v in listed["versions"] if v["active"])
    assert (active["version"], active["model_sha256"]) == ("1.0.2", v2_sha)
    assert uploads(appliance) == [], "the upload is removed after the install"

    result = appliance.capture()
    assert result["model_sha256"] == v2_sha and result["model_version"] == "1.0.2"
    with sqlite3.connect(appliance.root / "state" / "records.sqlite3") as db:
        (sha,) = db.execute("SELECT model_sha256 FROM results ORDER BY id DESC LIMIT 1").fetchone()
    assert sha == v2_sha


def test_a_refused_bundle_changes_nothing_and_the_host_says_why(
    sshd: Sshd,
    appliance: Appliance,
    signed: list[Path],  # noqa: F811
    tmp_path: Path,
):
    before = appliance.model_list()
    unsigned = shutil.copytree(signed[2], tmp_path / "unsigned")
    (unsigned / SIGNATURE_FILE).unlink()
    res = push(sshd, appliance, unsigned, "--activate")
    assert res.returncode == 1
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith(f"{sshd.user}@127.0.0.1"))
    assert "FAILED" in line and "not signed" in line, line
    assert appliance.model_list() == before
    assert uploads(appliance) == []


def test_a_transfer_cut_half_way_is_never_taken_for_a_bundle(
    sshd: Sshd,
    appliance: Appliance,
    signed: list[Path],  # noqa: F811
):
    before = appliance.model_list()
    # 200 Kbit/s makes the half-megabyte upload last long enough to cut it.
    proc = subprocess.Popen(
        [BIN / "leukoscope-tools", "push", str(signed[2]), f"{sshd.user}@127.0.0.1",
         *sshd.push_args(), "--incoming", str(appliance.incoming), "--limit-kbps", "200",
         "--remote-leukoscope", appliance.remote(), "--activate"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    partial = lambda: [p for p in appliance.incoming.iterdir() if p.name.endswith(".partial")]  # noqa: E731
    _wait("the upload to start", lambda: any(any(p.rglob("*.png")) for p in partial()), 30)
    os.killpg(proc.pid, signal.SIGKILL)  # push and its scp, as a cut cable would
    proc.wait()
    assert uploads(appliance) == [], "only a hidden .partial folder may remain"
    assert appliance.model_list() == before
    # The next push goes through.
    res = push(sshd, appliance, signed[2])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "installed, not active" in res.stdout


def test_install_killed_after_the_switch_leaves_a_truthful_list(
    sshd: Sshd,
    appliance: Appliance,
    signed: list[Path],  # noqa: F811
):
    running = daemon_sha(appliance)
    res = push(sshd, appliance, signed[3], "--activate", fault="crash:reload")
    assert res.returncode == 1
    listed = appliance.model_list()
    active = next(v for v in listed["versions"] if v["active"])
    # On disk the new model is active (complete and verified); the daemon was never
    # told, still runs the old one, and `list` says both.
    assert active["version"] == "1.0.4"
    assert listed["daemon"]["model"]["sha256"] == running
    # Finishing the job: activating it again reloads the daemon.
    res = sshd.ssh(f"{appliance.remote()} model activate {active['id']}")
    assert res.returncode == 0, res.stderr
    _wait("the daemon to run 1.0.4", lambda: daemon_sha(appliance) == active["model_sha256"])


def test_a_model_the_daemon_refuses_is_rolled_back_by_itself(
    sshd: Sshd,
    appliance: Appliance,
    signed: list[Path],  # noqa: F811
):
    before = appliance.model_list()
    res = push(sshd, appliance, signed[4], "--activate",
               fault="corrupt-after-switch")  # fmt: skip
    assert res.returncode == 1
    assert "rolled back" in res.stdout and "refused the new model" in res.stdout
    after = appliance.model_list()
    assert after["active"] == before["active"] and after["previous"] == before["previous"]
    assert after["daemon"]["model"] == before["daemon"]["model"]
    assert appliance.capture()["model_sha256"] == before["daemon"]["model"]["sha256"]


def test_rollback_over_ssh_returns_to_the_previous_model(
    sshd: Sshd,
    appliance: Appliance,
):
    before = appliance.model_list()
    previous = next(v for v in before["versions"] if v["previous"])
    res = sshd.ssh(f"{appliance.remote()} model rollback")
    assert res.returncode == 0, res.stderr
    assert f"rolled back to {previous['id']}" in res.stdout
    assert daemon_sha(appliance) == previous["model_sha256"]
    assert appliance.capture()["model_sha256"] == previous["model_sha256"]


def test_one_line_per_host_and_a_failure_if_any_host_failed(
    sshd: Sshd,
    appliance: Appliance,
    signed: list[Path],  # noqa: F811
):
    res = subprocess.run(
        [BIN / "leukoscope-tools", "push", str(signed[2]), f"{sshd.user}@127.0.0.1",
         f"{sshd.user}@no-such-pi.invalid", *sshd.push_args(),
         "--incoming", str(appliance.incoming), "--remote-leukoscope", appliance.remote()],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert any(ln.startswith(f"{sshd.user}@127.0.0.1: ok:") for ln in lines), res.stdout
    bad = next(ln for ln in lines if ln.startswith(f"{sshd.user}@no-such-pi.invalid: FAILED"))
    assert "cannot reach" in bad
    assert "1 of 2 host(s) failed" in res.stderr
