"""The config: one TOML file, validated once; errors name the key path and the value."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from leukoscope.cli.appliance import cmd_check_config
from leukoscope.cli.main import main
from leukoscope.config import bundled_config, load_config, parse_config
from leukoscope.core.errors import ConfigError
from leukoscope.core.synthetic import write_demo_images
from tests.conftest import SHIPPED_BUNDLE
from tests.helpers import refusal_of_a_pipe

MINIMAL: dict[str, dict[str, Any]] = {
    "paths": {"state_dir": "/var/lib/x", "bundle": "/b"},
    "camera": {"backend": "replay", "replay": {"folder": "/imgs"}},
    "gpio": {"pin_factory": "mock"},
}


def with_(**changes: dict) -> dict:
    raw: dict[str, Any] = {k: dict(v) for k, v in MINIMAL.items()}
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    return raw


def test_minimal_config_gets_documented_defaults() -> None:
    cfg = parse_config(with_())
    assert cfg.paths.images_dir == Path("/var/lib/x/images")
    assert cfg.paths.database == Path("/var/lib/x/records.sqlite3")
    assert cfg.paths.control_socket == Path("/var/lib/x/control.sock")
    assert (cfg.gpio.button, cfg.gpio.led_green, cfg.gpio.led_amber) == (17, 22, 23)
    assert (cfg.gpio.led_red, cfg.gpio.buzzer) == (24, 27)
    assert cfg.quality_enabled and cfg.quality.min_focus > 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"camera": {"colour": "red"}}, "unknown key(s) camera.colour"),
        ({"extra": {}}, "unknown key(s) extra"),
        ({"camera": {"backend": "webcam"}}, "camera.backend: must be one of"),
        ({"camera": {"capture_timeout_s": -1}}, "camera.capture_timeout_s"),
        ({"gpio": {"button": 40}}, "gpio.button: must be an integer in 0..27, got 40"),
        ({"gpio": {"led_red": 17}}, "two functions share a pin"),
        ({"gpio": {"pin_factory": "pigpio"}}, "gpio.pin_factory: must be one of"),
        ({"quality": {"min_focus": "high"}}, "quality.min_focus: must be a number"),
        ({"quality": {"min_stain": 3}}, "quality.min_stain: is a fraction"),
        ({"retention": {"min_free_mb": True}}, "retention.min_free_mb"),
        ({"daemon": {"log_level": "loud"}}, "daemon.log_level"),
        ({"camera": {"opencv": {"device": 1.5}}}, "camera.opencv.device"),
        ({"camera": {"replay": {"exposure": 3}}}, "camera.replay.exposure"),
        ({"camera": {"px_per_um": "5.9"}}, "camera.px_per_um: must be a number in 0.1..100.0"),
        ({"camera": {"px_per_um": 0}}, "camera.px_per_um: must be a number"),
        ({"camera": {"px_per_um": float("nan")}}, "camera.px_per_um: must be a number"),
        ({"camera": {"px_per_um": float("inf")}}, "camera.px_per_um: must be a number"),
        ({"camera": {"px_per_um": True}}, "camera.px_per_um: must be a number"),
        ({"camera": {"px_per_um": 500}}, "camera.px_per_um: must be a number"),
    ],
)
def test_bad_values_are_refused_naming_the_key(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(with_(**changes), "cfg.toml")
    assert message in str(err.value)
    assert str(err.value).startswith("cfg.toml: ")


def test_a_calibrated_scale_is_optional() -> None:
    assert parse_config(with_()).camera.px_per_um is None  # measured from every photo
    assert parse_config(with_(camera={"px_per_um": 5.87})).camera.px_per_um == 5.87
    assert parse_config(with_(camera={"px_per_um": 6})).camera.px_per_um == 6.0


def test_camera_backend_is_required_never_defaulted() -> None:
    raw = with_()
    del raw["camera"]["backend"]
    with pytest.raises(ConfigError, match="camera.backend: is required"):
        parse_config(raw)


def test_replay_backend_needs_its_folder() -> None:
    raw = with_()
    raw["camera"] = {"backend": "replay"}
    with pytest.raises(ConfigError, match=r"camera.replay.folder: is required"):
        parse_config(raw)


def test_shipped_configs_are_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    laptop = load_config(bundled_config("laptop"))
    assert laptop.camera.backend == "replay" and laptop.gpio.pin_factory == "mock"
    assert laptop.paths.state_dir == tmp_path / ".run" / "state"
    pi = load_config(bundled_config("pi"))
    assert pi.camera.backend == "picamera2" and pi.gpio.pin_factory == "lgpio"
    assert pi.paths.bundle == Path("/var/lib/leukoscope/models/active")


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[camera\nbackend = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "none.toml")


def test_a_pipe_is_refused_not_read_forever(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    errors = refusal_of_a_pipe(load_config, fifo)
    assert errors == [f"{fifo}: not a regular file (a pipe, socket or device)"]


def test_check_config_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    monkeypatch.chdir(tmp_path)  # the laptop config's paths are relative: .run/...
    write_demo_images(tmp_path / ".run" / "demo-images", 1)
    shutil.copytree(SHIPPED_BUNDLE, tmp_path / ".run" / "state" / "models" / "active")
    good = tmp_path / "good.toml"
    good.write_text(bundled_config("laptop").read_text())
    assert cmd_check_config(argparse.Namespace(file=good, config=None)) == 0
    assert "ok (camera replay" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace('backend = "replay"', 'backend = "usb"'))
    assert cmd_check_config(argparse.Namespace(file=None, config=bad)) == 1
    assert "camera.backend: must be one of picamera2, opencv, replay, got 'usb'" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["check-config", "{cfg}"],
        ["check-config", "--config", "{cfg}"],
        ["--config", "{cfg}", "check-config"],
    ],
)
def test_check_config_takes_the_config_as_every_command_does(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(bundled_config("laptop").read_text().replace("[camera.replay]\n", "[x]\n"))
    assert main([a.format(cfg=cfg) for a in argv]) == 1
    assert "unknown" in capsys.readouterr().err


def test_check_config_says_which_paths_cannot_be_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid file is not enough: the replay folder, the state folder and the bundle the
    daemon would fail on at start are each named, and the exit status is 1."""
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        bundled_config("laptop")
        .read_text()
        .replace('state_dir = ".run/state"', f'state_dir = "{blocker}/state"')
        .replace('folder = ".run/demo-images"', 'folder = "no-such-folder"')
        .replace('bundle = ".run/state/models/active"', f'bundle = "{tmp_path / "nothing"}"')
    )
    assert main(["check-config", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "paths.state_dir: " in err and "cannot be created" in err
    assert f"camera.replay.folder: {tmp_path / 'no-such-folder'} is not a folder" in err
    assert f"paths.bundle: {tmp_path / 'nothing'} cannot be loaded: not a bundle" in err
    (tmp_path / "no-such-folder").mkdir()
    assert main(["check-config", "--config", str(cfg)]) == 1
    assert "holds no images" in capsys.readouterr().err


def test_run_refuses_a_bad_config_with_exit_78(tmp_path: Path) -> None:
    """systemd must not restart a daemon whose config is wrong (RestartPreventExitStatus=78)."""
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    text = bundled_config("laptop").read_text()
    cfg.write_text(text.replace("[camera.replay]\n", "[camera.replay]\nfps = 3\n"))
    proc = subprocess.run(
        [sys.executable, "-m", "leukoscope.cli.main", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert "unknown key(s) camera.replay.fps" in proc.stderr


def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="file too large"):
        load_config(path)


def test_the_sample_rule_comes_from_the_bundle_unless_the_config_overrides_it() -> None:
    cfg = parse_config(with_())
    assert cfg.sample.threshold is None and cfg.sample.min_cells is None
    assert cfg.sample.max_overlap == 0.2 and cfg.sample.long_press_s == 2.0
    cfg = parse_config(with_(sample={"threshold": 0.2, "min_cells": 200, "max_fields": 40}))
    assert (cfg.sample.threshold, cfg.sample.min_cells, cfg.sample.max_fields) == (0.2, 200, 40)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"threshold": 1.5}, "sample.threshold"),
        ({"min_cells": 0}, "sample.min_cells"),
        ({"min_cells": 500, "max_cells": 100}, "sample.min_cells: exceeds sample.max_cells"),
        ({"long_press_s": 0.1}, "sample.long_press_s"),
        ({"per_patient": True}, "unknown key(s) sample.per_patient"),
    ],
)
def test_bad_sample_settings_are_refused_naming_the_key(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(with_(sample=values))
