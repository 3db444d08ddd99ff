"""The local control socket: `leukoscope capture` and `status` talk to the running daemon.

One JSON object per line each way over a Unix stream socket (mode 0660, in the state
folder). Requests:

- {"cmd": "capture", "sample_id": "..."} -> {"ok": true, "result": {record..., and for a
  field of a sample "sample": Sample.to_json(), "field": FieldResult.to_json()}}; a
  new sample id starts the sample;
- {"cmd": "sample-start" | "sample-close" | "sample-show", "sample_id": "..."} ->
  {"ok": true, "sample": Sample.to_json()};
- {"cmd": "status"} -> {"ok": true, "state": {...}};
- only with the mock pin factory, {"cmd": "press-button", "wait_s": 30, "held_s": 0}
  (drives the mock button's pin, held `held_s` seconds, so a test exercises the real
  gpiozero Button in the real process; a hold of `[sample] long_press_s` starts a sample).

A refusal is {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any, Protocol

from leukoscope.core.errors import LeukoscopeError

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096
#: The longest reply line a client reads (a status reply is about 2 kB).
MAX_REPLY_BYTES = 1 << 20
#: How long a client may take to send its request line before it is answered and dropped.
REQUEST_TIMEOUT_S = 10.0


class ControlError(LeukoscopeError, ConnectionError):
    """The daemon's control socket cannot be reached or gave no answer."""


class Controlled(Protocol):
    """What the control socket asks of the daemon."""

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request (runs on the socket's thread)."""


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S  # a client that connects and sends nothing must not hold a thread

    def handle(self) -> None:
        try:
            line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
        except TimeoutError:
            reply = {"ok": False, "error": f"bad request: none within {self.timeout:g} s"}
            with contextlib.suppress(OSError):
                self.wfile.write(json.dumps(reply).encode() + b"\n")
            return
        try:
            if len(line) > MAX_REQUEST_BYTES:
                raise ValueError("request too long")
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            reply = self.server.target.control(request)
        except (ValueError, UnicodeDecodeError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        except Exception:  # one bad request must not take the daemon down
            logger.exception("control request failed")
            reply = {"ok": False, "error": "internal error (see the daemon's log)"}
        with contextlib.suppress(OSError):  # the client may have given up
            self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, target: Controlled) -> None:
        self.target = target
        super().__init__(path, _Handler)


class ControlServer:
    """Serves the control socket on a background thread."""

    def __init__(self, path: Path, target: Controlled) -> None:
        """Bind the socket, replacing a stale one; refuse if another daemon answers there.

        Raises:
            ControlError: another daemon is running on this socket, or it cannot be bound.
        """
        self.path = Path(path)
        if self.path.exists() or self.path.is_symlink():
            try:
                request(self.path, {"cmd": "status"}, timeout=1.0)
            except ControlError:
                self.path.unlink(missing_ok=True)  # stale, from a killed daemon
            else:
                raise ControlError(f"another leukoscope daemon is running on {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._server: _Server | None = _Server(str(self.path), target)
            os.chmod(self.path, 0o660)
        except OSError as exc:
            raise ControlError(f"cannot listen on {self.path}: {exc}") from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="control", daemon=True
        )

    def start(self) -> None:
        """Start answering requests."""
        self._thread.start()
        logger.info("control socket at %s", self.path)

    def close(self) -> None:
        """Stop serving and remove the socket (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            if self._thread.is_alive():
                server.shutdown()
            server.server_close()
            self.path.unlink(missing_ok=True)


def request(path: Path, payload: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to the daemon and return its reply.

    Raises:
        ControlError: nothing listens there, or no reply came within `timeout`.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            # The daemon stops reading a request that is too long and answers at once:
            # its answer is still waiting to be read after the pipe breaks.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(json.dumps(payload).encode() + b"\n")
            with sock.makefile("rb") as f:
                line = f.readline(MAX_REPLY_BYTES)
    except FileNotFoundError:
        raise ControlError(f"no daemon running (no control socket at {path})") from None
    except TimeoutError:
        raise ControlError(f"the daemon did not answer within {timeout:.0f} s") from None
    except OSError as exc:
        raise ControlError(f"cannot reach the daemon at {path}: {exc}") from None
    if not line:
        raise ControlError("the daemon closed the connection without answering")
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlError(f"the daemon's reply is not JSON: {line[:80]!r}") from None
    if not isinstance(reply, dict):
        raise ControlError(f"unexpected reply {reply!r}")
    return reply
