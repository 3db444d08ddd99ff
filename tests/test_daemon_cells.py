"""A cells bundle in the real daemon: its per-cell result is recorded and reaches the page.

In-process: the real Daemon, replay camera, MockFactory pins and record store, with a
cells bundle whose classifier is a stand-in (no TensorFlow), then the status page read
through the daemon's own StatusSource.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from leukoscope.appliance.daemon import Daemon, NotReadyError
from leukoscope.config import WebConfig, load_config
from leukoscope.core.synthetic import make_smear
from leukoscope.web import create_app
from leukoscope.web.auth import write_password_file
from leukoscope.web.daemon_source import DaemonSource
from leukoscope.web.reasons import RETAKE_REASONS
from tests.daemon_helpers import daemon_config, daemon_in_process, write_rgb
from tests.test_cell_analysis import fake_bundle

#: The replay camera's fields, in the order it serves them.
FIELDS: dict[str, dict[str, Any]] = {
    "cells": dict(n_wbc=3, px_per_um=4.0, seed=3),
    "no-white-cells": dict(n_wbc=0, px_per_um=4.0, seed=3),
    "no-red-cells": dict(n_wbc=3, rbc_density=0.0, px_per_um=4.0, seed=3),
}


@contextmanager
def cells_daemon(tmp_path: Path, **camera: Any) -> Iterator[Daemon]:
    """A running Daemon over FIELDS with a stand-in cells bundle; yields the daemon."""
    for i, (name, kw) in enumerate(FIELDS.items()):
        write_rgb(tmp_path / "replay" / f"{i:02d}-{name}.png", make_smear(400, 300, **kw).image)
    # The gate has its own tests; a field without red cells must reach cell analysis here.
    cfg = load_config(
        daemon_config(
            tmp_path,
            tmp_path / "unused-bundle",
            tmp_path / "replay",
            quality={"enabled": False},
            camera=camera,
        )
    )
    bundle, _ = fake_bundle()
    with daemon_in_process(cfg, bundle) as daemon:
        yield daemon


def capture(daemon: Daemon) -> dict[str, Any]:
    """One capture through the daemon's own path, once it is ready for one."""
    ticket = None
    for _ in range(500):  # until the camera is up and the last capture has finished
        try:
            ticket = daemon.request_capture("control")
        except NotReadyError:
            ticket = None
        if ticket is not None:
            break
        threading.Event().wait(0.02)
    assert ticket is not None and ticket.done.wait(60)
    assert ticket.result and ticket.result["saved"], ticket.result
    return dict(ticket.result)


def test_the_daemon_records_each_photo_cells_and_why_it_wants_a_retake(tmp_path: Path) -> None:
    with cells_daemon(tmp_path) as daemon:
        judged, no_white, no_scale = (capture(daemon) for _ in FIELDS)
        stored = daemon.store.reader.get(judged["id"])

        cells = judged["cells"]
        assert judged["outcome"] in ("no-leukemia-suspected", "leukemia-suspected", "indeterminate")
        assert cells["n_found"] == 3 and len(cells["cells"]) == cells["n_classified"] == 3
        assert cells["image_size"] == [400, 300] and cells["scale_source"] == "red-cells"
        assert judged["p_leukemia"] == pytest.approx(cells["score"], abs=1e-4)
        assert stored is not None and stored.cells == cells  # as written, as read back

        assert no_white["outcome"] == "retake" and no_white["retake_reasons"] == ["no-white-cells"]
        assert no_white["cells"]["n_found"] == 0 and no_white["cells"]["cells"] == []
        assert no_scale["outcome"] == "retake" and no_scale["retake_reasons"] == ["no-scale"]
        assert no_scale["cells"] is None

        # The status page, reading the records as the running appliance serves them.
        write_password_file(tmp_path / "pw", "a long enough password")
        source = DaemonSource(daemon)
        try:
            client = create_app(source, WebConfig(password_file=tmp_path / "pw")).test_client()
            page = client.get(f"/results/{judged['id']}").get_data(as_text=True)
            boxes = re.findall(
                r'<g class="cell (c-\w+)[^"]*"><title>[^<]*</title><rect x="([\d.]+)"', page
            )
            want = [
                ("c-blast" if c["blast"] else "c-other", float(c["box"][0])) for c in cells["cells"]
            ]
            assert [(k, float(x)) for k, x in boxes] == want
            assert 'viewBox="0 0 400 300"' in page
            api = client.get(f"/api/results/{judged['id']}").get_json()
            assert api["cells"] == cells
            for rec, code in ((no_white, "no-white-cells"), (no_scale, "no-scale")):
                page = client.get(f"/results/{rec['id']}").get_data(as_text=True)
                assert RETAKE_REASONS[code] in page
        finally:
            source.close()


def test_a_calibrated_scale_from_the_config_is_used(tmp_path: Path) -> None:
    with cells_daemon(tmp_path, px_per_um=4.0) as daemon:
        judged, _, no_red = (capture(daemon) for _ in FIELDS)
    assert judged["cells"]["scale_source"] == "given" and judged["cells"]["px_per_um"] == 4.0
    # without red cells to measure, the calibration still lets the field be judged
    assert no_red["outcome"] != "retake", no_red["retake_reasons"]
    assert no_red["cells"]["scale_source"] == "given" and no_red["cells"]["n_found"] == 3
    assert np.isfinite(no_red["p_leukemia"])
