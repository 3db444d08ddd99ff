"""The `leukoscope` command as a technician at the bench uses it: one way to give the
config, a line per capture and for the state, retake reasons in words, no runtime noise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from leukoscope.analysis.reasons import RETAKE_REASONS
from leukoscope.cli.appliance import result_line
from leukoscope.cli.main import build_parser, main
from leukoscope.config import bundled_config
from leukoscope.core.synthetic import write_demo_images
from tests.conftest import SHIPPED_BUNDLE
from tests.daemon_helpers import REPO, DaemonProcess, daemon_config

LAPTOP = bundled_config("laptop")


def test_help_is_about_the_commands_there_are(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "(later)" not in top and "run the appliance daemon" in top
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    helps = {c.dest: c.help for c in sub._choices_actions}  # type: ignore[attr-defined]
    assert set(helps) == set(sub.choices)  # type: ignore[arg-type]
    assert all(h and len(h) > 15 for h in helps.values()), helps


@pytest.fixture
def laptop_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root as `make run` leaves it: demo images, the shipped bundle in its place."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(SHIPPED_BUNDLE, tmp_path / "models" / "default")
    write_demo_images(tmp_path / ".run" / "demo-images")
    return tmp_path


def test_the_laptop_config_works_with_the_model_commands(
    laptop_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make run`'s config, unedited: install the shipped bundle (as `make run` does), then
    list it with --config before the subcommand, after it, and between."""
    cfg = str(LAPTOP)
    assert main(["model", "install", "--activate", "models/default", "--config", cfg]) == 0
    capsys.readouterr()
    for argv in (
        ["--config", cfg, "model", "list", "--json"],
        ["model", "--config", cfg, "list", "--json"],
        ["model", "list", "--json", "--config", cfg],
    ):
        assert main(argv) == 0, argv
        listing = json.loads(capsys.readouterr().out)
        assert listing["store"] == str(laptop_root / ".run" / "state" / "models")
        assert listing["active"].startswith("cells-thanh-1.1.0-")
    assert main(["model", "verify", "--config", cfg]) == 0
    assert main(["check-config", "--config", cfg]) == 0
    assert "ok (camera replay" in capsys.readouterr().out


def test_a_config_after_the_subcommand_wins_over_one_before(
    laptop_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = laptop_root / "missing.toml"
    assert main(["--config", str(missing), "check-config", "--config", str(LAPTOP)]) == 1
    err = capsys.readouterr().err
    assert "missing.toml" not in err  # the laptop config was checked: its store is empty
    assert "paths.bundle" in err


@pytest.fixture(scope="module")
def demo_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """The real daemon over the five demo fields with the shipped bundle."""
    tmp = tmp_path_factory.mktemp("bench")
    write_demo_images(tmp / "replay")
    proc = DaemonProcess(daemon_config(tmp, SHIPPED_BUNDLE, tmp / "replay"))
    try:
        proc.wait_phase("ready", timeout=60)
        yield proc
    finally:
        proc.stop()


@pytest.mark.slow
def test_capture_and_status_print_one_line_and_json_on_request(
    demo_daemon: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(demo_daemon.config)
    lines = []
    for _ in range(5):  # the replay camera takes the five demo fields in turn
        assert main(["capture", "--config", cfg]) == 0
        out = capsys.readouterr().out
        assert len(out.splitlines()) == 1, out
        lines.append(out.strip())
    said = "\n".join(lines)
    for words in (
        "no leukemia suspected (leukemia score 0.0",
        "indeterminate: take more fields or refer (leukemia score 0.",
        f"retake ({RETAKE_REASONS['out-of-focus']})",
        f"retake ({RETAKE_REASONS['too-dark']})",
        f"retake ({RETAKE_REASONS['no-white-cells']})",
    ):
        assert words in said, said
    assert all(" - record " in line for line in lines)
    assert main(["--config", cfg, "status"]) == 0
    status = capsys.readouterr().out.strip()
    assert status.startswith("ready; model cells-thanh 1.1.0; ") and "\n" not in status
    assert status.endswith(lines[-1])
    assert main(["capture", "--json", "--config", cfg]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["ok"] and reply["result"]["outcome"] == "no-leukemia-suspected"
    assert main(["status", "--json", "--config", cfg]) == 0
    assert (
        json.loads(capsys.readouterr().out)["state"]["last_result"]["id"] == (reply["result"]["id"])
    )


def test_classify_says_retakes_in_words_and_each_path_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    focus, dark = write_demo_images(tmp_path, 4)[2:4]
    missing = tmp_path / "gone.png"
    code = main(["classify", str(focus), str(dark), str(missing), "--bundle", str(SHIPPED_BUNDLE)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].startswith(f"{focus}: retake ({RETAKE_REASONS['out-of-focus']})")
    assert out[1].startswith(f"{dark}: retake ({RETAKE_REASONS['too-dark']})")
    assert out[2].count(str(missing)) == 1 and out[2].startswith(f"{missing}: error: ")


def test_classify_prints_no_runtime_info_line(tmp_path: Path) -> None:
    """LiteRT writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from C++."""
    (image,) = write_demo_images(tmp_path, 1)
    proc = subprocess.run(
        [sys.executable, "-m", "leukoscope.cli.main", "classify", str(image),
         "--bundle", str(SHIPPED_BUNDLE)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "no-leukemia-suspected" in proc.stdout
    assert "XNNPACK" not in proc.stderr and "INFO" not in proc.stderr, proc.stderr


def test_the_runtime_s_real_errors_still_reach_stderr() -> None:
    """Only the runtime's INFO notes are held back, not what it says when something fails."""
    code = (
        "import os\n"
        "from leukoscope.model.runtime import runtime_notes_silenced\n"
        "with runtime_notes_silenced():\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "    os.write(2, b'ERROR: Didn\\'t find op for builtin opcode\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "device")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "ERROR: Didn't find op for builtin opcode\nafter\n"


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["check-config"],
        ["capture"],
        ["status"],
        ["set-password"],
        ["export", "--out", "x"],
        ["model", "list"],
        ["model", "install", "b"],
        ["model", "verify"],
        ["model", "rollback"],
        ["sample", "show", "S-1"],
        ["calibrate", "blank", "p.png"],
        ["calibrate", "smear", "p.png"],
    ],
)
def test_every_command_takes_the_config_before_or_after_its_name(command: list[str]) -> None:
    parser = build_parser()
    cfg = Path("/etc/x.toml")
    before = parser.parse_args(["--config", str(cfg), *command])
    after = parser.parse_args([*command, "--config", str(cfg)])
    assert before.config == after.config == cfg
    assert parser.parse_args(command).config is None  # the default: $LEUKOSCOPE_CONFIG, ...


def test_a_refer_result_is_one_line_in_capitals() -> None:
    """No demo field reaches "leukemia suspected" with the shipped bundle: its line, here."""
    line = result_line(
        {
            "outcome": "leukemia-suspected",
            "id": 7,
            "p_leukemia": 0.968,
            "cells": {"n_found": 9, "n_blasts": 8},
            "created_at": "2026-12-03T11:56:28Z",
        }
    )
    assert line.startswith(
        "LEUKEMIA SUSPECTED: refer (leukemia score 0.968; 9 white cells, 8 blasts)"
    )
    assert " - record 7, 2026-12-03 " in line and "\n" not in line
