"""The Pi's firmware and system settings: known keys only, a wiring table matching the config."""

from __future__ import annotations

import configparser
import dataclasses
import re
from pathlib import Path

import pytest

from leukoscope.config import GpioConfig, bundled_config, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware_config"


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# config.txt settings from the Raspberry Pi documentation ("config.txt" chapter:
# common options, boot, GPU memory, overclocking, video/HDMI, conditional filters).
KNOWN_CONFIG_KEYS = words(
    """
    arm_64bit arm_boost arm_freq auto_initramfs avoid_warnings boot_delay camera_auto_detect
    core_freq device_tree disable_camera_led disable_overscan disable_splash
    display_auto_detect dtdebug dtoverlay dtparam enable_uart force_turbo gpu_mem
    hdmi_force_hotplug hdmi_group hdmi_mode include initramfs kernel max_framebuffers os_prefix
    otg_mode over_voltage start_x usb_max_current_enable
    """
)
# Camera overlays in the firmware's overlays/README, and the parameters they share.
KNOWN_CAMERA_OVERLAYS = words(
    """
    ov5647 imx219 imx477 imx708 imx296 imx290 imx327 imx378 imx500 imx519 ov7251 ov9281 ov64a40
    arducam-pivariety
    """
)
KNOWN_OVERLAY_PARAMS = {"cam0", "rotation", "orientation", "media-controller", "vcm"}
KNOWN_FILTERS = words(
    """
    all none pi0 pi0w pi02 pi1 pi2 pi3 pi3+ pi4 pi400 pi5 pi500 cm1 cm3 cm3+ cm4 cm4s cm5
    tryboot
    """
)
# The modules the fragment must offer, one commented-out overlay line each.
MODULE_OVERLAYS = ("ov5647", "imx219", "imx477", "imx708")

# journald.conf(5), [Journal] section.
KNOWN_JOURNALD_KEYS = words(
    """
    Storage Compress Seal SplitMode SyncIntervalSec RateLimitIntervalSec RateLimitBurst
    SystemMaxUse SystemKeepFree SystemMaxFileSize SystemMaxFiles RuntimeMaxUse RuntimeKeepFree
    RuntimeMaxFileSize RuntimeMaxFiles MaxRetentionSec MaxFileSec ForwardToSyslog ForwardToKMsg
    ForwardToConsole ForwardToWall TTYPath MaxLevelStore MaxLevelSyslog MaxLevelKMsg
    MaxLevelConsole MaxLevelWall ReadKMsg Audit
    """
)

# BCM GPIO -> physical pin on the 40-pin header (Pi 4 and Pi 5 alike).
# fmt: off
HEADER_PIN = {
    2: 3, 3: 5, 4: 7, 5: 29, 6: 31, 7: 26, 8: 24, 9: 21, 10: 19, 11: 23, 12: 32, 13: 33, 14: 8,
    15: 10, 16: 36, 17: 11, 18: 12, 19: 35, 20: 38, 21: 40, 22: 15, 23: 16, 24: 18, 25: 22,
    26: 37, 27: 13,
}
# fmt: on


def config_txt_problems(text: str) -> list[str]:
    """Every setting, filter or overlay in a config.txt that the documentation does not know.

    Commented-out `#key=value` lines count too: they are choices a user is told to enable.
    """
    problems = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        candidate = line.lstrip("#").strip() if line.startswith("#") else line
        if not candidate:
            continue
        if line.startswith("#") and not re.fullmatch(r"[a-z_0-9]+=\S+", candidate):
            continue  # prose
        if candidate.startswith("["):
            if candidate.strip("[]") not in KNOWN_FILTERS:
                problems.append(f"line {lineno}: unknown filter {candidate}")
            continue
        if candidate.startswith("include "):
            continue
        key, sep, value = candidate.partition("=")
        if not sep or key not in KNOWN_CONFIG_KEYS:
            problems.append(f"line {lineno}: unknown setting {candidate!r}")
        elif key == "dtoverlay":
            name, *params = value.split(",")
            if name not in KNOWN_CAMERA_OVERLAYS:
                problems.append(f"line {lineno}: unknown overlay {name!r}")
            for param in params:
                if param.split("=")[0] not in KNOWN_OVERLAY_PARAMS:
                    problems.append(f"line {lineno}: unknown parameter {param!r} of {name}")
        elif key == "camera_auto_detect" and value not in ("0", "1"):
            problems.append(f"line {lineno}: camera_auto_detect must be 0 or 1, got {value}")
    return problems


def test_config_txt_uses_only_known_keys() -> None:
    assert config_txt_problems((FIRMWARE / "config.txt").read_text(encoding="utf-8")) == []


def test_config_txt_check_catches_mistakes() -> None:
    bad = "camera_autodetect=1\n[pi6]\n#dtoverlay=imx999\ndtoverlay=imx477,cam2\n# prose is fine\n"
    problems = config_txt_problems(bad)
    assert len(problems) == 4, problems


def test_config_txt_auto_detects_and_offers_each_module() -> None:
    lines = (FIRMWARE / "config.txt").read_text(encoding="utf-8").splitlines()
    active = [line for line in lines if line and not line.startswith("#")]
    assert active == ["[all]", "camera_auto_detect=1"]
    for overlay in MODULE_OVERLAYS:
        assert lines.count(f"#dtoverlay={overlay}") == 1, overlay


def test_journald_dropin_keeps_the_journal_in_ram_and_capped() -> None:
    parser = configparser.ConfigParser(strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(FIRMWARE / "journald.conf", encoding="utf-8")
    assert parser.sections() == ["Journal"]
    journal = parser["Journal"]
    assert set(journal) <= KNOWN_JOURNALD_KEYS, set(journal) - KNOWN_JOURNALD_KEYS
    assert journal["Storage"] == "volatile"
    assert re.fullmatch(r"\d+M", journal["RuntimeMaxUse"])


def wiring_rows() -> dict[str, tuple[int, int]]:
    """Config key -> (BCM GPIO, header pin), read from the table in wiring.md."""
    rows = {}
    for line in (FIRMWARE / "wiring.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|[^|]+\|\s*GPIO(\d+)\s*\|\s*(\d+)\s*\|\s*`gpio\.(\w+)`\s*\|", line)
        if match:
            rows[match[3]] = (int(match[1]), int(match[2]))
    return rows


def pins_of(gpio: GpioConfig) -> dict[str, int | None]:
    not_pins = {"pin_factory", "bounce_ms"}
    return {
        f.name: getattr(gpio, f.name) for f in dataclasses.fields(gpio) if f.name not in not_pins
    }


def test_wiring_table_names_every_pin_once_with_its_header_position() -> None:
    rows = wiring_rows()
    assert set(rows) == set(pins_of(GpioConfig())), "table and config name different functions"
    gpios = [gpio for gpio, _ in rows.values()]
    assert len(set(gpios)) == len(gpios)
    for key, (gpio, header) in rows.items():
        assert HEADER_PIN[gpio] == header, (
            f"gpio.{key}: GPIO{gpio} is header pin {HEADER_PIN[gpio]}"
        )


def test_wiring_table_matches_the_config_defaults() -> None:
    """A config without a [gpio] section uses these pins."""
    minimal = parse_config(
        {
            "paths": {"state_dir": "/tmp/x", "bundle": "/tmp/b"},
            "camera": {"backend": "replay", "replay": {"folder": "/tmp/i"}},
            "gpio": {"pin_factory": "mock"},
        }
    )
    assert pins_of(minimal.gpio) == {k: gpio for k, (gpio, _) in wiring_rows().items()}


def test_wiring_table_matches_the_pi_config() -> None:
    pi_toml = bundled_config("pi")
    if not pi_toml.is_file():
        pytest.skip(f"{pi_toml} not written yet (daemon issue); the defaults test covers the pins")
    config = load_config(pi_toml)
    assert pins_of(config.gpio) == {k: gpio for k, (gpio, _) in wiring_rows().items()}
