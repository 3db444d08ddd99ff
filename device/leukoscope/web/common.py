"""What every view of the web app shares: its context, the login and CSRF checks, errors."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from flask import (
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response as WResponse

from leukoscope.config import WebConfig
from leukoscope.web.auth import LoginLimiter, PasswordFile, PasswordFileError, new_csrf_token
from leukoscope.web.source import StatusSource

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

#: Paths answered with JSON errors (the rest get a plain page).
JSON_PREFIXES = ("/api/", "/healthz", "/metrics")


@dataclass
class WebContext:
    """What the views share: the source, the settings, the password and the login limiter."""

    source: StatusSource
    config: WebConfig
    password: PasswordFile
    limiter: LoginLimiter


def ctx() -> WebContext:
    """The current app's WebContext."""
    context: WebContext = current_app.extensions["leukoscope"]
    return context


def logged_in() -> bool:
    """True if this request's session is a login under the current password."""
    if "user" not in session:
        return False
    try:
        return bool(session.get("pw")) and session.get("pw") == ctx().password.fingerprint()
    except PasswordFileError:
        logger.exception("cannot read the password file")
        return False


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = new_csrf_token()
        session["csrf"] = token
    return token


def wants_json() -> bool:
    """True for the API's paths (errors there are JSON)."""
    return request.path.startswith(JSON_PREFIXES)


def login_required_response() -> WResponse:
    """401 for the API; for pages, the login page, coming back here afterwards."""
    if wants_json() or request.method != "GET":
        return error_response(
            401, "login required: log in at /login first (actions also need the X-CSRF-Token)"
        )
    return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))


def login_required(view: Callable[P, R]) -> Callable[P, R | WResponse]:
    """Decorate an action's view: only a logged-in session may use it."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | WResponse:
        if not g.get("logged_in"):
            return login_required_response()
        return view(*args, **kwargs)

    return wrapped


def error_response(status: int, message: str) -> Response:
    """An error as JSON (API paths) or a plain page, never with a stack trace."""
    if wants_json():
        resp = jsonify({"error": message, "status": status})
    else:
        resp = current_app.make_response(
            (render_template("error.html", status=status, message=message), status)
        )
    resp.status_code = status
    return resp
