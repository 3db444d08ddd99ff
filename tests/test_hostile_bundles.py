"""Bundles a fault campaign built to break the loader and the model store (issue 17): a
pipe, a manifest nested too deeply, a model that is a folder, a linked golden folder.
Each is refused with a one-line reason, quickly, and leaves the store usable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from leukoscope.core.errors import BundleError
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import MANIFEST, MODEL_FILE
from leukoscope.model.store import ModelStore, ModelStoreError, StoreSettings
from tests.test_modelstore import make_variant, quiet


def _store(tmp_path: Path) -> ModelStore:
    return ModelStore(
        StoreSettings(
            store_dir=tmp_path / "models",
            keep=3,
            allowed_signers=None,
            require_signature=False,
            reload="none",
        )
    )


def _golden_file(bundle: Path) -> str:
    return json.loads((bundle / MANIFEST).read_text())["golden"]["cases"][0]["file"]


def _install_in_thread(store: ModelStore, bundle: Path, timeout: float = 20.0) -> list[str]:
    """Install in a thread; the errors it raised ([] if it hung, after opening the pipe)."""
    errors: list[str] = []

    def run() -> None:
        try:
            store.install(bundle, activate=False, report=quiet)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():  # release the hung reader so the test can end
        for fifo in bundle.rglob("*"):
            if fifo.is_fifo():
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        return []
    return errors


def test_a_pipe_in_a_bundle_is_refused_and_the_store_stays_usable(
    session_bundle: Path, tmp_path: Path
):
    good = make_variant(session_bundle, tmp_path / "good", "1.0.1")
    bad = make_variant(session_bundle, tmp_path / "bad", "1.0.2")
    golden = bad / _golden_file(bad)
    golden.unlink()
    os.mkfifo(golden)
    store = _store(tmp_path)
    store.install(good, activate=True, report=quiet)
    errors = _install_in_thread(store, bad)
    assert errors and "not a regular file" in errors[0], errors
    # The lock was released: the next command is not refused as busy.
    store.install(make_variant(session_bundle, tmp_path / "v3", "1.0.3"), activate=True,
                  report=quiet)  # fmt: skip
    assert store.rollback(report=quiet).version == "1.0.1"


def test_a_deeply_nested_manifest_is_a_one_line_error(session_bundle: Path, tmp_path: Path):
    bad = make_variant(session_bundle, tmp_path / "nested", "1.0.1")
    (bad / MANIFEST).write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(BundleError, match="nested too deeply"):
        load_bundle(bad)
    with pytest.raises(BundleError, match="nested too deeply"):
        _store(tmp_path).install(bad, activate=False, report=quiet)
    res = subprocess.run(
        [sys.executable, "-m", "leukoscope.cli.main", "classify", "--bundle", str(bad),
         str(session_bundle / _golden_file(session_bundle))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode != 0
    assert "Traceback" not in res.stderr and "nested too deeply" in res.stderr, res.stderr


def test_a_model_that_is_a_folder_is_named_as_such(session_bundle: Path, tmp_path: Path):
    bad = make_variant(session_bundle, tmp_path / "dir", "1.0.1")
    (bad / MODEL_FILE).unlink()
    (bad / MODEL_FILE).mkdir()
    with pytest.raises(BundleError, match=r"model\.tflite.*is a directory"):
        load_bundle(bad)
    with pytest.raises(BundleError, match=r"model\.tflite.*is a directory"):
        _store(tmp_path).install(bad, activate=False, report=quiet)


@pytest.mark.parametrize("link", ["folder", "file"])
def test_a_linked_golden_folder_or_file_is_refused(link: str, session_bundle: Path, tmp_path: Path):
    bad = make_variant(session_bundle, tmp_path / "linked", "1.0.1")
    rel = Path(_golden_file(bad))
    outside = tmp_path / "outside"
    if link == "folder":
        shutil.move(bad / rel.parent, outside)
        (bad / rel.parent).symlink_to(outside)
    else:
        outside.mkdir()
        shutil.move(bad / rel, outside / rel.name)
        (bad / rel).symlink_to(outside / rel.name)
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(bad)
    store = _store(tmp_path)
    with pytest.raises(BundleError, match="symbolic link"):
        store.install(bad, activate=False, report=quiet)
    with pytest.raises(ModelStoreError, match="no previous model"):
        store.rollback(report=quiet)
