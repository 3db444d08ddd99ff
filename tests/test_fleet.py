"""The fleet playbooks (tools/ansible) over real SSH to three simulated Pis.

Each Pi is its own sshd on 127.0.0.1 (own port and host key) in front of its own real
appliance daemon (replay camera, mock GPIO, status page on its own port) with its own
state, config and model store, started on signed 1.0.1. The playbooks reach them as
Ansible reaches Pis; only the paths and the device command differ (inventory
variables), as `leukoscope-tools push`'s tests do.

- rollout with the canary made to fail its health check (its camera goes away when the
  new model is switched in): the rollout stops after the canary, the canary is back on
  its model, the other Pis were never touched; then the same rollout with the fault gone
  updates all three, canary first, then the other two as one batch;
- install.yml in the installer's --root test mode: the installer gets the signers, the
  password hash and a first model signed on the way;
- collect twice: the first brings home records and reviewed cells with checksums, the
  second nothing; the host tools read the cells as one training source per clinic.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from leukoscope.analysis.differential import ErrorRates, SampleRule
from leukoscope.analysis.overlap import fingerprint
from leukoscope.appliance.records import NewRecord, Store
from leukoscope.appliance.samples import Samples
from leukoscope.core.synthetic import make_smear, write_demo_images
from leukoscope.model.manifest import MODEL_FILE, sha256_file
from leukoscope.model.store import SIGNATURE_FILE
from tests.daemon_helpers import DaemonProcess, daemon_config, wait_until
from tests.ssh_helpers import SKIP_NO_SSH, Sshd, free_port, running_sshd
from tests.test_modelstore import keys, signed  # noqa: F401 - shared fixtures

REPO = Path(__file__).resolve().parent.parent
ANSIBLE = REPO / "tools" / "ansible"
PLAYBOOKS = ("install.yml", "rollout.yml", "collect.yml")
BIN = Path(sys.executable).parent
FAULTY = Path(__file__).with_name("faulty_leukoscope.py")
NEEDS_ANSIBLE = pytest.mark.skipif(
    not (BIN / "ansible-playbook").exists(),
    reason="ansible-core missing: install the test extra (make test does)",
)
pytestmark = [NEEDS_ANSIBLE]
#: Pi name -> its clinic (two Pis at one clinic, one at another).
PIS = {"pi1": "kisumu", "pi2": "kisumu", "pi3": "mbale"}


@dataclass
class Pi:
    """One simulated Pi: its sshd, daemon, config and folders."""

    name: str
    root: Path
    config: Path
    sshd: Sshd
    daemon: DaemonProcess
    web_port: int

    def model_list(self) -> dict[str, Any]:
        res = subprocess.run(
            [BIN / "leukoscope", "model", "--config", str(self.config), "list", "--json"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        return dict(json.loads(res.stdout))

    def running_version(self) -> str:
        status = self.daemon.status() or {}
        return str((status.get("model") or {}).get("version"))

    def command(self, fault: str = "") -> str:
        """How the playbooks run `leukoscope` here (sudo to the appliance user on a Pi)."""
        run = f"{sys.executable} {FAULTY} {fault}" if fault else str(BIN / "leukoscope")
        return f"env LEUKOSCOPE_CONFIG={self.config} {run}"


def _seed_reviews(pi: Path, seed: int) -> None:
    """Two sample fields with white cells, three of them reviewed, written as the daemon
    writes them (this Pi's record database, before its daemon starts)."""
    store = Store(pi / "state" / "records.sqlite3", pi / "state" / "images")
    try:
        samples = Samples(store)
        samples.start(f"S{seed}", SampleRule(0.05, 100, 400, 30), ErrorRates(0.9, 0.97),
                      ("cells-test", "1", "ab" * 32))  # fmt: skip
        for k in range(2):
            rgb = make_smear(640, 480, seed=seed * 10 + k, px_per_um=4.0).image
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, "JPEG", quality=90)
            cells = [{"x": 100.0 + 150 * i, "y": 240.0, "box": [80.0 + 150 * i, 220.0,
                      120.0 + 150 * i, 260.0], "p_blast": 0.8 if i == 0 else 0.2,
                      "blast": i == 0, "clump": False} for i in range(3)]  # fmt: skip
            rec = NewRecord(
                trigger="control", outcome="indeterminate", model_sha256="ab" * 32,
                cells={"px_per_um": 4.0, "image_size": [640, 480], "n_found": 3,
                       "n_classified": 3, "n_blasts": 1, "score": 0.4, "cells": cells},
            )  # fmt: skip
            got = samples.add_field(f"S{seed}", rec, buf.getvalue(), fingerprint=fingerprint(rgb))
            for i, label in enumerate(("blast", "not-blast")[: 2 - k]):
                samples.review(f"S{seed}", got.record_id, i, label, "tech A")
    finally:
        store.close()


@dataclass
class Fleet:
    """Three Pis, the inventory that names them and how to run a playbook on them."""

    pis: dict[str, Pi]
    inventory: Path
    tmp: Path
    maintainer_key: Path

    def playbook(self, name: str, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
            "ANSIBLE_HOME": str(self.tmp / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(self.tmp / "ansible-local"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.tmp / "cp"),
            "ANSIBLE_NOCOLOR": "1",
        }
        return subprocess.run(
            [BIN / "ansible-playbook", "-i", str(self.inventory), name, *extra],
            cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def write_inventory(self, faults: dict[str, str] | None = None, **group_vars: Any) -> None:
        """The example inventory's shape, with each simulated Pi's address and paths."""
        faults = faults or {}
        hosts: dict[str, dict[str, Any]] = {}
        for name, pi in self.pis.items():
            hosts[name] = {
                "ansible_host": "127.0.0.1",
                "ansible_port": pi.sshd.port,
                "ansible_user": pi.sshd.user,
                "ansible_ssh_private_key_file": str(pi.sshd.key),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={pi.sshd.known_hosts} "
                "-o StrictHostKeyChecking=yes",
                "ansible_python_interpreter": sys.executable,
                "ansible_remote_tmp": str(pi.root / "ansible-tmp"),
                "leukoscope_command": pi.command(faults.get(name, "")),
                "leukoscope_incoming": str(pi.root / "incoming"),
                "leukoscope_web_port": pi.web_port,
                "leukoscope_src_dir": str(pi.root / "src"),
                "leukoscope_install_root": str(pi.root / "sysroot"),
            }
        clinics: dict[str, Any] = {}
        for name, clinic in PIS.items():
            group = clinics.setdefault(f"clinic_{clinic}", {"hosts": {}, "vars": {}})
            group["hosts"][name] = hosts[name]
            group["vars"]["leukoscope_clinic"] = clinic.capitalize()
        # Quick health checks: the test daemons re-check their camera every 0.2 s.
        fast = {
            "leukoscope_rollout_settle_s": 3,
            "leukoscope_rollout_health_retries": 8,
            "leukoscope_rollout_health_delay_s": 1,
        }
        doc = {"leukoscopes": {"children": clinics, "vars": {**fast, **group_vars}}}
        self.inventory.write_text(json.dumps(doc, indent=1))  # JSON is YAML


@pytest.fixture(scope="module")
def fleet(
    signed: list[Path],  # noqa: F811
    keys: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """Three Pis on signed 1.0.1, each behind its own sshd; stopped in `finally`."""
    tmp = tmp_path_factory.mktemp("fleet")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "maint")],
                   check=True)  # fmt: skip
    with ExitStack() as stack:
        pis: dict[str, Pi] = {}
        for i, name in enumerate(PIS):
            root = tmp / name
            write_demo_images(root / "images", 2, seed=i)
            (root / "incoming").mkdir()
            (root / "sysroot" / "boot" / "firmware").mkdir(parents=True)
            (root / "sysroot" / "boot" / "firmware" / "config.txt").write_text("[all]\n")
            web_port = free_port()
            config = daemon_config(
                root, root / "state" / "models" / "active", root / "images",
                model={"threads": 1, "allowed_signers": keys / "allowed_signers",
                       "reload": "signal", "reload_timeout_s": 20, "keep": 3},
                web={"enabled": True, "host": "127.0.0.1", "port": web_port},
                daemon={"log_level": "info", "startup_fault_hold_s": 0.5},
            )  # fmt: skip
            first = subprocess.run(
                [BIN / "leukoscope", "model", "--config", str(config), "install", "--activate",
                 str(signed[0])], capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert first.returncode == 0, first.stdout + first.stderr
            if name != "pi3":
                _seed_reviews(root, i + 1)
            sshd = stack.enter_context(running_sshd(tmp / f"sshd-{name}", tmp / "maint"))
            daemon = DaemonProcess(config)
            stack.callback(daemon.stop)
            pis[name] = Pi(name, root, config, sshd, daemon, web_port)
        for pi in pis.values():
            pi.daemon.wait_phase("ready", timeout=120)
            pi.daemon.capture()  # a record of its own on each Pi
        fleet = Fleet(pis, tmp / "inventory.yml", tmp, tmp / "maint")
        fleet.write_inventory()
        yield fleet


def _summary(out: str, kind: str) -> dict[str, str]:
    """Host -> result from the summary the callback prints."""
    section = out[out.index(f"LEUKOSCOPE {kind}") :]
    rows = re.findall(r"^  (pi\d)\s+(ok|FAILED|not reached)\s+(.*)$", section, re.M)
    return {host: f"{result} {text}".strip() for host, result, text in rows}


@pytest.mark.slow
@SKIP_NO_SSH
def test_a_failing_canary_stops_the_rollout_and_every_pi_keeps_its_model(
    fleet: Fleet,
    signed: list[Path],  # noqa: F811
) -> None:
    pis = fleet.pis
    before = {n: pi.model_list()["active"] for n, pi in pis.items()}
    fleet.write_inventory(faults={"pi1": "camera-gone-after-switch"})
    res = fleet.playbook("rollout.yml", "-e", f"rollout_bundle={signed[1]}")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    rows = _summary(out, "ROLLOUT")
    assert rows["pi1"].startswith("FAILED 1.0.1 -> 1.0.1"), out
    assert "healthy" in rows["pi1"] and "camera" in rows["pi1"], rows["pi1"]
    assert rows["pi2"].startswith("not reached") and rows["pi3"].startswith("not reached"), out
    # The canary is back on its model; the others were never touched.
    assert {n: pi.model_list()["active"] for n, pi in pis.items()} == before
    for pi in pis.values():
        assert pi.running_version() == "1.0.1"
        assert not [p for p in (pi.root / "incoming").iterdir()], "uploads are removed"

    # The camera is back: the same rollout goes through, canary first, then a batch of two.
    images = pis["pi1"].root / "images"
    (images.with_name("images.gone")).rename(images)
    wait_until(lambda: (pis["pi1"].daemon.status() or {}).get("ready"), 30, "pi1 healthy")
    fleet.write_inventory()
    t0 = time.monotonic()
    res = fleet.playbook("rollout.yml", "-e", f"rollout_bundle={signed[1]}")
    took = time.monotonic() - t0
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    rows = _summary(out, "ROLLOUT")
    assert all(rows[n].startswith("ok 1.0.1 -> 1.0.2") for n in pis), rows
    installs = [ln for ln in out.splitlines() if "Install and activate it" in ln]
    assert len(installs) == 2, "two batches: the canary, then the other two"
    v2 = sha256_file(signed[1] / MODEL_FILE)
    for pi in pis.values():
        assert (pi.daemon.status() or {})["model"]["sha256"] == v2
    print(f"rollout of 1.0.2 to three Pis: {took:.1f} s")  # the README quotes it


@pytest.mark.slow
@SKIP_NO_SSH
def test_install_feeds_the_installer_a_signed_first_model(fleet: Fleet, keys: Path) -> None:  # noqa: F811
    from leukoscope.web.auth import hash_password

    signers = (keys / "allowed_signers").read_text().strip().splitlines()
    password_hash = hash_password("clinic password", n=2**10)
    fleet.write_inventory(leukoscope_allowed_signers=signers,
                          leukoscope_web_password_hash=password_hash)  # fmt: skip
    # Unsigned and no key: refused before any Pi is changed.
    res = fleet.playbook("install.yml", "-e", f"fleet_build_dir={fleet.tmp / 'build'}")
    assert res.returncode != 0
    assert "is not signed" in res.stdout, res.stdout
    assert not (fleet.pis["pi1"].root / "sysroot" / "etc").exists()

    res = fleet.playbook("install.yml", "-e", f"fleet_build_dir={fleet.tmp / 'build'}",
                         "-e", f"fleet_signing_key={keys / 'alice'}")  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert all(v.startswith("ok") for v in _summary(out, "INSTALL").values()), out
    for pi in fleet.pis.values():
        sysroot = pi.root / "sysroot"
        config = (sysroot / "etc/leukoscope/config.toml").read_text()
        assert 'allowed_signers = "/etc/leukoscope/allowed_signers"' in config
        assert (sysroot / "etc/leukoscope/allowed_signers").read_text().splitlines() == signers
        assert (sysroot / "var/lib/leukoscope/web-password").read_text() == password_hash + "\n"
        first = pi.root / "src" / ".fleet" / "first-model"
        assert (first / SIGNATURE_FILE).is_file()
        # The first model is the one the installer hands to the Pi's model store ...
        assert f"install --activate {first}" in out
        # ... and the Pi's own check accepts it as signed by the inventory's signer.
        res = subprocess.run(
            [BIN / "leukoscope", "model", "--config", str(pi.config), "verify", str(first)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert res.returncode == 0 and "signed by alice@lab" in res.stdout, res.stdout


@pytest.mark.slow
@SKIP_NO_SSH
def test_collect_brings_home_what_is_new_and_then_nothing(fleet: Fleet) -> None:
    from leukoscope_tools.data.cells import PRE
    from leukoscope_tools.data.collected import model_crop, read_collected, sources

    fleet.write_inventory()
    home = fleet.tmp / "collected"
    res = fleet.playbook("collect.yml", "-e", f"leukoscope_collect_dir={home}")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    rows = _summary(out, "COLLECT")
    assert set(rows) == set(PIS)
    for name in PIS:
        (batch,) = (home / name / "batches").iterdir()
        sums = (batch / "SHA256SUMS").read_text().splitlines()
        assert len(sums) == len([p for p in batch.rglob("*") if p.is_file()]) - 1
        export = json.loads((batch / "export.json").read_text())
        assert export["records"] >= 1
        assert (
            json.loads((home / name / "clinic.json").read_text())["clinic"]
            == PIS[name].capitalize()
        )
        n_reviews = 0 if name == "pi3" else 3
        assert export["reviews"] == export["crops"] == n_reviews, export
        assert f"{n_reviews} review(s)" in rows[name]

    res = fleet.playbook("collect.yml", "-e", f"leukoscope_collect_dir={home}")
    assert res.returncode == 0, res.stdout
    assert all(v == "ok nothing new" for v in _summary(res.stdout, "COLLECT").values()), res.stdout
    assert all(len(list((home / n / "batches").iterdir())) == 1 for n in PIS)

    cells = read_collected(home)
    assert sources(cells) == {"clinic:Kisumu": 6}
    assert sorted(c.y_cell for c in cells) == [0, 0, 1, 1, 1, 1]  # two blasts, one other per Pi
    first = cells[0]
    assert first.reviewer == "tech A" and first.model_name == "cells-test"
    assert first.provenance()["label"] in ("blast", "not-blast")
    assert model_crop(first, PRE).shape == (128, 128, 3)


def test_playbooks_pass_syntax_check() -> None:
    res = subprocess.run(
        [BIN / "ansible-playbook", "--syntax-check", "-i", "inventory.example", *PLAYBOOKS],
        cwd=ANSIBLE, env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_playbooks_pass_ansible_lint(tmp_path: Path) -> None:
    lint = BIN / "ansible-lint"
    if not lint.exists():
        pytest.skip("ansible-lint is not installed")
    res = subprocess.run(
        [lint, "--offline", "--nocolor", "-q", *PLAYBOOKS, "roles"],
        cwd=ANSIBLE, env={**os.environ, "ANSIBLE_HOME": str(tmp_path),
                          "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
