"""`leukoscope-tools cells check-eval`: counting before and after the check, and its report.

A BCCD-like folder is drawn from synthetic smears (white cells boxed `WBC`, platelet-like
blobs boxed `Platelets`), so the counts the report gives are known in advance.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import cv2

from leukoscope.analysis.cell_check import DEFAULT_CHECK
from leukoscope.core.synthetic import make_smear
from leukoscope_tools.evaluate.detection import SECTION_END, SECTION_START, keep_section
from leukoscope_tools.evaluate.detector_check import (
    Tally,
    bccd,
    bccd_scale,
    format_section,
    write_section,
)
from tests.test_cell_check import PX_PER_UM, _free_spots, _paint


def _voc(boxes: list[tuple[str, float, float, float, float]]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{x0:.0f}</xmin><ymin>{y0:.0f}</ymin>"
        f"<xmax>{x1:.0f}</xmax><ymax>{y1:.0f}</ymax></bndbox></object>"
        for n, x0, y0, x1, y1 in boxes
    )
    return f"<annotation>{objs}</annotation>"


def _bccd_folder(root: Path) -> tuple[int, int]:
    """Two photos (numbers 0 and 1); returns (white cells, platelet blobs) per photo."""
    folder = root / "bccd-unlabelled"
    (folder / "annotations").mkdir(parents=True)
    for number, seed in ((0, 21), (1, 22)):
        smear = make_smear(640, 480, n_wbc=2, n_blasts=1, px_per_um=PX_PER_UM, seed=seed)
        spots = _free_spots(smear, 2, 5.0, on_rbc=False)
        img = _paint(smear, spots)
        boxes = [
            ("WBC", c.x - c.radius, c.y - c.radius, c.x + c.radius, c.y + c.radius)
            for c in smear.cells
            if c.kind != "rbc"
        ]
        boxes += [("Platelets", x - 12, y - 12, x + 12, y + 12) for x, y, _ in spots]
        boxes += [
            ("RBC", c.x - c.radius, c.y - c.radius, c.x + c.radius, c.y + c.radius)
            for c in smear.cells
            if c.kind == "rbc"
        ]
        name = f"BloodImage_{number:05d}"
        cv2.imwrite(str(folder / f"{name}.jpg"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 97])
        (folder / "annotations" / f"{name}.xml").write_text(_voc(boxes))
    return 3, 2


def test_bccd_counts_platelets_before_and_none_after(tmp_path: Path) -> None:
    n_white, n_spots = _bccd_folder(tmp_path)
    # The scale from the RBC boxes: their side is a red cell's 7.5 um.
    assert abs(bccd_scale(tmp_path / "bccd-unlabelled") - PX_PER_UM) < 0.15 * PX_PER_UM
    out = bccd(tmp_path, PX_PER_UM, DEFAULT_CHECK)
    for split in ("tune", "held-out"):
        t = out[split]
        assert t.photos == 1
        assert t.get("WBC boxes found") == (n_white, n_white)
        assert t.get("in Platelets boxes") == (n_spots, 0)
        before, after = t.get("detections")
        assert before - after == n_spots


def test_section_is_dated_and_replaced_not_repeated(tmp_path: Path) -> None:
    t = Tally(photos=2)
    t.add("all slides", 1, 1)
    t.add("healthy slides", 1, 1)
    t.add("blasts", 10, 10)
    t.add("blasts found", 10, 9)
    t.add("healthy detections", 4, 2)
    kag = Tally(photos=3)
    kag.add("detections", 30, 27)
    text = format_section(
        {"held-out": t},
        {},
        13.9,
        {"kaggle-all/pro": kag},
        DEFAULT_CHECK,
        "leukoscope-tools cells check-eval DATA",
        datetime.date(2026, 12, 3),
    )
    assert "## Detector check (2026-12-03)" in text
    assert "| held-out | 1 | 10 | 10 -> 9 | 100.0% -> 90.0% | 1 | 4.00 -> 2.00 |" in text
    assert "| kaggle-all/pro | 3 | 0 | 10.00 -> 9.00 | 30 -> 27 |" in text
    report = tmp_path / "cell-detection.md"
    report.write_text("# White-cell detection\n\nbody\n")
    write_section(report, text)
    write_section(report, text.replace("2026-12-03", "2026-12-04"))
    out = report.read_text()
    assert out.startswith("# White-cell detection\n\nbody\n")
    assert out.count(SECTION_START) == 1 and out.count(SECTION_END) == 1
    assert "2026-12-04" in out and "2026-12-03" not in out
    # `cells eval --report` rewrites the file and carries the section over.
    regenerated = keep_section(out, "# White-cell detection\n\nnew body\n")
    assert "new body" in regenerated and regenerated.count(SECTION_START) == 1
