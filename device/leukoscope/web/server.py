"""Serving the web app inside the daemon: waitress on a background thread (never Flask's
development server), started after the daemon's parts are up and stopped before they close.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from waitress import wasyncore
from waitress.server import create_server

from leukoscope.core.errors import LeukoscopeError

if TYPE_CHECKING:
    from leukoscope.appliance.state import DaemonState

logger = logging.getLogger(__name__)


#: How much lower than the daemon's work loop the page's threads run (Linux nice steps):
#: a capture must not wait for browsers.
THREAD_NICE = 10
#: Requests that run the app's code at the same time (the rest wait, holding no GIL).
APP_CONCURRENCY = 2
#: Open connections the page accepts (each is a socket in waitress's poll loop, not a
#: thread); past it, new ones wait until a silent one is closed.
CONNECTION_LIMIT = 1000
#: A connection that sends nothing for this long is closed.
CHANNEL_TIMEOUT_S = 10
#: The longest a request waits for a running capture to finish before it is answered.
CAPTURE_HOLD_S = 0.08


def lower_thread_priority(steps: int = THREAD_NICE) -> None:
    """Lower the calling thread's scheduling priority (Linux; elsewhere a no-op)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except (OSError, AttributeError):
        logger.debug("cannot lower the web thread's priority", exc_info=True)


def _yielding(
    app: Any, concurrency: int = APP_CONCURRENCY, hold: Callable[[], None] | None = None
) -> Any:
    """Wrap a WSGI app so it leaves the daemon's work loop room, however busy the page is.

    Each worker thread lowers its own priority on first use, and at most `concurrency`
    requests run the app's Python at once: under the GIL more would not be faster, they
    would only take turns with the capture (waiting on the semaphore releases the GIL).
    """
    local = threading.local()
    gate = threading.BoundedSemaphore(concurrency)

    def wrapped(environ: Any, start_response: Any) -> Any:
        if not getattr(local, "niced", False):
            local.niced = True
            lower_thread_priority()
        if hold is not None:
            hold()
        with gate:
            return app(environ, start_response)

    return wrapped


class WebServerError(LeukoscopeError, OSError):
    """The status page's address cannot be bound (in use, or not on this machine)."""


class WebServer:
    """A waitress server for one WSGI app, on its own thread."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        threads: int = 8,
        hold: Callable[[], None] | None = None,
    ) -> None:
        """Bind the listening socket now, so a port in use is a start-up error.

        Raises:
            WebServerError: the address cannot be bound.
        """
        # waitress warns at every queued request; a burst of browsers is normal here.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        try:
            self._server: Any = create_server(
                _yielding(app, hold=hold),
                host=host,
                port=port,
                threads=threads,
                ident="leukoscope",
                # Idle connections cost a socket, not a thread: allow hundreds (below
                # the unit's LimitNOFILE), and close the silent ones within seconds, so
                # the LAN cannot fill the list and keep /healthz and the page waiting.
                connection_limit=CONNECTION_LIMIT,
                channel_timeout=CHANNEL_TIMEOUT_S,
                cleanup_interval=2,
                clear_untrusted_proxy_headers=True,
                expose_tracebacks=False,
                asyncore_use_poll=True,
            )
        except OSError as exc:
            raise WebServerError(f"cannot serve the status page on {host}:{port}: {exc}") from None
        self.host = str(self._server.effective_host)
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._closed = False
        self._on_close: list[Callable[[], None]] = []

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run `callback` after the server has stopped (e.g. close the source)."""
        self._on_close.append(callback)

    @property
    def url(self) -> str:
        """The base URL the server answers on."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _run(self) -> None:
        lower_thread_priority()
        try:
            self._server.run()
        except Exception:  # the page must never take the daemon down with it
            logger.exception("the web server stopped on an error")

    def start(self) -> None:
        """Start answering requests."""
        self._thread.start()
        logger.info("status page at %s", self.url)

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, let running requests end, join the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        server = self._server
        # The listening socket first, then every open connection: an empty socket map
        # ends waitress's loop; then its worker threads finish what they were doing.
        server.close()
        wasyncore.close_all(server._map)
        server.task_dispatcher.shutdown(timeout=timeout)
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("the web server thread did not stop within %.0f s", timeout)
        for callback in self._on_close:
            callback()

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def capture_hold(state: DaemonState, limit_s: float = CAPTURE_HOLD_S) -> Callable[[], None]:
    """A request arriving while a capture runs waits (without CPU) until its result is out.

    The capture is what the technician is waiting for; browsers get their answer a
    moment later, and a poll of /api/status then returns just as the result appears.
    """

    def hold() -> None:
        if state.phase == "busy":
            state.wait_for_result(state.result_seq, limit_s)

    return hold
