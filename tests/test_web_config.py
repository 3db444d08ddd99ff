"""The [web] table of the config: defaults, and bad values named by their key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from leukoscope.config import parse_config
from leukoscope.core.errors import ConfigError


def _raw(web: dict[str, Any] | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "paths": {"state_dir": "/var/lib/x", "bundle": "/var/lib/x/models/active"},
        "camera": {"backend": "replay", "replay": {"folder": "/tmp/imgs"}},
        "gpio": {"pin_factory": "mock"},
    }
    if web is not None:
        raw["web"] = web
    return raw


def test_web_defaults_listen_on_loopback_with_open_reading():
    web = parse_config(_raw()).web
    assert (web.enabled, web.host, web.port, web.read_access) == (True, "127.0.0.1", 8080, "open")
    assert web.password_file == Path("/var/lib/x/web-password")


@pytest.mark.parametrize(
    ("web", "message"),
    [
        ({"host": "localhost"}, "web.host: must be an IP address"),
        ({"host": 8080}, "web.host: must be an IP address"),
        ({"port": 70000}, "web.port"),
        ({"port": "8080"}, "web.port"),
        ({"read_access": "closed"}, "web.read_access: must be one of open, password"),
        ({"bind": "0.0.0.0"}, "unknown key(s) web.bind"),
        ({"threads": 0}, "web.threads"),
        ({"password_file": ""}, "web.password_file"),
    ],
)
def test_bad_web_values_name_the_key(web, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(_raw(web))
