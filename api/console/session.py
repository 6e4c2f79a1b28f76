"""The console's frame: its blueprint under ``/ui``, signing in and out, the CSRF check, who the
signed-in caller is and what they may see, and error pages instead of JSON.

Signing in means pasting a bearer token (the admin token, a token-file token or a JWT): it is
checked by the API's own Authenticator and kept in Flask's signed session cookie, HttpOnly and
SameSite=Strict, limited to ``/ui``. The cookie's key lives in ``<root>/state/console-session.key``
(mode 0600), so every replica serving the same root accepts it. Each session gets a CSRF token
that every form carries; a POST without it, or with another, is refused (403 forbidden.token)
before anything runs. With ``auth = false`` no sign-in is needed, as in the API.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from catalog.errors import SonglakeError
from catalog.settings import Settings

from ..auth import AuthError, ForbiddenToken, UnauthorizedToken, authenticator, secret_key
from ..errors import status_of

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

KEY_FILE = "console-session.key"
COOKIE = "songlake_console"


def configure(app: Flask, settings: Settings) -> None:
    """The session cookie: signed with the root's key, HttpOnly, SameSite=Strict, under /ui."""
    app.secret_key = secret_key(settings.state_dir / KEY_FILE)
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/ui",
    )


# -- every console request ------------------------------------------------------------------------


@bp.before_request
def _load_caller() -> None:
    """The caller from the session's token (never from a header: the console has its own door);
    a token that stopped being valid signs the session out. Then the CSRF check of a POST."""
    auth = authenticator()
    g.songlake_caller = None
    token = session.get("token")
    if token and auth.enabled:
        try:
            g.songlake_caller = auth.caller(token)
        except AuthError:
            session.pop("token", None)
    if request.method == "POST":
        sent = request.form.get("csrf", "")
        kept = session.get("csrf", "")
        if not (kept and hmac.compare_digest(sent.encode(), kept.encode())):
            raise ForbiddenToken("The form's CSRF token is missing or does not match this session")


#: the console loads nothing from elsewhere, runs no script, and is framed by nobody
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def csrf_token() -> str:
    """This session's CSRF token, made on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


@bp.app_context_processor
def _frame() -> dict[str, Any]:
    if not request.blueprint or not request.blueprint.startswith("console"):
        return {}
    return {
        "caller": g.get("songlake_caller"),
        "auth_on": authenticator().enabled,
        "csrf": csrf_token,
    }


def signed_in() -> bool:
    """Whether the request may act as someone: a valid session token, or auth is off."""
    return not authenticator().enabled or g.get("songlake_caller") is not None


def require_sign_in() -> None:
    if not signed_in():
        raise UnauthorizedToken("Sign in with a token to see this page")


def may_write(study_id: str | None) -> bool:
    """Whether the caller may change `study_id` (None: needs the system scope)."""
    auth = authenticator()
    caller = g.get("songlake_caller")
    if not auth.enabled:
        return True
    return caller is not None and auth.allows(caller.scopes, study_id)


# -- signing in and out ---------------------------------------------------------------------------


def _next_page(value: str | None) -> str:
    """Where to go after signing in: a console page, never another site."""
    parts = urlsplit(value or "")
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui"):
        return url_for("console.pages.overview")
    return value or url_for("console.pages.overview")


@bp.get("/signin")
def signin_form() -> ResponseReturnValue:
    return render_template("console/signin.html", next=_next_page(request.args.get("next")))


@bp.post("/signin")
def signin() -> ResponseReturnValue:
    token = request.form.get("token", "").strip()
    auth = authenticator()
    target = _next_page(request.form.get("next"))
    try:
        caller = auth.caller(token)
    except AuthError as exc:
        page = render_template("console/signin.html", next=target, error=exc)
        return page, status_of(exc)
    session.clear()  # a new session: a new CSRF token, nothing carried over
    session["token"] = token
    session["csrf"] = secrets.token_urlsafe(32)
    g.songlake_caller = caller
    return redirect(target, 303)


@bp.post("/signout")
def signout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("console.signin_form"), 303)


# -- errors as pages ------------------------------------------------------------------------------


@bp.errorhandler(SonglakeError)
def _song_error(error: SonglakeError) -> ResponseReturnValue:
    status = status_of(error)
    if status == 401 and request.method == "GET":
        return redirect(url_for("console.signin_form", next=request.full_path.rstrip("?")), 303)
    return render_template("console/error.html", error_id=error.error_id, error=error), status


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> ResponseReturnValue:
    if (error.code or 500) < 400:
        return error
    page = render_template(
        "console/error.html", error_id=(error.name or "error").lower(), error=error
    )
    return page, error.code or 500
