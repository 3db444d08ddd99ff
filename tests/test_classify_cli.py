"""`leukoscope classify`: good files classified, bad files named, exit status says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from leukoscope.cli.main import main
from leukoscope.core.synthetic import make_smear

VERDICTS = {"leukemia-suspected", "no-leukemia-suspected", "indeterminate", "retake"}


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, blasts in enumerate([0, 3]):
        img = make_smear(640, 480, n_blasts=blasts, seed=20 + i).image
        cv2.imwrite(str(folder / f"good{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    jpg = make_smear(800, 600, seed=9).image
    cv2.imwrite(str(folder / "good2.jpg"), cv2.cvtColor(jpg, cv2.COLOR_RGB2BGR))
    (folder / "broken.jpg").write_bytes((folder / "good2.jpg").read_bytes()[:300])
    (folder / "empty.png").write_bytes(b"")
    (folder / "readme.txt").write_text("not an image, and not picked up from a folder")
    return folder


def test_json_lines_for_a_mix_of_good_and_bad_files(
    session_bundle: Path, mixed_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["classify", str(mixed_folder), "--bundle", str(session_bundle), "--json"])
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert "2 of 5 file(s) could not be classified" in err
    by_name = {Path(r["file"]).name: r for r in rows}
    assert set(by_name) == {"good0.png", "good1.png", "good2.jpg", "broken.jpg", "empty.png"}
    for name in ("good0.png", "good1.png", "good2.jpg"):
        row = by_name[name]
        assert row["verdict"] in VERDICTS
        assert 0.0 <= row["p_leukemia"] <= 1.0
        assert row["model"] == json.loads((session_bundle / "manifest.json").read_text())["name"]
        assert row["ms"] > 0
    assert "corrupt" in by_name["broken.jpg"]["error"]
    assert "empty file" in by_name["empty.png"]["error"]


def test_text_output_names_verdict_score_model_and_time(
    session_bundle: Path, mixed_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["classify", str(mixed_folder / "good0.png"), "--bundle", str(session_bundle)])
    out = capsys.readouterr().out
    assert code == 0
    assert "good0.png: " in out and "leukemia score " in out and " ms]" in out
    assert "p_leukemia" not in out  # not a calibrated probability: named and explained
    assert out.splitlines()[-1].startswith("leukemia score: the model's 0-1 output, not a probab")


def test_bad_bundle_is_a_clear_error(tmp_path: Path, mixed_folder: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "leukoscope.cli.main",
            "classify",
            str(mixed_folder),
            "--bundle",
            str(tmp_path / "nowhere"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "not a bundle directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_newline_in_a_file_name_does_not_split_its_line(
    session_bundle: Path, mixed_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = mixed_folder / "good\n0.png"
    odd.write_bytes((mixed_folder / "good0.png").read_bytes())
    broken = mixed_folder / "broken\r\n.jpg"
    broken.write_bytes(b"not a jpeg")
    code = main(["classify", str(odd), str(broken), "--bundle", str(session_bundle)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1 and len(lines) == 3 and lines[2].startswith("leukemia score: ")
    assert lines[0].startswith(f"{mixed_folder}/good\\n0.png: ") and "leukemia score" in lines[0]
    assert lines[1].startswith(f"{mixed_folder}/broken\\r\\n.jpg: error: ")
