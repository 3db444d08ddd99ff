"""The fault campaign's short run (`make fault` runs the full one), and that its checks
really count a lost record, a damaged image and a 5xx."""

from __future__ import annotations

import http.server
import random
import sqlite3
import threading
from pathlib import Path

import pytest

from tests.fault_campaign import REPO, Row, Sizes, _check_after_crash, _raw, campaign, routes

pytestmark = pytest.mark.slow
SHIPPED = REPO / "models" / "default"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Row]]:
    """The short campaign against the shipped bundle, its scratch folder kept for checks."""
    work = tmp_path_factory.mktemp("campaign")
    return work, campaign(work, SHIPPED, Sizes.of(short=True), seed=17)


def test_the_short_campaign_loses_corrupts_and_crashes_nothing(
    short_run: tuple[Path, list[Row]],
) -> None:
    _, rows = short_run
    by_run = {r.run: r for r in rows}
    assert list(by_run) == [
        "kill-daemon",
        "kill-model-install",
        "http-fuzz",
        "image-fuzz-replay",
        "image-fuzz-classify",
    ]
    for r in rows:
        assert not r.failed, (r, r.notes)
        assert r.tried > 0, r
    # The kills came while captures were being acknowledged, and the check had work to do.
    assert by_run["kill-daemon"].checked > 0
    assert by_run["http-fuzz"].tried == Sizes.of(short=True).http_requests
    assert by_run["image-fuzz-classify"].tried >= 30


def test_a_lost_record_and_a_damaged_image_are_counted(
    short_run: tuple[Path, list[Row]],
) -> None:
    work, _ = short_run
    state = work / "kill-daemon" / "state"
    db = sqlite3.connect(state / "records.sqlite3")
    try:
        ids = {int(r[0]) for r in db.execute("SELECT id FROM results")}
        path = db.execute(
            "SELECT image_path FROM results WHERE image_path IS NOT NULL LIMIT 1"
        ).fetchone()[0]
    finally:
        db.close()
    row = Row("check")
    _check_after_crash(state, ids, set(), row)
    assert (row.lost, row.corrupt) == (0, 0), row.notes
    _check_after_crash(state, ids | {max(ids) + 1}, set(), row)
    assert row.lost == 1
    image = state / "images" / path
    image.write_bytes(image.read_bytes()[:-1] + b"\0")
    _check_after_crash(state, ids, set(), row)
    assert row.corrupt == 1 and "is not what was recorded" in row.notes[-1]


def test_a_server_error_is_seen_as_one() -> None:
    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(500)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == 500
        assert _raw(port, random.Random(0).randbytes(100)) in (400, None)
    finally:
        server.shutdown()
        server.server_close()


def test_every_route_of_the_page_is_fuzzed() -> None:
    found = routes()
    for route in ("/api/results/<record_id>", "/api/samples/<sample_id>/close", "/healthz"):
        assert route in found
    assert len(found) >= 30
