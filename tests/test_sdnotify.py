"""The sd_notify client speaks systemd's datagram protocol, and is silent without systemd."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from leukoscope.appliance.sdnotify import Notifier


@pytest.fixture
def systemd_socket(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    try:
        yield sock, str(tmp_path / "notify")
    finally:
        sock.close()


def test_messages_arrive_as_systemd_expects(systemd_socket) -> None:
    sock, path = systemd_socket
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert n.enabled and n.watchdog_interval == 2.0
    n.ready("ready, model x")
    assert sock.recv(4096) == b"READY=1\nSTATUS=ready, model x"
    n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    n.stopping()
    assert sock.recv(4096).startswith(b"STOPPING=1")
    n.close()
    n.close()


def test_abstract_socket_address() -> None:
    name = f"leukoscope-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert sock.recv(4096) == b"STATUS=hello"


def test_without_systemd_nothing_happens() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None
    n.ready("x")  # no socket, no error


def test_watchdog_for_another_pid_is_ignored() -> None:
    n = Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval is None
