"""The pages for the technician (issue 16): the verdict first, details folded, field names
in words, local times, the plain-language model page and the server-side SVG charts."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from leukoscope.config import CameraConfig
from leukoscope.web import charts, display
from leukoscope.web.daemon_source import calibration
from leukoscope.web.fake import FakeSource, fake_cells
from leukoscope.web.modelview import card_limits, rate_text, summarise
from leukoscope.web.overlay import cell_view

REPO = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
PLUS_ONE = timezone(timedelta(hours=1))
MINUS_FIVE = timezone(timedelta(hours=-5))


@pytest.fixture
def source(tmp_path: Path) -> FakeSource:
    return FakeSource(tmp_path / "images")


def page(client: FlaskClient, path: str) -> str:
    resp = client.get(path)
    assert resp.status_code == 200, path
    return resp.get_data(as_text=True)


def main_of(html: str) -> str:
    return html[html.index("<main>") : html.index("</main>")]


# --- words and times ----------------------------------------------------------------------------


def test_field_names_and_values_are_said_in_words():
    assert display.label("mean_luma") == "Mean brightness (0–255)"
    assert display.label("trigger_to_indicator") == "Button to light"
    assert display.label("gap_um") == "Gap (µm)"
    assert display.label("some_new_measure") == "Some new measure"
    assert display.value(False) == "no" and display.value(True) == "yes"
    assert display.value(None) == "–" and display.value(float("nan")) == "–"
    assert display.value(0.123456) == "0.1235"
    assert display.value([0.25, 0.75]) == "0.25, 0.75"
    assert display.value({"seed": 0, "best_epoch": 8}) == "Seed: 0; Best epoch: 8"


@pytest.mark.parametrize(
    ("zone", "shown"),
    [
        (UTC, "2026-05-02 23:59 (UTC)"),
        (PLUS_ONE, "2026-05-03 00:59 (UTC+01:00)"),  # the next day, where the appliance is
        (MINUS_FIVE, "2026-05-02 18:59 (UTC\u221205:00)"),
    ],
)
def test_times_are_shown_in_the_appliances_zone_with_the_offset(zone, shown):
    stored = "2026-05-02T23:59:30.000+00:00"
    assert display.local_text(stored, zone) == shown
    assert display.utc_iso(stored) == "2026-05-02T23:59:30+00:00"
    assert display.local_text("2026-05-02T23:59:30", zone) == shown  # naive is UTC
    assert display.local_text("not a time", zone) == "not a time"


def test_pages_show_the_devices_local_time_inside_a_time_element(client, source, monkeypatch):
    monkeypatch.setattr(display, "local_zone", lambda: PLUS_ONE)
    rec = source.add_record("retake", created=datetime(2026, 5, 2, 23, 59, tzinfo=UTC))
    for path in ("/", "/history", f"/results/{rec.id}"):
        html = page(client, path)
        assert re.search(
            r'<time class="local"[^>]* datetime="2026-05-02T23:59:00\+00:00">'
            r"2026-05-03 00:59 \(UTC\+01:00\)</time>",
            html,
        ), path
        assert "2026-05-02T23:59:00.000+00:00" not in main_of(html), path  # no raw ISO


# --- the status page: the verdict first -------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "icon", "words"),
    [
        ("no-leukemia-suspected", "✓", "No leukemia suspected"),
        ("leukemia-suspected", "!", "Leukemia suspected — refer"),
        ("indeterminate", "?", "Indeterminate — refer or retake"),
        ("retake", "↻", "Retake the photo"),
        ("fault", "✕", "Fault"),
    ],
)
def test_the_latest_verdict_is_the_first_thing_on_the_status_page(
    client, source, outcome, icon, words
):
    source.add_record(outcome, p=0.91, sample_id="P-7")
    html = main_of(page(client, "/"))
    banner = html.index('id="last-result"')
    assert f'class="banner b-{outcome}"' in html
    # nothing but the (hidden) fault banner comes before it; the appliance state after it
    assert (
        html.index('id="state"') > banner
        and html.index('id="capture-form"' if "capture-form" in html else 'class="card capture"')
        > banner
    )
    verdict = re.search(r'id="last-verdict">(.*?)</p>', html, re.S)
    assert verdict
    text = re.sub(r"<[^>]+>", "", verdict.group(1))
    assert icon in text and words in text  # an icon and words, not colour alone
    assert re.search(r'id="last-sample">P-7<', html)
    assert 'id="last-time"' in html and 'id="last-image"' in html
    assert "Status: " not in html  # the appliance state no longer reads like a result


def test_the_banner_thumbnail_has_the_cell_boxes(client, source):
    rec = source.add_record("leukemia-suspected", p=0.9, cells=True)
    html = page(client, "/")
    m = re.search(r'<svg class="cell-overlay" id="last-overlay".*?</svg>', html, re.S)
    assert m, "no boxes on the banner's photo"
    assert len(ET.fromstring(m.group(0)).findall(f"{SVG}g")) == len(rec.cells["cells"])
    assert page(client, "/status/latest").count('id="last-overlay"') == 1


def test_a_fault_shows_its_own_banner_and_technical_detail_is_folded(client, source):
    source.add_record("no-leukemia-suspected", p=0.1)
    html = page(client, "/")
    assert re.search(r'<section id="fault-banner"[^>]*\bhidden', html)
    details = html[html.index('<details id="last-details"') :]
    assert details.index("Quality measures") < details.index("</details>")
    assert "mean_luma" not in html and "Mean brightness (0–255)" in html
    source.faults["camera"] = "no camera detected"
    html = page(client, "/")
    assert not re.search(r'<section id="fault-banner"[^>]*\bhidden', html)
    assert "camera: no camera detected" in html


def test_the_score_is_named_and_explained_wherever_it_is_shown(client, source):
    rec = source.add_record("no-leukemia-suspected", p=0.676)
    for path in ("/", f"/results/{rec.id}"):
        html = main_of(page(client, path))
        assert "Probability of leukemia" not in html, path
        assert "67.6 %" in html and "eukemia score" in html, path
        assert "not a calibrated probability" in html, path


# --- the result page ----------------------------------------------------------------------------


def test_the_record_is_folded_with_labels_in_words(client, source):
    rec = source.add_record("retake", image_deleted=True, sample_id="S-9")
    html = page(client, f"/results/{rec.id}")
    fold = html[
        html.index('<details id="record-details"') : html.index(
            "</details>", html.index('<details id="record-details"')
        )
    ]
    assert 'id="detail-fields"' in fold and "Timings (ms)" in fold and "Quality measures" in fold
    headers = re.findall(r"<th>([^<]*)</th>", fold)
    assert headers and not [h for h in headers if "_" in h], headers  # no snake_case keys
    cells = re.findall(r"<td[^>]*>(.*?)</td>", fold, re.S)
    assert not [c for c in cells if c.strip() in ("False", "True", "None")]
    assert "Photo deleted</th><td>yes" in fold


def test_a_cell_result_shows_no_empty_probabilities_heading(client, source):
    cells = source.add_record("leukemia-suspected", p=0.65, cells=True)
    whole = source.add_record("leukemia-suspected", p=0.65)
    assert "Probabilities" not in page(client, f"/results/{cells.id}")
    assert "Class probabilities" in page(client, f"/results/{whole.id}")


def test_overlay_labels_are_in_screen_pixels_and_anchored_inside_the_photo():
    rep = fake_cells(1)
    width = rep["image_size"][0]
    rep["cells"].append(dict(rep["cells"][0], box=[width - 30, 0, width, 30]))  # top right
    cv = cell_view(rep)
    assert cv is not None and len(cv.labels) == len(cv.boxes)
    for label, box in zip(cv.labels, cv.boxes, strict=True):
        assert 0 <= label.x_pct <= 100 and 0 <= label.y_pct <= 100
        assert label.text == box.short
    corner = cv.labels[-1]
    assert corner.anchor == "end" and corner.x_pct == 100.0  # right-aligned at the edge
    assert corner.baseline == "text-before-edge"  # inside the box, not above the photo's top


def test_the_page_draws_the_labels_at_12_css_px(client, source):
    rec = source.add_record("leukemia-suspected", p=0.9, cells=True)
    html = page(client, f"/results/{rec.id}")
    m = re.search(r'<svg class="cell-labels".*?</svg>', html, re.S)
    assert m
    svg = ET.fromstring(m.group(0))
    assert svg.get("viewBox") is None and svg.get("font-size") == "12"  # CSS px, not photo px
    assert len(svg.findall(f"{SVG}text")) == len(rec.cells["cells"])


# --- the model page -----------------------------------------------------------------------------


def shipped() -> dict:
    manifest = json.loads((REPO / "models/default/manifest.json").read_text())
    card = (REPO / "models/default/MODEL_CARD.md").read_text()
    th = manifest["thresholds"]
    return {
        "role": "current",
        "name": manifest["name"],
        "version": manifest["version"],
        "thresholds": [th["low"], th["high"]],
        "metrics": manifest["metrics"],
        "training": manifest["training"],
        "sample": manifest["sample"],
        "card": card,
    }


def test_the_model_summary_quotes_the_shipped_manifest():
    bundle = shipped()
    m = summarise(bundle)
    overall = bundle["metrics"]["test"]["overall"]
    sens = {x.name: x.text for x in m.measures}
    lo, hi = overall["sensitivity_ci"]
    assert sens["Sensitivity"] == (
        f"{100 * overall['sensitivity']:.0f}% (95% interval {100 * lo:.0f}–{100 * hi:.0f}%)"
    )
    assert sens["Specificity"].startswith(f"{100 * overall['specificity']:.0f}% (95% interval")
    assert m.tested_on and str(overall["n"]) in m.tested_on
    assert m.trained_on and "ALL-IDB1" in m.trained_on
    assert {s for s, *_ in m.by_source} >= {"all-idb1", "kaggle-all"}
    assert m.limits and any("ALL-IDB1 confounds camera with label" in x for x in m.limits)
    assert any("not seen" in x for x in m.limits)  # the cross-source drop, in words
    low, high = bundle["thresholds"]
    assert m.thresholds and f"{100 * low:.0f}%" in m.thresholds
    assert f"{100 * high:.0f}%" in m.thresholds
    rule = bundle["sample"]
    assert m.sample_rule and f"surely above {100 * rule['threshold']:g}%" in m.sample_rule
    assert f"sensitivity {100 * rule['sensitivity']:.0f}%" in m.sample_rule
    assert len(m.metric_rows) > 20
    assert all("{" not in v and "_" not in k for k, v in m.metric_rows)


def test_the_model_page_is_words_not_dict_reprs_and_folds_the_rest(client, source, monkeypatch):
    monkeypatch.setattr(source, "models", lambda: [dict(shipped(), sha256="ab" * 32, path="/m")])
    html = page(client, "/model")
    body = main_of(html)
    assert "{'" not in body and "': " not in body
    assert "Sensitivity" in body and "95% interval" in body and "Where it is known to fail" in body
    first_fold = body.index("<details")
    assert body.index("Where it is known to fail") < first_fold
    assert body.index("All the metrics") > first_fold


def test_rates_without_numbers_are_a_dash():
    assert rate_text(None) == "–" and rate_text(0.5, ["a", 1]) == "50%"
    assert card_limits(None) == [] and card_limits("# Card\nno limits here") == []
    assert summarise({"metrics": {"sensitivity": 0.95}}).measures[0].text == "95%"
    # Every model is told to be checked on the user's own rig, cross-source runs or not.
    assert any("has not seen" in x for x in summarise({"metrics": {}}).limits)


# --- the charts ---------------------------------------------------------------------------------


def unix(y: int, m: int, d: int, h: int = 12) -> float:
    return datetime(y, m, d, h, tzinfo=UTC).timestamp()


def test_history_chart_counts_each_local_day_by_verdict():
    results = [
        (unix(2026, 5, 10), "no-leukemia-suspected"),
        (unix(2026, 5, 10), "no-leukemia-suspected"),
        (unix(2026, 5, 10), "leukemia-suspected"),
        (unix(2026, 5, 12), "retake"),
        (unix(2026, 5, 12, 23), "indeterminate"),  # 00:00 on the 13th at UTC+1
        (unix(2026, 4, 1), "retake"),  # before the window: left out
    ]
    c = charts.history_chart(results, date(2026, 5, 13), PLUS_ONE, n_days=7)
    assert [d.day for d in c.days] == [date(2026, 5, 7) + timedelta(days=i) for i in range(7)]
    by_day = {d.day: d for d in c.days}
    assert by_day[date(2026, 5, 10)].total == 3
    assert [(s.outcome, s.count) for s in by_day[date(2026, 5, 10)].segments] == [
        ("no-leukemia-suspected", 2),
        ("leukemia-suspected", 1),
    ]
    assert by_day[date(2026, 5, 13)].total == 1 and by_day[date(2026, 5, 12)].total == 1
    assert c.total == 5 and dict(c.legend)["retake"] == 1
    # stacked bottom up on the baseline, heights proportional to the counts
    segs = by_day[date(2026, 5, 10)].segments
    assert segs[0].y + segs[0].height == pytest.approx(c.baseline, abs=0.2)
    assert segs[1].y + segs[1].height == pytest.approx(segs[0].y, abs=0.2)
    assert segs[0].height == pytest.approx(2 * segs[1].height, abs=0.3)
    assert c.grid[-1].label == "3"  # the axis ends at the busiest day
    # bars left to right in date order, inside the drawing
    xs = [d.centre for d in c.days]
    assert xs == sorted(xs) and c.left < xs[0] and xs[-1] < c.right
    assert "5 results" in c.text and "2 no leukemia suspected" in c.text
    assert (
        by_day[date(2026, 5, 10)].text
        == "Sun 10 May: 2 no leukemia suspected, 1 leukemia suspected"
    )


def test_an_empty_history_chart_says_so():
    c = charts.history_chart([], date(2026, 5, 13), UTC)
    assert c.total == 0 and all(not d.segments for d in c.days) and c.text.startswith("0 results")
    assert c.days[-1].label  # the newest day is always labelled


@pytest.mark.parametrize(
    ("n", "top"), [(0, 1), (1, 1), (3, 3), (5, 6), (9, 10), (37, 40), (180, 200)]
)
def test_the_axis_ends_at_a_round_number(n, top):
    end, step = charts.nice_top(n)
    assert end == top and end % step == 0 and end // step <= 5


def test_score_chart_bins_scores_and_marks_the_thresholds():
    scores = [0.01, 0.02, 0.30, 0.51, 0.52, 0.53, 0.99, 1.0, float("nan"), 2.0, -1.0]
    c = charts.score_chart(scores, 0.3, 0.8, n_bins=10)
    assert c.n == 8
    assert [b.count for b in c.bins] == [2, 0, 0, 1, 0, 3, 0, 0, 0, 2]
    assert [b.zone for b in c.bins][:2] == ["no", "no"] and c.bins[-1].zone == "refer"
    tallest = max(c.bins, key=lambda b: b.count)
    assert tallest.y == pytest.approx(c.top_y, abs=0.2)  # the tallest bar reaches the top
    assert c.bins[0].height == pytest.approx(tallest.height * 2 / 3, abs=0.3)
    xs = [t.x for t in c.thresholds]
    assert xs == [pytest.approx(c.left + 0.3 * (c.right - c.left), abs=0.1),
                  pytest.approx(c.left + 0.8 * (c.right - c.left), abs=0.1)]  # fmt: skip
    assert [t.label for t in c.thresholds] == ["no leukemia <30%", "refer ≥80%"]
    assert [t.anchor for t in c.thresholds] == ["end", "start"]  # each on its own side
    near_edges = charts.score_chart([], 0.02, 0.99)
    assert [t.anchor for t in near_edges.thresholds] == ["start", "end"]  # kept inside
    assert "2 below the low threshold 30%, 4 between, 2 at or above" in c.text


def test_the_history_page_draws_both_charts_accessibly(client, source):
    now = datetime.now(UTC)
    for outcome, p in [
        ("no-leukemia-suspected", 0.1),
        ("leukemia-suspected", 0.9),
        ("retake", None),
    ]:
        source.add_record(outcome, p=p, created=now)
    source.add_record("indeterminate", p=0.5, created=now - timedelta(days=40))  # too old
    html = page(client, "/history")
    drawn = {}
    for chart_id in ("history-chart", "score-chart"):
        m = re.search(rf'<svg class="chart" id="{chart_id}".*?</svg>', html, re.S)
        assert m, chart_id
        svg = ET.fromstring(m.group(0))
        assert svg.get("role") == "img" and svg.findtext(f"{SVG}title")
        assert svg.findtext(f"{SVG}desc")
        drawn[chart_id] = svg
    hist = drawn["history-chart"]
    counts = {r.get("class"): int(r.get("data-count") or 0) for r in hist.iter(f"{SVG}rect")}
    assert counts == {"s-no-leukemia-suspected": 1, "s-leukemia-suspected": 1, "s-retake": 1}
    score = drawn["score-chart"]
    bins = [int(r.get("data-count") or 0) for r in score.iter(f"{SVG}rect") if r.get("data-count")]
    assert sum(bins) == 2  # the judged photos of the window
    labels = [
        t.text for t in score.iter(f"{SVG}text") if "threshold-label" in (t.get("class") or "")
    ]
    assert labels == ["no leukemia <40%", "refer ≥60%"]  # the fake model's thresholds


# --- the rig's calibration on the health page ---------------------------------------------------


def test_the_health_page_shows_the_rigs_calibration(client, source, monkeypatch, tmp_path):
    html = page(client, "/health")
    scale = re.search(r'id="calibration-scale">(.*?)</td>', html, re.S)
    assert scale and "2.000 px/µm (calibrated, spread 0.040)" in scale.group(1)
    assert "15% off it is a retake" in scale.group(1)
    assert "none: vignetting" in html
    health = source.health()
    monkeypatch.setattr(
        source,
        "health",
        lambda: dict(
            health, calibration=calibration(CameraConfig("replay", blank_field=tmp_path / "b.png"))
        ),
    )
    html = page(client, "/health")
    assert "not calibrated: measured from each photo" in html
    assert "configured but missing" in html  # a blank field named in the config but not there
    (tmp_path / "b.png").write_bytes(b"png")
    assert "present (" in page(client, "/health")
