"""The local status page and JSON API: a Flask app made by `create_app(source, config)`.

It reads the appliance through a `StatusSource` (never the camera or the model itself),
checks every parameter, needs a login for every action, and is served inside the daemon
by waitress (`leukoscope.web.server`), never by Flask's development server.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Any

from flask import Flask, Response, current_app, g, request, session
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    InternalServerError,
    RequestEntityTooLarge,
)
from werkzeug.wrappers import Response as WResponse

from leukoscope import __version__
from leukoscope.config import WebConfig
from leukoscope.web import api, pages, sample_api, sample_pages
from leukoscope.web.auth import LoginLimiter, PasswordFile, tokens_equal
from leukoscope.web.common import (
    WebContext,
    csrf_token,
    ctx,
    error_response,
    logged_in,
    login_required_response,
)
from leukoscope.web.params import SampleIdConverter
from leukoscope.web.source import StatusSource

logger = logging.getLogger(__name__)

#: Content Security Policy: our own scripts, styles and images only; no inline script.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: Endpoints anyone may read even when reading needs a password.
ALWAYS_OPEN = {"pages.login", "static", "api.healthz"}
#: State-changing endpoints that need no login (logging in, and out).
OPEN_ACTIONS = {"pages.login", "pages.logout"}


def create_app(source: StatusSource, config: WebConfig) -> Flask:
    """Build the web app for one source and its [web] settings."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # sessions end when the daemon restarts
        SESSION_COOKIE_NAME="leukoscope_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=config.session_hours),
        MAX_CONTENT_LENGTH=16 * 1024,  # no uploads: forms and small JSON bodies only
        TRAP_HTTP_EXCEPTIONS=False,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["leukoscope"] = WebContext(
        source=source,
        config=config,
        password=PasswordFile(config.password_file),
        limiter=LoginLimiter(),
    )
    app.url_map.converters["sample"] = SampleIdConverter
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(sample_api.bp)
    app.register_blueprint(sample_pages.bp)
    app.before_request(_check_access)
    app.after_request(_security_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.context_processor(
        lambda: {
            "csrf_token": csrf_token,
            "logged_in": logged_in(),
            "version": __version__,
            "read_access": config.read_access,
        }
    )
    return app


def _check_access() -> WResponse | None:
    """Reads may need a login (config); state-changing requests need a CSRF token."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge(f"request bodies are limited to {limit} bytes")
    for params in (request.args, request.form):
        for name, values in params.lists():
            if len(values) > 1:  # which one was meant? refuse rather than guess
                raise BadRequest(f"{name} is given {len(values)} times: give it once")
    g.logged_in = logged_in()
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        if (
            not g.logged_in
            and request.endpoint is not None
            and (request.endpoint not in OPEN_ACTIONS)
        ):
            # Without a login the CSRF token is beside the point: say what is missing.
            return login_required_response()
        sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
        if not tokens_equal(sent, session.get("csrf")):
            return error_response(403, "CSRF token missing or invalid: reload the page")
    if (
        ctx().config.read_access == "password"
        and not g.logged_in
        and request.endpoint not in ALWAYS_OPEN
    ):
        return login_required_response()
    return None


def _http_error(exc: HTTPException) -> Response:
    resp = error_response(exc.code or 500, exc.description or exc.name)
    if exc.code == 405 and exc.response is None:
        valid = getattr(exc, "valid_methods", None)
        if valid:
            resp.headers["Allow"] = ", ".join(valid)
    retry = getattr(exc, "retry_after", None)
    if retry:
        resp.headers["Retry-After"] = str(retry)
    return resp


def _unexpected_error(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):  # pragma: no cover - handled above
        return _http_error(exc)
    logger.error("error answering %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, InternalServerError.description or "internal error")


def _security_headers(resp: Response) -> Response:
    h: Any = resp.headers
    h.setdefault("Content-Security-Policy", CSP)
    h["X-Content-Type-Options"] = "nosniff"
    h["X-Frame-Options"] = "DENY"
    h["Referrer-Policy"] = "no-referrer"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Cross-Origin-Resource-Policy"] = "same-origin"
    if request.endpoint != "static":
        h.setdefault("Cache-Control", "no-store")
    return resp
