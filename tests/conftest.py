"""Shared fixtures: the real data (when present), synthetic images, and model bundles."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from leukoscope.appliance.records import Store
from leukoscope.web.fake import FakeSource
from tests.test_web_api import make_app

#: The Pi's numpy-1.24 venv holds the device stack alone: test modules that import the
#: training tools (TensorFlow, Keras) at their top are not collected there (their tests are
#: all `host` tests, which that run deselects anyway).
collect_ignore = (
    []
    if importlib.util.find_spec("keras")
    else ["test_cell_tools.py", "test_tools_cli_errors.py", "test_training_e2e.py"]
)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LEUKOSCOPE_SHARED_DATA", REPO.parent / "shared" / "data"))
#: The shipped default bundle (cell mode) and the whole-field bundle it replaced as default.
SHIPPED_BUNDLE = REPO / "models" / "default"
WHOLE_FIELD_BUNDLE = REPO / "models" / "whole-field"

HAS_TF = importlib.util.find_spec("tensorflow") is not None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; tests that use it skip (saying why) on a clone without it."""
    if not (SHARED_DATA / "manifest.csv").is_file():
        pytest.skip(f"real data not present at {SHARED_DATA} (CI has it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def session_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid bundle: $LEUKOSCOPE_TEST_BUNDLE, else a tiny model the suite trains itself.

    The numpy-1.24 environment has no TensorFlow (like the Pi): `make test` builds the
    tiny bundle with the main environment and passes it in, so the same int8 model is
    checked on both numpy versions.
    """
    given = os.environ.get("LEUKOSCOPE_TEST_BUNDLE")
    if given:
        return Path(given)
    if HAS_TF:
        from tests.helpers import build_tiny_bundle

        return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")
    pytest.fail("no TensorFlow to build a test bundle: set LEUKOSCOPE_TEST_BUNDLE (make test does)")


@pytest.fixture
def bundle_copy(session_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the session bundle that a test may tamper with."""
    dst = tmp_path / "bundle"
    shutil.copytree(session_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def session_cells_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid cells bundle: $LEUKOSCOPE_TEST_CELLS_BUNDLE, else a tiny one built here.

    Without TensorFlow and without the variable (a bare numpy-1.24 run), tests that
    need it skip; `make test` builds it with the main environment and passes it in.
    """
    given = os.environ.get("LEUKOSCOPE_TEST_CELLS_BUNDLE")
    if given:
        return Path(given)
    if HAS_TF:
        from tests.helpers import build_tiny_cells_bundle

        return build_tiny_cells_bundle(tmp_path_factory.mktemp("cells-bundle") / "tiny-cells")
    pytest.skip("no cells bundle: set LEUKOSCOPE_TEST_CELLS_BUNDLE (make test does)")


@pytest.fixture
def cells_bundle_copy(session_cells_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the session cells bundle that a test may tamper with."""
    dst = tmp_path / "cells-bundle"
    shutil.copytree(session_cells_bundle, dst)
    return dst


@pytest.fixture
def store(tmp_path: Path):
    """A record store in a fresh folder, closed after the test."""
    s = Store(tmp_path / "db.sqlite3", tmp_path / "images")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def app(source: FakeSource, tmp_path: Path) -> Flask:
    """The status page over the test module's own fake `source`."""
    return make_app(source, tmp_path)


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    """A test client of `app`."""
    with app.test_client() as c:
        yield c
