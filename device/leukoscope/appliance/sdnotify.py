"""A tiny sd_notify client (stdlib only): READY, WATCHDOG, STATUS, STOPPING, RELOADING.

Does nothing when $NOTIFY_SOCKET is unset (a laptop, a test, a manual run).
"""

from __future__ import annotations

import logging
import os
import socket
import time

logger = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to systemd's $NOTIFY_SOCKET, if there is one."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        # A leading "@" means the Linux abstract namespace.
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        if self._addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        wanted = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        #: How often to send WATCHDOG=1 (half systemd's timeout), or None without a watchdog.
        self.watchdog_interval: float | None = int(usec) / 2e6 if wanted else None

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self._sock is not None

    def notify(self, *lines: str) -> None:
        """Send raw `KEY=value` lines; errors are logged, never raised (systemd may be gone)."""
        if self._sock is None:
            return
        try:
            self._sock.sendto("\n".join(lines).encode(), self._addr)
        except OSError as exc:
            logger.warning("sd_notify %s failed: %s", lines[0].split("=")[0], exc)

    def ready(self, status: str) -> None:
        """READY=1 with a status line."""
        self.notify("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        """STATUS=text (shown by `systemctl status`)."""
        self.notify(f"STATUS={text}")

    def watchdog(self) -> None:
        """WATCHDOG=1: the work loop is alive."""
        self.notify("WATCHDOG=1")

    def reloading(self) -> None:
        """RELOADING=1 with the monotonic timestamp systemd 253+ wants."""
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        """STOPPING=1."""
        self.notify("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
