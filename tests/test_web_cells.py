"""Per-cell results on the status page and API: the detail's overlay, counts, listings, escaping."""

from __future__ import annotations

import csv
import io
import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from leukoscope.web.fake import FakeSource, fake_cells
from leukoscope.web.overlay import cell_view
from leukoscope.web.reasons import RETAKE_REASONS
from tests.test_web_api import login, wait_until

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def source(tmp_path: Path) -> FakeSource:
    return FakeSource(tmp_path / "images")


def report(cells: list[dict[str, Any]], size: tuple[int, int] = (640, 480), **kw: Any) -> dict:
    """A CellReport-shaped result, as `Analysis.cells.to_json()` gives it."""
    n_blasts = sum(1 for c in cells if isinstance(c, dict) and c.get("blast") is True)
    out = {
        "px_per_um": 5.87,
        "scale_source": "red-cells",
        "image_size": list(size),
        "n_found": len(cells),
        "n_classified": len(cells),
        "n_blasts": n_blasts,
        "top_k_mean": 0.61,
        "density": 1.12,
        "blast_fraction": 0.29,
        "score": 0.65,
        "cell_cut": 0.5,
        "cells": cells,
    }
    out.update(kw)
    return out


def cell(box: list[Any], p: Any, blast: Any = None, **kw: Any) -> dict[str, Any]:
    c = {
        "x": 0.0,  # the centre is not what the overlay draws
        "y": 0.0,
        "box": box,
        "p_blast": p,
        "blast": (p >= 0.5) if blast is None else blast,
        "clump": False,
    }
    c.update(kw)
    return c


THREE = [
    cell([301, 88, 341, 128], 0.93),
    cell([10, 20, 50, 60], 0.12),
    cell([600, 440, 640, 480], 0.55, clump=True),
]


def overlay(page: str) -> ET.Element | None:
    """The page's cell overlay, parsed as SVG (None when the page has none)."""
    m = re.search(r'<svg class="cell-overlay".*?</svg>', page, re.S)
    return None if m is None else ET.fromstring(m.group(0))


def drawn(svg: ET.Element) -> list[tuple[str, tuple[float, ...], str]]:
    """(class, (x, y, width, height), tooltip) of every box in the overlay."""
    out = []
    for g in svg.iter(f"{SVG}g"):
        rects = g.findall(f"{SVG}rect")
        assert len(rects) == 1
        r = rects[0]
        xywh = tuple(float(r.get(k) or "nan") for k in ("x", "y", "width", "height"))
        out.append((g.get("class") or "", xywh, g.findtext(f"{SVG}title") or ""))
    return out


def detail(client: FlaskClient, rid: int) -> str:
    resp = client.get(f"/results/{rid}")
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


class Tags(HTMLParser):
    """Every start tag of a page, with its attributes (as a browser would parse them)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def text_of(page: str, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert m, f"no #{element_id}"
    return m.group(1).strip()


# --- the overlay ------------------------------------------------------------------------------


def test_detail_draws_one_box_per_cell_where_it_is_and_of_its_class(client, source):
    rec = source.add_record("leukemia-suspected", p=0.65, cells=report(THREE))
    page = detail(client, rec.id)
    svg = overlay(page)
    assert svg is not None
    assert svg.get("viewBox") == "0 0 640 480"  # the photo's pixels: scales with the image
    assert svg.get("preserveAspectRatio") == "none"
    boxes = drawn(svg)
    assert len(boxes) == 3
    by_place = {xywh: (cls, tip) for cls, xywh, tip in boxes}
    assert by_place[(301.0, 88.0, 40.0, 40.0)] == ("cell c-blast", "blast 93 %")
    assert by_place[(10.0, 20.0, 40.0, 40.0)] == ("cell c-other", "not a blast 12 %")
    assert by_place[(600.0, 440.0, 40.0, 40.0)] == ("cell c-blast c-clump", "blast 55 % (clump)")
    # the overlay sits on the photo, in one figure
    figure = page[page.index('<figure class="overlay"') : page.index("</figure>")]
    assert 'id="detail-image"' in figure and 'id="cell-overlay"' in figure
    assert f'src="/api/results/{rec.id}/image"' in figure


def test_detail_shows_the_counts_and_the_slide_score(client, source):
    rec = source.add_record("leukemia-suspected", p=0.65, cells=report(THREE, n_found=5))
    page = detail(client, rec.id)
    assert text_of(page, "cells-found") == "5"
    assert text_of(page, "cells-classified") == "3"
    assert text_of(page, "cells-blasts") == "2"
    assert text_of(page, "cells-score") == "65.0 %"
    assert "5.87 px/µm (measured from the red cells)" in page


def test_a_whole_field_record_has_no_overlay_and_no_counts(client, source):
    rec = source.add_record("leukemia-suspected", p=0.7)
    page = detail(client, rec.id)
    assert overlay(page) is None and 'id="cell-counts"' not in page
    assert 'id="detail-image"' in page  # the photo itself is still shown


def test_a_deleted_photo_keeps_the_counts_and_says_why_no_boxes(client, source):
    rec = source.add_record("leukemia-suspected", p=0.65, cells=report(THREE), image_deleted=True)
    page = detail(client, rec.id)
    assert overlay(page) is None and 'id="detail-image"' not in page
    assert text_of(page, "cells-found") == "3" and text_of(page, "cells-blasts") == "2"
    note = text_of(page, "no-photo")
    assert "deleted by retention" in note and "cannot be drawn without the photo" in note
    assert client.get(f"/api/results/{rec.id}").get_json()["cells"]["n_found"] == 3


def test_boxes_outside_the_photo_or_with_bad_numbers_are_clipped_or_dropped(client, source):
    cells = [
        cell([620, 470, 660, 500], 0.9),  # partly outside: clipped to the photo
        cell([-30, -30, 10, 10], 0.2),  # partly outside at the origin: clipped
        cell([700, 10, 740, 50], 0.9),  # wholly outside: dropped
        cell([10, 10, float("nan"), 50], 0.9),  # NaN: dropped
        cell([10, 10, "50", 50], 0.9),  # a string: dropped
        cell([10, 10, 50], 0.9),  # three numbers: dropped
        cell([100, 100, 140, 140], 1.7, blast=True),  # not a probability: dropped
        cell([100, 100, 140, 140], float("inf"), blast=True),  # dropped
        cell([200, 200, 240, 240], None, blast="yes"),  # no class: drawn as unclassified
        "not a cell",  # dropped
    ]
    rec = source.add_record("leukemia-suspected", cells=report(cells))  # type: ignore[arg-type]
    page = detail(client, rec.id)
    boxes = drawn(overlay(page))  # type: ignore[arg-type]
    assert [(cls, xywh) for cls, xywh, _ in boxes] == [
        ("cell c-blast", (620.0, 470.0, 20.0, 10.0)),
        ("cell c-other", (0.0, 0.0, 10.0, 10.0)),
        ("cell c-unclassified", (200.0, 200.0, 40.0, 40.0)),
    ]
    for _, (x, y, w, h), _ in boxes:
        assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480
    assert "7 cell(s) with unusable positions or probabilities are not drawn" in page
    svg_text = ET.tostring(overlay(page)).decode()  # type: ignore[arg-type]
    assert "nan" not in svg_text.lower() and "inf" not in svg_text.lower()


@pytest.mark.parametrize(
    "size", [[0, 480], [640], ["640", 480], [640.5, 480], [10**9, 480], None, [True, 480]]
)
def test_an_unusable_image_size_draws_nothing_but_keeps_the_counts(client, source, size):
    rec = source.add_record("leukemia-suspected", cells=report(THREE, image_size=size))
    page = detail(client, rec.id)
    assert overlay(page) is None
    assert text_of(page, "cells-found") == "3"
    assert "no usable photo size" in text_of(page, "cells-no-size")


def test_nothing_from_a_record_can_inject_markup(client, source):
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    cells = [cell([10, 20, 50, 60], 0.9, blast=evil), cell([60, 20, 100, 60], 0.1)]
    cells[1]["box"] = [60, 20, 100, '60"><script>alert(3)</script>']
    rec = source.add_record(
        "retake",
        sample_id=evil,
        cells=report(cells, scale_source=evil, n_found=evil, score=evil, image_size=[640, 480]),
        retake_reasons=[evil, "no-white-cells"],
        error=evil,
    )
    for path in (f"/results/{rec.id}", "/", "/history"):
        page = client.get(path).get_data(as_text=True)
        tags = Tags(page).tags
        scripts = [a.get("src") for t, a in tags if t == "script"]
        assert scripts == ["/static/app.js"], path
        assert not [(t, a) for t, a in tags if any(k.startswith("on") for k in a)], path
        assert not [a for t, a in tags if t == "img" and a.get("src") == "x"], path
    page = detail(client, rec.id)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    boxes = drawn(overlay(page))  # type: ignore[arg-type]
    assert [cls for cls, _, _ in boxes] == ["cell c-unclassified"]  # a class that is not one
    assert text_of(page, "cells-found") == "–"  # a count that is not one


# --- retake reasons in words ------------------------------------------------------------------


@pytest.mark.parametrize("code", ["no-white-cells", "no-scale", "out-of-focus"])
def test_retake_reasons_are_said_in_words(client, source, code):
    rec = source.add_record("retake", retake_reasons=[code], cells=report([]))
    words = RETAKE_REASONS[code]
    assert words != code
    assert words in text_of(detail(client, rec.id), "detail-reasons")
    status_page = client.get("/").get_data(as_text=True)
    assert words in status_page
    last = client.get("/api/status").get_json()["last_result"]
    assert last["retake_messages"] == [words] and last["retake_reasons"] == [code]


# --- API, listings and the export -------------------------------------------------------------


def test_detail_api_carries_the_whole_cell_result(client, source):
    rep = report(THREE)
    rec = source.add_record("leukemia-suspected", p=0.65, cells=rep)
    body = client.get(f"/api/results/{rec.id}").get_json()
    assert body["cells"] == rep
    assert body["cell_counts"] == {"n_found": 3, "n_classified": 3, "n_blasts": 2, "score": 0.65}
    whole = source.add_record("no-leukemia-suspected", p=0.1)
    body = client.get(f"/api/results/{whole.id}").get_json()
    assert body["cells"] is None and body["cell_counts"] is None


def test_listings_and_status_carry_counts_not_every_box(client, source):
    source.add_record("no-leukemia-suspected", p=0.1)
    source.add_record("leukemia-suspected", p=0.65, cells=report(THREE))
    items = client.get("/api/results").get_json()["items"]
    assert [i["cell_counts"] for i in items] == [
        {"n_found": 3, "n_classified": 3, "n_blasts": 2, "score": 0.65},
        None,
    ]
    assert all("cells" not in i for i in items)
    last = client.get("/api/status").get_json()["last_result"]
    assert "cells" not in last and last["cell_counts"]["n_blasts"] == 2
    status_page = client.get("/").get_data(as_text=True)
    assert text_of(status_page, "last-cells-found") == "3"
    assert text_of(status_page, "last-cells-blasts") == "2"
    history = client.get("/history").get_data(as_text=True)
    rows = re.findall(r'<td class="cells-count">(.*?)</td>', history, re.S)
    assert [re.sub(r"<[^>]+>", "", r) for r in rows] == ["3, 2 blasts", "–"]


def test_csv_export_has_the_cell_counts(client, source):
    source.add_record("no-leukemia-suspected", p=0.1)
    source.add_record("leukemia-suspected", p=0.65, cells=report(THREE, n_found=4))
    login(client)
    rows = list(csv.DictReader(io.StringIO(client.get("/api/export.csv").get_data(as_text=True))))
    assert [(r["n_found"], r["n_classified"], r["n_blasts"]) for r in rows] == [
        ("4", "3", "2"),
        ("", "", ""),
    ]
    assert "cells" not in rows[0]


# --- the fake appliance in cells mode -----------------------------------------------------------


def test_fake_cells_box_every_white_cell_drawn_in_its_photo():
    from leukoscope.web.fake import _smear

    for seed in range(4):
        rep = fake_cells(seed)
        white = [c for c in _smear(seed).cells if c.kind in ("wbc", "blast")]
        assert rep["n_found"] == len(white) == len(rep["cells"]) > 0
        for drawn_cell, c in zip(rep["cells"], white, strict=True):
            x0, y0, x1, y1 = drawn_cell["box"]
            assert x0 <= c.x <= x1 and y0 <= c.y <= y1
            assert drawn_cell["blast"] == (c.kind == "blast")
        view = cell_view(rep)
        assert view is not None and len(view.boxes) == len(white) and view.not_drawn == 0


def test_fake_captures_in_cells_mode_give_cell_results(client, tmp_path: Path):
    fake = FakeSource(tmp_path / "cells-images", capture_s=0.0, cells_mode=True)
    for _ in range(3):
        fake.request_capture(None)
        wait_until(lambda: fake.phase == "ready")
    first, second, third = (fake.get_result(i) for i in (1, 2, 3))
    assert first and second and third and first.cells and second.cells and third.cells
    assert first.cells["n_found"] > 0 and first.outcome == "no-leukemia-suspected"
    assert third.outcome == "retake" and third.retake_reasons == ["no-white-cells"]
    assert third.cells["n_found"] == 0 and third.cells["cells"] == []
    assert not math.isnan(float(second.cells["score"]))
