"""Samples on the status page and API: list, detail, start, close, review, crops, the review
export, the samples' CSV, the sample page's bar and gallery, the report, and bad input.

Over the fake appliance (its samples in memory, real photos), and once over the real
daemon in-process (stand-in cells classifier, replay camera, the record store).
"""

from __future__ import annotations

import csv
import html
import io
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from PIL import Image

from leukoscope.appliance.records import Record
from leukoscope.config import WebConfig
from leukoscope.web import create_app
from leukoscope.web.auth import write_password_file
from leukoscope.web.crops import MARGIN, crop_box
from leukoscope.web.daemon_source import DaemonSource
from leukoscope.web.fake import PHOTO_SIZE, FakePhoto, FakeSource, seed_samples
from leukoscope.web.sample_api import LABEL_COLUMNS, SAMPLE_CSV_COLUMNS
from leukoscope.web.sampleview import bar
from tests.test_samples_daemon import capture, smear
from tests.test_samples_daemon import sample_daemon as real_sample_daemon
from tests.test_web_api import csrf_of, login, wait_until

SVG = "{http://www.w3.org/2000/svg}"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def source(tmp_path: Path) -> FakeSource:
    return FakeSource(tmp_path / "images", cells_mode=True)


@pytest.fixture
def csrf(client: FlaskClient) -> str:
    """Log the client in; its CSRF token."""
    status, token = login(client)
    assert status == 303
    return token


def with_fields(source: FakeSource, sample_id: str = "S-1", n: int = 2) -> list[Record]:
    """Start a sample and count `n` photos of 6 white cells (2 blasts) for it."""
    source.samples.start(sample_id)
    return [
        source.add_field(sample_id, FakePhoto(10 + i, PHOTO_SIZE, wbc=4, blasts=2))
        for i in range(n)
    ]


def post(client: FlaskClient, path: str, csrf: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(path, json=body or {}, headers={"X-CSRF-Token": csrf})


def review_path(sample_id: str, record_id: int, cell_index: int) -> str:
    return f"/api/samples/{quote(sample_id)}/cells/{record_id}/{cell_index}/review"


# --- the JSON API ---------------------------------------------------------------------------


def test_samples_are_listed_newest_first_and_paged(client: FlaskClient, source: FakeSource):
    for i, sid in enumerate(("A-1", "A-2", "A-3")):
        source.samples.start(sid, now=1_800_000_000 + i)
    first = client.get("/api/samples?limit=2").get_json()
    assert [s["id"] for s in first["items"]] == ["A-3", "A-2"]
    assert first["active_sample"] == "A-3" and first["items"][0]["active"] is True
    assert first["items"][0]["page_url"] == "/samples/A-3"
    assert "fields" not in first["items"][0] and "cells" not in first["items"][0]
    rest = client.get(f"/api/samples?limit=2&cursor={first['next_cursor']}").get_json()
    assert [s["id"] for s in rest["items"]] == ["A-1"] and rest["next_cursor"] is None
    for bad in ("limit=0", "limit=x", "cursor=abc", "cursor=1e9", "verdict=retake"):
        resp = client.get(f"/api/samples?{bad}")
        assert resp.status_code == 400, bad
        assert bad.split("=")[0] in resp.get_json()["error"]


def test_a_sample_has_its_fields_counts_interval_verdict_and_cells(
    client: FlaskClient, source: FakeSource
):
    recs = with_fields(source, "P/2026 7", 2)
    body = client.get("/api/samples/P/2026%207").get_json()
    assert body["id"] == "P/2026 7" and body["state"] == "open" and body["verdict"] is None
    assert body["n_fields"] == 2 and body["n_cells"] == 12 and body["n_blasts"] == 4
    low, high = body["interval"]
    assert 0 <= low <= body["blast_percent"] <= high <= 100
    assert [f["record_id"] for f in body["fields"]] == [r.id for r in recs]
    assert body["model"]["name"] == "fake-model" and body["report_url"].endswith("/report")
    cells = body["cells"]
    assert len(cells) == 12
    assert [c["model_blast"] for c in cells] == [True] * 4 + [False] * 8  # blasts first
    blast_p = [c["p_blast"] for c in cells[:4]]
    assert blast_p == sorted(blast_p, reverse=True)
    assert cells[0]["review"] is None
    assert cells[0]["crop_url"].startswith("/api/samples/P/2026%207/cells/")


def test_start_and_close_need_a_login_and_the_csrf_token(client: FlaskClient, source: FakeSource):
    anonymous = csrf_of(client, "/samples")  # a session's token, but no login
    assert post(client, "/api/samples", anonymous, {"sample_id": "N-1"}).status_code == 401
    _, token = login(client)
    assert client.post("/api/samples", json={"sample_id": "N-1"}).status_code == 403
    assert source.get_sample("N-1") is None
    resp = post(client, "/api/samples", token, {"sample_id": "N-1"})
    assert resp.status_code == 201 and resp.headers["Location"] == "/api/samples/N-1"
    assert resp.get_json()["state"] == "open" and source.active_sample() == "N-1"
    again = post(client, "/api/samples", token, {"sample_id": "N-1"})
    assert again.status_code == 409 and "exists already" in again.get_json()["error"]
    assert client.post("/api/samples/N-1/close").status_code == 403
    closed = post(client, "/api/samples/N-1/close", token)
    assert closed.status_code == 200 and closed.get_json()["state"] == "closed"
    assert "no verdict" in closed.get_json()["message"] and source.active_sample() is None
    assert post(client, "/api/samples/N-1/close", token).status_code == 200  # idempotent
    # a closed sample takes no more photos
    refused = post(client, "/api/capture", token, {"sample_id": "N-1"})
    assert refused.status_code == 409 and "no more fields" in refused.get_json()["error"]


def test_a_capture_naming_a_sample_becomes_its_field(client: FlaskClient, csrf: str, source):
    post(client, "/api/samples", csrf, {"sample_id": "C-1"})
    assert post(client, "/api/capture", csrf, {"sample_id": "C-1"}).status_code == 202
    wait_until(lambda: bool(source.get_sample("C-1").fields))
    s = source.get_sample("C-1")
    assert s is not None and len(s.fields) == 1
    page = client.get("/samples/C-1").get_data(as_text=True)
    assert f"result {s.fields[0].record_id}" in page


def test_a_review_is_stored_with_who_and_when_and_changes_the_reviewed_reading(
    client: FlaskClient, csrf: str, source: FakeSource
):
    recs = with_fields(source, "R-1", 1)
    rid = recs[0].id
    blast = source.sample_cells(source.get_sample("R-1"))[0]  # type: ignore[arg-type]
    assert blast.model_blast and blast.record_id == rid
    resp = post(
        client,
        review_path("R-1", rid, blast.cell_index),
        csrf,
        {"label": "not-blast", "reviewer": "Dr. Ada"},
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["review"]["label"] == "not-blast" and body["review"]["reviewer"] == "Dr. Ada"
    assert body["review"]["model_blast"] is True and body["review"]["reviewed_at"]
    assert body["sample"]["reviewed"]["n_reviews"] == 1
    assert body["sample"]["reviewed"]["n_blasts"] == body["sample"]["n_blasts"] - 1
    cells = client.get("/api/samples/R-1").get_json()["cells"]
    shown = [c for c in cells if c["review"]]
    assert len(shown) == 1 and shown[0]["cell_index"] == blast.cell_index
    # a second look replaces the first
    post(
        client, review_path("R-1", rid, blast.cell_index), csrf, {"label": "blast", "reviewer": "B"}
    )
    s = source.get_sample("R-1")
    assert s is not None and len(s.reviews) == 1 and s.reviews[0].reviewer == "B"


@pytest.mark.parametrize(
    ("path", "body", "status", "said"),
    [
        (("R-2", 1, 0), {"label": "maybe", "reviewer": "A"}, 400, "label must be one of"),
        (("R-2", 1, 0), {"label": "blast"}, 400, "reviewer"),
        (("R-2", 1, 0), {"label": "blast", "reviewer": "x" * 65}, 400, "reviewer"),
        (("R-2", 1, 0), {"label": "blast", "reviewer": "A\nB"}, 400, "reviewer"),
        (
            ("R-2", 1, 0),
            {"label": "blast", "reviewer": "A", "cell": 3},
            400,
            "unknown field 'cell'",
        ),
        (("R-2", 1, 99), {"label": "blast", "reviewer": "A"}, 404, "has no cell 99 in record 1"),
        (("R-2", 999, 0), {"label": "blast", "reviewer": "A"}, 404, "has no cell 0 in record 999"),
        (("R-2", "x", 0), {"label": "blast", "reviewer": "A"}, 400, "record id"),
        (("R-2", 1, "-1"), {"label": "blast", "reviewer": "A"}, 400, "cell index"),
        (("NOPE", 1, 0), {"label": "blast", "reviewer": "A"}, 404, "no sample 'NOPE'"),
        (("bad<id>", 1, 0), {"label": "blast", "reviewer": "A"}, 400, "bad sample id"),
        (("x" * 10_000, 1, 0), {"label": "blast", "reviewer": "A"}, 400, "a long text"),
    ],
)
def test_bad_reviews_are_refused_by_name_and_store_nothing(
    client: FlaskClient, csrf: str, source: FakeSource, path: tuple, body: dict, status: int,
    said: str,
):  # fmt: skip
    recs = with_fields(source, "R-2", 1)
    assert recs[0].id == 1
    resp = post(client, review_path(*path), csrf, body)
    assert resp.status_code == status, resp.get_json()
    assert said in resp.get_json()["error"]
    s = source.get_sample("R-2")
    assert s is not None and s.reviews == ()


def test_a_retake_fields_cells_cannot_be_reviewed(client: FlaskClient, csrf: str, source):
    with_fields(source, "R-3", 1)
    retake = source.add_field("R-3", FakePhoto(50, PHOTO_SIZE, wbc=4), outcome="retake")
    resp = post(client, review_path("R-3", retake.id, 0), csrf, {"label": "blast", "reviewer": "A"})
    assert resp.status_code == 404


@pytest.mark.parametrize(
    "sample_id",
    ["<script>", "a\nb", "Probe-ä", " lead", "x" * 65, "x" * 10_000, "-starts-with-dash"],
)
def test_odd_or_huge_sample_ids_are_a_clear_400_and_start_nothing(
    client: FlaskClient, csrf: str, source: FakeSource, sample_id: str
):
    resp = post(client, "/api/samples", csrf, {"sample_id": sample_id})
    assert resp.status_code == 400 and "bad sample id" in resp.get_json()["error"]
    assert len(resp.get_json()["error"]) < 300  # a 10 kB id is not echoed back
    form = client.post("/samples", data={"sample_id": sample_id, "csrf_token": csrf})
    assert form.status_code == 400 and "bad sample id" in form.get_data(as_text=True)
    for path in ("", "/report", "/cells/1/0.png"):
        got = client.get(f"/api/samples/{quote(sample_id)}{path}")
        assert got.status_code == 400, path
    assert post(client, f"/api/samples/{quote(sample_id)}/close", csrf).status_code == 400
    assert source.list_samples(10, None).items == []


def test_start_refuses_a_missing_id_unknown_fields_and_other_bodies(client, csrf, source):
    assert post(client, "/api/samples", csrf, {}).status_code == 400
    resp = post(client, "/api/samples", csrf, {"sample_id": "U-1", "smaple": 1})
    assert resp.status_code == 400 and "unknown field 'smaple'" in resp.get_json()["error"]
    resp = client.post(
        "/api/samples", data='{"sample_id": "U-1"}', headers={"X-CSRF-Token": csrf},
        content_type="text/plain",
    )  # fmt: skip
    assert resp.status_code == 415
    resp = client.post("/api/samples", json=["U-1"], headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 400
    assert source.list_samples(10, None).items == []


def test_unknown_samples_are_404_everywhere(client: FlaskClient, csrf: str):
    for path in ("/api/samples/NOPE", "/api/samples/NOPE/cells/1/0.png", "/samples/NOPE",
                 "/samples/NOPE/report"):  # fmt: skip
        resp = client.get(path)
        assert resp.status_code == 404 and "no sample 'NOPE'" in html.unescape(resp.text)
    assert post(client, "/api/samples/NOPE/close", csrf).status_code == 404


# --- crops, the review export, the samples' CSV -----------------------------------------------


def test_a_cells_crop_is_cut_from_its_photo_around_its_box(client: FlaskClient, source):
    recs = with_fields(source, "K-1", 1)
    cell = client.get("/api/samples/K-1").get_json()["cells"][0]
    resp = client.get(cell["crop_url"])
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    crop = Image.open(io.BytesIO(resp.data))
    x0, _, x1, _ = cell["box"]
    rect = crop_box(cell["box"], PHOTO_SIZE)
    assert rect is not None and crop.size == (rect[2] - rect[0], rect[3] - rect[1])
    assert crop.size[0] >= min(x1 - x0, PHOTO_SIZE[0] - x0)  # the box, and a margin if room
    photo = Image.open(source.images_dir / (recs[0].image_path or "")).convert("RGB")
    # the crop's centre pixel is the photo's there (a PNG of the decoded JPEG)
    cx, cy = crop.size[0] // 2, crop.size[1] // 2
    assert crop.convert("RGB").getpixel((cx, cy)) == photo.getpixel((rect[0] + cx, rect[1] + cy))
    # gone once retention deleted the photo
    (source.images_dir / (recs[0].image_path or "")).unlink()
    gone = client.get(cell["crop_url"])
    assert gone.status_code == 404 and "deleted by retention" in gone.get_json()["error"]


def test_crop_boxes_are_checked_scaled_and_clipped():
    assert crop_box([10, 10, 30, 30], (100, 100)) == (5, 5, 35, 35)
    assert crop_box([10, 10, 30, 30], (200, 200), [100, 100]) == (10, 10, 70, 70)
    assert crop_box([-50, -50, 5, 5], (100, 100)) == (0, 0, 19, 19)
    assert crop_box([0, 0, 40, 20], (100, 100))[2] == 40 + round(MARGIN * 40)  # type: ignore[index]
    for bad in ([1, 2, 3], [0, 0, "a", 5], [0, 0, float("nan"), 5], [200, 200, 300, 300], "box"):
        assert crop_box(bad, (100, 100)) is None


def test_reviewed_cells_export_as_crops_and_labels(client: FlaskClient, source: FakeSource):
    recs = with_fields(source, "E-1", 2)
    cells = source.sample_cells(source.get_sample("E-1"))  # type: ignore[arg-type]
    source.samples.review("E-1", cells[0].record_id, cells[0].cell_index, "not-blast", "Ada")
    source.samples.review(
        "E-1", cells[-1].record_id, cells[-1].cell_index, "blast", "=cmd|' /C calc'!A0"
    )
    assert client.get("/api/reviews/export.zip").status_code == 401
    login(client)
    resp = client.get("/api/reviews/export.zip")
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    assert "attachment" in resp.headers["Content-Disposition"]
    zf = zipfile.ZipFile(io.BytesIO(resp.data))
    rows = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
    assert tuple(rows[0]) == LABEL_COLUMNS and len(rows) == 2
    by_cell = {(int(r["record_id"]), int(r["cell_index"])): r for r in rows}
    first = by_cell[(cells[0].record_id, cells[0].cell_index)]
    assert (
        first["label"] == "not-blast" and first["model_blast"] == "1" and first["reviewer"] == "Ada"
    )
    assert first["sample_id"] == "E-1" and first["model_name"] == "fake-model"
    assert first["model_sha256"] == "ab" * 32 and float(first["p_blast"]) > 0.5
    last = by_cell[(cells[-1].record_id, cells[-1].cell_index)]
    assert last["label"] == "blast" and last["model_blast"] == "0"
    assert last["reviewer"].startswith("'=")  # no formula in a spreadsheet
    for r in rows:
        png = Image.open(io.BytesIO(zf.read(r["file"])))
        assert png.format == "PNG" and min(png.size) > 10
    assert {n for n in zf.namelist() if n.endswith(".png")} == {r["file"] for r in rows}
    # a reviewed cell whose photo is gone is still labelled, with no file
    (source.images_dir / (recs[0].image_path or "")).unlink()
    zf = zipfile.ZipFile(io.BytesIO(client.get("/api/reviews/export.zip").data))
    rows = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
    assert len(rows) == 2 and "" in {r["file"] for r in rows}
    assert client.get("/api/reviews/export.zip?all=1").status_code == 400


def test_the_samples_csv_lists_every_sample(client: FlaskClient, source: FakeSource):
    with_fields(source, "V-1", 2)
    source.samples.start("V-2")
    assert client.get("/api/samples.csv").status_code == 401
    login(client)
    resp = client.get("/api/samples.csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert tuple(rows[0]) == SAMPLE_CSV_COLUMNS
    assert [r["id"] for r in rows] == ["V-2", "V-1"]
    v1 = rows[1]
    assert (v1["n_fields"], v1["n_cells"], v1["n_blasts"]) == ("2", "12", "4")
    assert float(v1["interval_low"]) <= float(v1["blast_percent"]) <= float(v1["interval_high"])
    assert v1["threshold_percent"] == "5.0" and v1["model_version"] == "1.2.3"
    assert client.get("/api/samples.csv?x=1").status_code == 400


# --- the pages --------------------------------------------------------------------------------


def parse_bar(page: str, bar_id: str) -> ET.Element:
    m = re.search(rf'<svg class="blast-bar" id="{bar_id}".*?</svg>', page, re.S)
    assert m, f"no bar #{bar_id}"
    return ET.fromstring(m.group(0))


def test_the_sample_page_shows_fields_counts_bar_readings_and_gallery(
    client: FlaskClient, source: FakeSource
):
    recs = with_fields(source, "G-1", 2)
    source.add_field("G-1", FakePhoto(10, PHOTO_SIZE, wbc=4, blasts=2), repeats=recs[0].id)
    source.add_field("G-1", FakePhoto(60, PHOTO_SIZE, wbc=0), outcome="retake")
    page = client.get("/samples/G-1").get_data(as_text=True)
    table = re.search(r'id="fields-table".*?</table>', page, re.S)
    assert table
    assert "repeat of field 1 (60% shared)" in table.group(
        0
    ) and "retake: not counted" in table.group(0)
    assert "<b>12</b> white cells in <b>2</b> counted fields" in page
    svg = parse_bar(page, "bar-model")
    s = source.get_sample("G-1")
    assert s is not None
    d = s.differential()
    want = bar(d.blast_percent, d.interval_percent, 5.0)
    line = svg.find(f"{SVG}line[@class='threshold']")
    assert line is not None and float(line.get("x1") or 0) == want.threshold_x
    band = svg.find(f"{SVG}rect[@class='interval']")
    assert band is not None and float(band.get("x") or 0) == want.low_x
    assert "threshold 5%" in "".join(svg.itertext())
    assert "No cell reviewed yet" in page
    gallery = re.findall(r'<li class="cell-card (g-\w+)[^"]*" id="cell-(\d+)-(\d+)">', page)
    assert len(gallery) == 12 and [g[0] for g in gallery[:4]] == ["g-blast"] * 4
    assert "Log in</a> to review cells" in page and "Close sample" not in page


def test_reviewing_from_the_page_works_without_javascript(
    client: FlaskClient, csrf: str, source: FakeSource
):
    recs = with_fields(source, "W-1", 1)
    page = client.get("/samples/W-1").get_data(as_text=True)
    assert 'id="reviewer-form"' in page and 'value="not-blast"' not in page  # name first
    path = f"/samples/W-1/cells/{recs[0].id}/0/review"
    nameless = client.post(path, data={"csrf_token": csrf, "label": "blast"})
    assert nameless.status_code == 400 and "reviewer" in nameless.get_data(as_text=True)
    resp = client.post(
        "/reviewer", data={"csrf_token": csrf, "reviewer": "Tech Bo", "next": "/samples/W-1"}
    )
    assert resp.status_code == 303 and resp.headers["Location"] == "/samples/W-1"
    page = client.get("/samples/W-1").get_data(as_text=True)
    forms = re.findall(r'<form class="review" method="post" action="([^"]+)"', page)
    assert len(forms) == 6 and path in forms
    resp = client.post(path, data={"csrf_token": csrf, "label": "not-blast"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"#cell-{recs[0].id}-0")
    page = client.get("/samples/W-1").get_data(as_text=True)
    assert "Reviewed: <b>not a blast</b>" in page and "by Tech Bo" in page
    assert 'id="bar-reviewed"' in page and "As reviewed (1 cell)" in page
    assert client.post(path, data={"label": "blast"}).status_code == 403  # no CSRF token


def test_start_and_close_from_the_pages(client: FlaskClient, csrf: str, source: FakeSource):
    status = client.get("/").get_data(as_text=True)
    assert 'id="status-start-form"' in status and "No sample is open" in status
    resp = client.post("/samples", data={"csrf_token": csrf, "sample_id": "F-1/a b"})
    assert resp.status_code == 303 and resp.headers["Location"] == "/samples/F-1/a%20b"
    status = client.get("/").get_data(as_text=True)
    assert 'href="/samples/F-1/a%20b">F-1/a b</a>' in status
    assert 'name="sample_id" value="F-1/a b"' in status  # the capture form names it
    listing = client.get("/samples").get_data(as_text=True)
    assert "F-1/a b" in listing and 'id="samples-csv-link"' in listing
    page = client.get("/samples/F-1/a%20b").get_data(as_text=True)
    assert 'id="close-button"' in page and "Counting: no verdict yet" in page
    resp = client.post("/samples/F-1/a%20b/close", data={"csrf_token": csrf})
    assert resp.status_code == 303
    page = client.get("/samples/F-1/a%20b").get_data(as_text=True)
    assert "Closed without a verdict" in page and 'id="close-button"' not in page
    dup = client.post("/samples", data={"csrf_token": csrf, "sample_id": "F-1/a b"})
    assert dup.status_code == 409 and "exists already" in dup.get_data(as_text=True)


def test_the_report_has_everything_on_one_page(client: FlaskClient, source: FakeSource):
    seed_samples(source)
    resp = client.get("/samples/P-2026-0042/report")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    s = source.get_sample("P-2026-0042")
    assert s is not None and s.verdict is not None
    d = s.differential()
    assert '<td id="report-sample-id">P-2026-0042</td>' in page
    assert f"{d.n_cells} white cells in {d.n_fields} fields; {d.n_blasts} called blasts" in page
    lo, hi = d.interval_percent
    assert f"{d.blast_percent:.1f} %</b> (95% interval {lo:.1f}–{hi:.1f} %" in page
    assert "Leukemia suspected" in text_of(page, "report-verdict")
    assert "fake-model 1.2.3" in page and "ab" * 32 in page
    thumbs = re.findall(r"<li><img src=\"([^\"]+)\"", page)
    assert 0 < len(thumbs) <= 24
    assert all(client.get(t).status_code == 200 for t in thumbs[:3])
    assert (
        "A screening aid, not a diagnosis: every positive must be confirmed by a qualified person"
        in page
    )
    assert re.search(
        r'<time class="local" datetime="[^"]+">\d{4}-\d\d-\d\d \d\d:\d\d \(UTC[^)]*\)</time>', page
    )
    css = client.get("/static/style.css").get_data(as_text=True)
    assert "@media print" in css


def text_of(page: str, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>(.*?)</td>', page, re.S)
    assert m, f"no #{element_id}"
    return re.sub(r"<[^>]+>", "", m.group(1))


def test_the_fake_demo_has_samples_of_every_kind(client: FlaskClient, source: FakeSource):
    seed_samples(source)
    states = {s.id: (s.state.value, s.verdict) for s in source.list_samples(10, None).items}
    assert states["P-2026-0040"][0] == "closed" and states["P-2026-0043"][0] == "open"
    assert {str(states[k][1]) for k in ("P-2026-0041", "P-2026-0042")} == {
        "no-leukemia-suspected", "leukemia-suspected",
    }  # fmt: skip
    for sid in states:
        for path in (f"/samples/{sid}", f"/samples/{sid}/report", f"/api/samples/{sid}"):
            assert client.get(path).status_code == 200, path
    assert client.get("/samples").status_code == 200


def test_the_bar_marks_the_interval_estimate_and_threshold_on_one_scale():
    b = bar(12.0, (8.0, 17.0), 5.0)
    assert b.left < b.threshold_x < b.low_x < b.estimate_x < b.high_x < b.right
    assert [t.label for t in b.ticks] == ["0%", "5%", "10%", "15%", "20%", "25%", "30%"]
    wide = bar(40.0, (31.0, 52.0), 20.0)
    assert wide.ticks[-1].label == "60%" and wide.high_x < wide.right
    assert bar(0.0, (0.0, 3.0), 5.0).threshold_anchor == "middle"
    assert bar(0.0, (0.0, 3.0), 1.0).threshold_anchor == "start"


# --- over the real daemon ---------------------------------------------------------------------


def test_samples_over_the_real_daemon(tmp_path: Path):
    """Start, capture, review, export and the pages, through the daemon's own source."""
    fields = [smear(1), smear(2), smear(1)]  # the third repeats the first
    with real_sample_daemon(tmp_path, fields, max_overlap=0.2) as daemon:
        write_password_file(tmp_path / "pw", "a long enough password")
        source = DaemonSource(daemon)
        try:
            app = create_app(source, WebConfig(password_file=tmp_path / "pw"))
            client = app.test_client()
            _, csrf = login(client, "a long enough password")
            resp = post(client, "/api/samples", csrf, {"sample_id": "D-1"})
            assert resp.status_code == 201, resp.get_json()
            assert client.get("/api/samples").get_json()["active_sample"] == "D-1"
            status = client.get("/").get_data(as_text=True)
            assert 'href="/samples/D-1">D-1</a>' in status and 'value="D-1"' in status
            for _ in fields:
                capture(daemon, "D-1")
            body = client.get("/api/samples/D-1").get_json()
            assert [f["status"] for f in body["fields"]] == ["counted", "counted", "repeat"]
            assert len(body["cells"]) == body["n_cells"] > 0
            cell = body["cells"][0]
            png = client.get(cell["crop_url"])
            assert png.status_code == 200 and png.data[:8] == b"\x89PNG\r\n\x1a\n"
            path = review_path("D-1", cell["record_id"], cell["cell_index"])
            bad = post(client, path, csrf, {"label": "nope", "reviewer": "Ada"})
            assert bad.status_code == 400
            ok = post(client, path, csrf, {"label": "not-blast", "reviewer": "Ada"})
            assert ok.status_code == 200, ok.get_json()
            missing = review_path("D-1", body["fields"][2]["record_id"], 0)  # the repeat
            assert (
                post(client, missing, csrf, {"label": "blast", "reviewer": "A"}).status_code == 404
            )
            stored = source.get_sample("D-1")
            assert stored is not None and [r.reviewer for r in stored.reviews] == ["Ada"]
            zf = zipfile.ZipFile(io.BytesIO(client.get("/api/reviews/export.zip").data))
            rows = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
            assert [(r["sample_id"], r["label"]) for r in rows] == [("D-1", "not-blast")]
            assert rows[0]["model_sha256"] == daemon.bundle.manifest.model_sha256
            assert zf.read(rows[0]["file"])[:4] == b"\x89PNG"
            page = client.get("/samples/D-1").get_data(as_text=True)
            assert "repeat of field 1" in page and "by Ada" in page
            report = client.get("/samples/D-1/report").get_data(as_text=True)
            assert daemon.bundle.manifest.name in report and 'id="disclaimer"' in report
            closed = post(client, "/api/samples/D-1/close", csrf)
            assert closed.status_code == 200 and closed.get_json()["state"] in ("closed",)
            again = post(client, "/api/samples", csrf, {"sample_id": "D-1"})
            assert again.status_code == 409
            csv_rows = list(
                csv.DictReader(io.StringIO(client.get("/api/samples.csv").get_data(as_text=True)))
            )
            assert [r["id"] for r in csv_rows] == ["D-1"]
        finally:
            source.close()
