"""Bad command-line input: a usage error or one `error:` line naming the problem, never a
traceback, and nothing written."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from leukoscope.cli.main import main


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "x.png", "--threads", "0"],
        ["classify", "x.png", "--threads", "-3"],
        ["classify", "x.png", "--threads", "100000"],  # crashed the interpreter at exit
        ["classify", "x.png", "--threads", "two"],
        ["bench", "--runs", "0"],
        ["bench-cells", "--runs", "-1"],
        ["demo-images", "out", "--count", "0"],
        ["bench-daemon", "--captures", "0"],
        ["bench-web", "--clients", "0"],
        ["capture", "--timeout", "-5"],  # the daemon captured, the client reported a failure
        ["capture", "--timeout", "nan"],
    ],
)
def test_out_of_range_numbers_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {argv[-2]}: " in err and "Traceback" not in err


@pytest.mark.parametrize("where", ["a-file", "a-file/sub"])
def test_demo_images_into_a_file_path_is_one_error_line(
    tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("keep me")
    assert main(["demo-images", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert str(tmp_path / "a-file") in err
    assert (tmp_path / "a-file").read_text() == "keep me"


def test_bench_cells_names_a_bad_photo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"")
    assert main(["bench-cells", "--image", str(photo), "--runs", "1"]) == 2
    assert capsys.readouterr().err == f"error: {photo}: empty file (0 bytes)\n"


def test_bench_with_an_unusable_report_path_fails_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("keep me")
    report = tmp_path / "a-file" / "report.md"
    assert main(["bench", "--runs", "1", "--report", str(report)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: {tmp_path / 'a-file'}: File exists\n"


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[paths]\nstate_dir = "{tmp_path / "state"}"\nbundle = "{tmp_path / "b"}"\n'
        f'[camera]\nbackend = "replay"\n[camera.replay]\nfolder = "{tmp_path}"\n'
        '[gpio]\npin_factory = "mock"\n'
    )
    return cfg


def test_set_password_without_input_is_an_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_input(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("getpass.getpass", no_input)
    assert main(["set-password", "--config", str(_config(tmp_path))]) == 1
    assert "no password given" in capsys.readouterr().err
    assert not (tmp_path / "state" / "web-password").exists()


def test_set_password_that_is_not_utf8_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = io.TextIOWrapper(io.BytesIO(b"\xff\xfe-not-utf8-at-all\n"), errors="surrogateescape")
    monkeypatch.setattr("sys.stdin", raw)
    assert main(["set-password", "--config", str(_config(tmp_path)), "--stdin"]) == 1
    assert "not valid UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "state" / "web-password").exists()
