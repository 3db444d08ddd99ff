"""The device's model store: signed installs, refusals that change nothing, atomic switch
and rollback, pruning, and SIGKILL at every step of an install."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from leukoscope.core.errors import BundleError
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import MANIFEST, MODEL_FILE, sha256_file
from leukoscope.model.store import (
    ACTIVE,
    PREVIOUS,
    SIGNATURE_FILE,
    STEPS,
    ModelStore,
    ModelStoreError,
    StoreSettings,
)

SSH_KEYGEN = shutil.which("ssh-keygen")
pytestmark = pytest.mark.skipif(
    SSH_KEYGEN is None,
    reason="ssh-keygen is not installed (openssh-client; tools/install-test-deps.sh adds it)",
)


def make_variant(
    src: Path, dst: Path, version: str, *, pad: int = 0, edit: Callable[[dict], None] | None = None
) -> Path:
    """A copy of a bundle with its own version and, with `pad`, a different model sha256.

    Trailing bytes after the TFLite flatbuffer are ignored by the runtime, so a padded
    model answers exactly as the original: a distinct model without TensorFlow.
    """
    shutil.copytree(src, dst)
    (dst / SIGNATURE_FILE).unlink(missing_ok=True)
    if pad:
        with (dst / MODEL_FILE).open("ab") as f:
            f.write(b"\0" * pad)
    manifest = json.loads((dst / MANIFEST).read_text())
    manifest["version"] = version
    manifest["files"] = {rel: sha256_file(dst / rel) for rel in manifest["files"]}
    if edit is not None:
        edit(manifest)
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return dst


def sign(bundle: Path, key: Path) -> Path:
    from leukoscope_tools.ship.sign import sign_bundle

    sign_bundle(bundle, key)
    return bundle


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two throwaway maintainer keys; only alice's is in the allowed signers file."""
    from leukoscope_tools.ship.sign import allowed_signers_line

    d = tmp_path_factory.mktemp("keys")
    for name in ("alice", "mallory"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(d / name)],
            check=True,
        )
    (d / "allowed_signers").write_text(allowed_signers_line(d / "alice", "alice@lab") + "\n")
    return d


@pytest.fixture(scope="session")
def signed(
    session_bundle: Path, keys: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """Five signed bundles, versions 1.0.1..1.0.5, each with its own model sha256."""
    d = tmp_path_factory.mktemp("signed")
    return [
        sign(make_variant(session_bundle, d / f"v{i}", f"1.0.{i}", pad=16 * i), keys / "alice")
        for i in range(1, 6)
    ]


def settings(root: Path, keys: Path, **kw: Any) -> StoreSettings:
    base: dict[str, Any] = {
        "store_dir": root / "models",
        "keep": 3,
        "allowed_signers": keys / "allowed_signers",
        "require_signature": True,
        "reload": "none",
    }
    return StoreSettings(**{**base, **kw})


def quiet(msg: str) -> None:
    pass


def snapshot(root: Path) -> list[tuple[str, str]]:
    """Every path under the store with its link target or size: what 'unchanged' means."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.name == ".lock":
            continue
        what = os.readlink(p) if p.is_symlink() else "dir" if p.is_dir() else str(p.stat().st_size)
        out.append((str(p.relative_to(root)), what))
    return out


def active_model(store: ModelStore) -> str:
    """The version the daemon would load now, after a full check."""
    bundle = load_bundle(store.root / ACTIVE)
    return bundle.manifest.version


def test_install_activate_rollback_and_list(signed: list[Path], keys: Path, tmp_path: Path):
    store = ModelStore(settings(tmp_path, keys))
    lines: list[str] = []
    v1 = store.install(signed[0], activate=True, report=lines.append)
    assert v1.active and v1.signer == "alice@lab"
    assert any("signed by alice@lab" in line for line in lines)
    assert active_model(store) == "1.0.1"

    v2 = store.install(signed[1], activate=False, report=quiet)
    assert not v2.active and active_model(store) == "1.0.1", "install alone must not switch"
    store.activate(v2.id, report=quiet)
    assert active_model(store) == "1.0.2"
    listed = {v.version: v for v in store.list()}
    assert listed["1.0.2"].active and listed["1.0.1"].previous
    assert listed["1.0.2"].model_sha256 == sha256_file(signed[1] / MODEL_FILE)

    back = store.rollback(report=quiet)
    assert back.version == "1.0.1" and active_model(store) == "1.0.1"
    assert store.link(PREVIOUS) == v2.id, "rollback twice goes forward again"
    store.rollback(report=quiet)
    assert active_model(store) == "1.0.2"

    ok = [store.verify(v.id)[1] for v in store.list()]
    assert all("ok" in line and "alice@lab" in line for line in ok)


def test_an_empty_version_matches_nothing(signed: list[Path], keys: Path, tmp_path: Path):
    store = ModelStore(settings(tmp_path, keys))
    store.install(signed[0], activate=False, report=quiet)
    with pytest.raises(ModelStoreError, match="no installed model matches ''"):
        store.activate("", report=quiet)
    assert store.link(ACTIVE) is None


def test_installing_the_same_bundle_twice_is_harmless(
    signed: list[Path], keys: Path, tmp_path: Path
):
    store = ModelStore(settings(tmp_path, keys))
    store.install(signed[0], activate=True, report=quiet)
    before = snapshot(store.root)
    lines: list[str] = []
    store.install(signed[0], activate=True, report=lines.append)
    assert any("already installed" in line for line in lines)
    assert any("already active" in line for line in lines)
    assert snapshot(store.root) == before


def _unsigned(b: Path, keys: Path) -> None:
    (b / SIGNATURE_FILE).unlink()


def _wrong_signer(b: Path, keys: Path) -> None:
    sign(b, keys / "mallory")


def _tampered_tflite(b: Path, keys: Path) -> None:
    data = bytearray((b / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / MODEL_FILE).write_bytes(bytes(data))


def _edited_after_signing(b: Path, keys: Path) -> None:
    m = json.loads((b / MANIFEST).read_text())
    m["thresholds"]["high"] = 0.99
    (b / MANIFEST).write_text(json.dumps(m))


def _resign_with(edit: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    def apply(b: Path, keys: Path) -> None:
        m = json.loads((b / MANIFEST).read_text())
        edit(m)
        (b / MANIFEST).write_text(json.dumps(m))
        sign(b, keys / "alice")

    return apply


def _other_input_size(m: dict) -> None:
    m["input"]["width"] = m["input"]["height"] = 96


def _golden_mismatch(m: dict) -> None:
    case = m["golden"]["cases"][0]
    case["p_leukemia"] = 1.0 if case["p_leukemia"] < 0.5 else 0.0


REFUSALS = {
    "unsigned": (_unsigned, ModelStoreError, "not signed"),
    "wrong-signer": (_wrong_signer, ModelStoreError, "not in the allowed signers"),
    "tampered-tflite": (_tampered_tflite, BundleError, "model.tflite: sha256 mismatch"),
    "edited-after-signing": (_edited_after_signing, ModelStoreError, "bad signature"),
    "other-input-size": (_resign_with(_other_input_size), BundleError, "does not match"),
    "golden-mismatch": (_resign_with(_golden_mismatch), BundleError, "golden mismatch"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_bundles_change_nothing(case: str, signed: list[Path], keys: Path, tmp_path: Path):
    damage, error, message = REFUSALS[case]
    store = ModelStore(settings(tmp_path, keys))
    store.install(signed[0], activate=True, report=quiet)
    bad = shutil.copytree(signed[1], tmp_path / "bad")
    damage(bad, keys)
    before = snapshot(store.root)
    with pytest.raises(error, match=message) as info:
        store.install(bad, activate=True, report=quiet)
    assert ".tmp-" not in str(info.value), "the message names the bundle as given"
    assert snapshot(store.root) == before
    assert active_model(store) == "1.0.1"


def test_unsigned_bundles_pass_when_no_signers_are_configured(
    signed: list[Path], keys: Path, tmp_path: Path
):
    bare = shutil.copytree(signed[0], tmp_path / "bare")
    (bare / SIGNATURE_FILE).unlink()
    open_store = ModelStore(settings(tmp_path, keys, allowed_signers=None, require_signature=False))
    assert open_store.install(bare, activate=True, report=quiet).signer is None
    # A device that has signers configured still checks a signature that is present.
    forged = shutil.copytree(signed[1], tmp_path / "forged")
    _wrong_signer(forged, keys)
    checking = ModelStore(settings(tmp_path, keys, require_signature=False))
    with pytest.raises(ModelStoreError, match="not in the allowed signers"):
        checking.install(forged, activate=True, report=quiet)


def test_prune_keeps_the_newest_and_never_active_or_previous(
    signed: list[Path], keys: Path, tmp_path: Path
):
    store = ModelStore(settings(tmp_path, keys, keep=2))
    first = store.install(signed[0], activate=True, report=quiet)
    second = store.install(signed[1], activate=True, report=quiet)
    store.rollback(report=quiet)  # active 1.0.1 (oldest), previous 1.0.2
    store.install(signed[2], activate=False, report=quiet)
    store.install(signed[3], activate=False, report=quiet)
    ids = {v.id for v in store.list()}
    assert first.id in ids and second.id in ids, "active and previous are never pruned"
    assert {v.version for v in store.list()} == {"1.0.1", "1.0.2", "1.0.4"}, "and the newest"
    store.activate("tiny-test-1.0.4", report=quiet)  # previous becomes 1.0.1
    assert {v.version for v in store.list()} == {"1.0.1", "1.0.4"}
    assert active_model(store) == "1.0.4"


def test_a_second_command_waits_its_turn(signed: list[Path], keys: Path, tmp_path: Path):
    import fcntl

    store = ModelStore(settings(tmp_path, keys))
    store.install(signed[0], activate=True, report=quiet)
    with (store.root / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ModelStoreError, match="another model command"):
            store.install(signed[1], activate=True, report=quiet)
    assert active_model(store) == "1.0.1"


# -- SIGKILL at every step ------------------------------------------------------------------

INSTALL_SCRIPT = """
import sys
from pathlib import Path
from leukoscope.model.store import ModelStore, StoreSettings
from tests.faulty_leukoscope import kill_at
s = StoreSettings(store_dir=Path(sys.argv[2]), keep=2, allowed_signers=Path(sys.argv[3]),
                  require_signature=True, reload="none")
ModelStore(s, on_step=kill_at(sys.argv[1])).install(Path(sys.argv[4]), activate=True, report=print)
"""

#: The version active after a kill at each step (1.0.2 before the switch, 1.0.3 after).
ACTIVE_AFTER_KILL = {
    "copy": "1.0.2",
    "verify": "1.0.2",
    "commit": "1.0.2",
    "switch": "1.0.2",
    "link": "1.0.2",
    "reload": "1.0.3",
    "prune": "1.0.3",
}


def test_every_step_is_covered():
    assert set(ACTIVE_AFTER_KILL) == set(STEPS)


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_install_step_leaves_a_complete_model(
    step: str, signed: list[Path], keys: Path, tmp_path: Path
):
    store = ModelStore(settings(tmp_path, keys, keep=2))
    store.install(signed[0], activate=True, report=quiet)
    store.install(signed[1], activate=True, report=quiet)
    args = [step, str(store.root), str(keys / "allowed_signers"), str(signed[2])]
    res = subprocess.run(
        [sys.executable, "-c", INSTALL_SCRIPT, *args], capture_output=True, text=True
    )
    assert res.returncode == -signal.SIGKILL, res.stderr

    # The daemon would load a complete, verified model, old or new, never a mix.
    assert active_model(store) == ACTIVE_AFTER_KILL[step]
    # `list` tells the truth: what it calls active is what the link names, and every
    # version it lists is whole.
    listed = store.list()
    actives = [v for v in listed if v.active]
    assert len(actives) == 1 and actives[0].version == ACTIVE_AFTER_KILL[step]
    assert actives[0].path.resolve() == (store.root / ACTIVE).resolve()
    for v in listed:
        assert not v.id.startswith("."), v.id
        load_bundle(v.path)

    # The next install finishes the job and sweeps up what the killed one left.
    store.install(signed[2], activate=True, report=quiet)
    assert active_model(store) == "1.0.3"
    assert store.find(PREVIOUS).version == "1.0.2"
    leftovers = [p.name for p in (*store.root.iterdir(), *store.versions.iterdir())]
    assert not [n for n in leftovers if n.startswith((".tmp-", ".trash-")) or n.endswith(".link")]
    assert {v.version for v in store.list()} == {"1.0.2", "1.0.3"}


def test_sign_refuses_a_bundle_that_does_not_match_its_manifest(
    signed: list[Path], keys: Path, tmp_path: Path
):
    bad = shutil.copytree(signed[0], tmp_path / "bad")
    _tampered_tflite(bad, keys)
    (bad / SIGNATURE_FILE).unlink()
    with pytest.raises(BundleError, match="model.tflite: sha256 does not match"):
        sign(bad, keys / "alice")
    assert not (bad / SIGNATURE_FILE).exists()


def test_through_sudo_the_pis_own_config_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # Another config could drop the allowed signers: the sudo rule must not allow one.
    from leukoscope.cli.main import main

    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[paths]\nstate_dir = "{tmp_path}"\nbundle = "{tmp_path / "models/active"}"\n'
        '[camera]\nbackend = "replay"\n[camera.replay]\nfolder = "/nonexistent"\n'
        '[gpio]\npin_factory = "mock"\n'
    )
    assert main(["model", "--config", str(cfg), "list"]) == 0
    monkeypatch.setenv("SUDO_USER", "maintainer")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["model", "--config", str(cfg), "list"]) == 2
    assert "is not allowed through sudo" in capsys.readouterr().err


CRASHING_DAEMON = """
import os, signal, sys, time
from pathlib import Path
from leukoscope.model.manifest import read_manifest
from leukoscope.appliance.control import ControlServer

class Daemon:
    # Answers status like the real daemon, and dies on SIGHUP like a model that crashes it.
    def control(self, request):
        m = read_manifest(Path(sys.argv[2]))
        model = {"name": m.name, "version": m.version, "sha256": m.model_sha256}
        return {"ok": True, "state": {"model": model, "model_error": None, "reloads": 0,
                                      "faults": {}, "phase": "ready"}}

signal.signal(signal.SIGHUP, lambda *a: os._exit(70))
server = ControlServer(Path(sys.argv[1]), Daemon())
server.start()
print("ready", flush=True)
for _ in range(2400):  # short sleeps: the signal may land on a server thread
    time.sleep(0.05)
"""


def test_a_model_that_crashes_the_daemon_is_rolled_back(
    signed: list[Path], keys: Path, tmp_path: Path
):
    sock = tmp_path / "control.sock"
    store = ModelStore(
        settings(tmp_path, keys, reload="signal", reload_timeout_s=3.0, control_socket=sock)
    )
    store.install(signed[0], activate=True, report=quiet)
    daemon = subprocess.Popen(
        [sys.executable, "-c", CRASHING_DAEMON, str(sock), str(store.root / ACTIVE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert daemon.stdout is not None and daemon.stdout.readline().strip() == "ready"
        with pytest.raises(
            ModelStoreError, match="stopped answering.*rolled back to tiny-test-1.0.1"
        ):
            store.install(signed[1], activate=True, report=quiet)
        assert daemon.wait(10) == 70, "the daemon got the reload signal"
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert active_model(store) == "1.0.1"
    assert store.link(PREVIOUS) is None


def test_installing_again_repairs_a_damaged_copy(signed: list[Path], keys: Path, tmp_path: Path):
    store = ModelStore(settings(tmp_path, keys))
    store.install(signed[0], activate=True, report=quiet)
    v2 = store.install(signed[1], activate=False, report=quiet)
    _tampered_tflite(v2.path, keys)  # a failing SD card
    with pytest.raises(BundleError, match="sha256 mismatch"):
        store.activate(v2.id, report=quiet)
    lines: list[str] = []
    store.install(signed[1], activate=True, report=lines.append)
    assert any("damaged" in line and "replacing it" in line for line in lines)
    assert active_model(store) == "1.0.2"
