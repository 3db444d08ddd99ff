"""The JSON API on the real daemon process: records, images, filters, metrics, models, stop."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leukoscope.bench.web import PASSWORD, DaemonProcess, Session, running_daemon

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store_bundle(session_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store as `leukoscope model` leaves it: `active` and `previous` links."""
    root = tmp_path_factory.mktemp("models")
    (root / "versions").mkdir()
    shutil.copytree(session_bundle, root / "versions" / "new")
    shutil.copytree(session_bundle, root / "versions" / "old")
    manifest = root / "versions" / "old" / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["version"] = "0.0.0-old"
    manifest.write_text(json.dumps(raw))
    (root / "active").symlink_to("versions/new")
    (root / "previous").symlink_to("versions/old")
    return root / "active"


@pytest.fixture(scope="module")
def daemon(store_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    work = tmp_path_factory.mktemp("api-daemon")
    with running_daemon(work, store_bundle, stills=3, size=(800, 600)) as d:
        yield d


@pytest.fixture(scope="module")
def client(daemon: DaemonProcess) -> Session:
    s = Session(daemon.port)
    s.login(PASSWORD)
    return s


def get_json(s: Session, path: str) -> tuple[int, dict]:
    status, data, _ = s.request("GET", path)
    return status, json.loads(data)


def test_a_web_capture_reply_leads_to_its_record(client):
    """202 with a URL to poll; the poll gives the record's id and URL once it is made."""
    status, data, _ = client.request(
        "POST", "/api/capture", b"{}",
        {"Content-Type": "application/json", "X-CSRF-Token": client.csrf},
    )  # fmt: skip
    assert status == 202, data
    poll = json.loads(data)["poll_url"]
    deadline = time.monotonic() + 60
    while not (state := get_json(client, poll)[1])["done"]:
        assert time.monotonic() < deadline, "the capture never finished"
        time.sleep(0.05)
    status, record = get_json(client, state["url"])
    assert status == 200 and record["id"] == state["record_id"]
    assert record["trigger"] == "web" and record["outcome"] == state["outcome"]


def test_a_web_capture_is_recorded_with_its_model_and_image(client, store_bundle):
    rec = client.capture("API-1")
    assert rec["trigger"] == "web" and rec["sample_id"] == "API-1"
    manifest = json.loads((store_bundle / "manifest.json").read_text())
    assert rec["model_sha256"] == manifest["files"]["model.tflite"]
    assert rec["model_version"] == manifest["version"]
    status, data, resp = client.request("GET", rec["image_url"])
    assert status == 200 and resp.getheader("Content-Type") == "image/jpeg"
    assert hashlib.sha256(data).hexdigest() == rec["image_sha256"]
    status, body = get_json(client, f"/api/results/{rec['id']}")
    assert status == 200 and body["timings_ms"]["trigger_to_indicator"] > 0


def test_listing_pages_and_filters_over_the_real_store(client):
    for i in range(3):
        client.capture(f"LIST-{i}")
    everything: list[dict] = []
    cursor = ""
    while True:
        status, body = get_json(client, f"/api/results?limit=2{cursor}")
        assert status == 200
        everything += body["items"]
        if body["next_cursor"] is None:
            break
        cursor = f"&cursor={body['next_cursor']}"
    ids = [r["id"] for r in everything]
    assert ids == sorted(ids, reverse=True) and len(ids) == len(set(ids)) >= 4
    outcome = everything[0]["outcome"]
    _, same = get_json(client, f"/api/results?limit=200&verdict={outcome}")
    assert {r["outcome"] for r in same["items"]} == {outcome}
    assert len(same["items"]) == sum(r["outcome"] == outcome for r in everything)
    today = datetime.now(UTC).date()
    _, none = get_json(client, f"/api/results?date_from={today + timedelta(days=1)}")
    assert none["items"] == []
    _, all_today = get_json(client, f"/api/results?limit=200&date_from={today}&date_to={today}")
    assert len(all_today["items"]) == len(everything)


def test_bad_input_changes_nothing_on_the_real_daemon(client):
    _, before = get_json(client, "/api/status")
    for sample in ("x" * 65, "Probe-ä"):
        status, _, _ = client.request(
            "POST",
            "/api/capture",
            json.dumps({"sample_id": sample}).encode(),
            {"Content-Type": "application/json", "X-CSRF-Token": client.csrf},
        )
        assert status == 400
    status, _, _ = client.request(
        "POST", "/api/capture", b"{}", {"Content-Type": "application/json"}
    )
    assert status == 403
    for path in ("/api/results/99999999", "/api/results/99999999/image"):
        assert client.request("GET", path)[0] == 404
    assert client.request("GET", "/api/results/" + "9" * 40)[0] == 400
    _, after = get_json(client, "/api/status")
    assert after["result_seq"] == before["result_seq"]


def test_metrics_health_model_and_preview(client, daemon):
    client.capture("MET-1")
    _, text, _ = client.request("GET", "/metrics")
    metrics = text.decode()
    counts = re.findall(r'^leukoscope_captures_total\{outcome="[^"]+"\} (\d+)$', metrics, re.M)
    _, listing = get_json(client, "/api/results?limit=200")
    assert sum(int(n) for n in counts) == len(listing["items"])
    assert re.search(r'leukoscope_stage_seconds\{stage="inference",quantile="0.5"\}', metrics)
    assert re.search(r"^leukoscope_disk_free_bytes [1-9]", metrics, re.M)
    assert 'leukoscope_model_info{name="tiny-test",version="0.0.1"' in metrics
    assert client.request("GET", "/healthz")[0] == 200
    health = client.request("GET", "/health")[1].decode()
    assert "waitress" in health and "replay" in health and "daemon uptime" in health
    model = client.request("GET", "/model")[1].decode()
    assert "Current: tiny-test 0.0.1" in model and "Previous: tiny-test 0.0.0-old" in model
    status, jpeg, resp = client.request("GET", "/api/preview.jpg")
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    assert float(resp.getheader("X-Focus-Score")) > 0


def test_sigterm_stops_the_daemon_cleanly_with_browsers_connected(session_bundle, tmp_path):
    with running_daemon(tmp_path, session_bundle, stills=2, size=(640, 480)) as d:
        s = Session(d.port)
        s.login(PASSWORD)
        s.capture()
        idle = Session(d.port)  # a keep-alive connection left open, as a browser does
        idle.request("GET", "/api/status")
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(20) == 0
    log = d.log.read_text()
    assert "status page at http://127.0.0.1:" in log and "stopped cleanly" in log
    assert "Traceback" not in log
