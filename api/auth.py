"""Song's write authorization: bearer tokens, their scopes, and who may write where.

Reads are public, as in Song, except the live events (``GET /events``: the system scope, or a
study's READ or WRITE scope for that study's events, unless ``events_public``). A write needs
``Authorization: Bearer <token>`` whose scopes hold the system scope (``song.WRITE``) or the
study's scope (``PROGRAMDATA-<studyId>.WRITE``; prefix, suffix and system scope configurable);
``POST /schemas`` and ``POST /sql`` need the system scope.

    no token, or a token no source accepts      401 unauthorized.token
    a valid token without the scope needed      403 forbidden.token

Token sources, tried in this order:

1. the admin token ``<root>/state/admin-token`` (system scope), which ``songlake serve`` creates
   (mode 0600) when no other source is configured;
2. a static token file (``auth_token_file``): one ``TOKEN SCOPE [SCOPE...]`` line per token,
   ``#`` comments; a token may be written ``sha256:<hex>`` to keep only its hash on disk;
3. JWTs (``a.b.c``) verified with ``auth_jwt_secret`` (HS256), ``auth_jwt_public_key`` (RS256,
   PEM) or ``auth_jwks_file`` (RS256/HS256 keys chosen by ``kid``); scopes from ``context.scope``
   as Ego puts them, else ``scope`` (a list or a space-separated string); ``exp`` is enforced.

The token files are re-read when they change (checked at most once a second). With ``auth =
false`` nothing is checked: every caller may write (a warning is logged at start).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from flask import Flask, Response, current_app, g, request

from catalog.errors import SonglakeError
from catalog.settings import Settings

from .errors import error_response, song_error, status_of

log = logging.getLogger("songlake.api")

EXTENSION = "songlake.auth"
ADMIN_TOKEN_NAME = "admin-token"
_PREFIX_RE = re.compile(r"^\w+\W$")
_SUFFIX_RE = re.compile(r"^\W\w+$")
_JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_MAX_TOKEN = 16 * 1024


class AuthError(SonglakeError):
    """A request refused for its credentials: unauthorized.token (401) or forbidden.token (403)."""

    context_name = "SecurityService"
    error_id = "unauthorized.token"


class UnauthorizedToken(AuthError):
    """No token, or a token no source accepts (401)."""

    error_id = "unauthorized.token"


class ForbiddenToken(AuthError):
    """A valid token without the scope needed (403)."""

    error_id = "forbidden.token"


@dataclass(frozen=True)
class Caller:
    """Who sent a request with a valid token, and the scopes it grants."""

    name: str
    scopes: frozenset[str]
    source: str  # "admin", "token-file" or "jwt"


@dataclass
class _FileTokens:
    """Tokens read from a file, re-read when its mtime changes."""

    path: Path
    admin: bool = False
    _mtime: float | None = None
    _checked: float = 0.0
    _plain: dict[str, Caller] = field(default_factory=dict)
    _hashed: dict[str, Caller] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def lookup(self, token: str, system_scope: str) -> Caller | None:
        self._maybe_reload(system_scope)
        caller = self._plain.get(token)
        if caller is None and self._hashed:
            caller = self._hashed.get(hashlib.sha256(token.encode()).hexdigest())
        return caller

    def _maybe_reload(self, system_scope: str) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        with self._lock:
            if now - self._checked < 1.0:
                return
            try:
                mtime = self.path.stat().st_mtime
            except OSError:
                mtime = None
            if mtime == self._mtime:
                self._checked = now
                return
            self._mtime = mtime
            plain: dict[str, Caller] = {}
            hashed: dict[str, Caller] = {}
            if mtime is not None:
                try:
                    text = self.path.read_text("utf-8")
                except OSError as exc:
                    log.error("cannot read token file %s: %s", self.path, exc)
                    text = ""
                if self.admin:
                    token = text.strip()
                    if token:
                        plain[token] = Caller("admin", frozenset({system_scope}), "admin")
                else:
                    for number, line in enumerate(text.split("\n"), 1):
                        parts = line.split("#", 1)[0].split()
                        if not parts:
                            continue
                        token, scopes = parts[0], frozenset(parts[1:])
                        name = f"{self.path.name}:{number}"
                        if token.startswith("sha256:"):
                            hashed[token[len("sha256:") :].lower()] = Caller(
                                name, scopes, "token-file"
                            )
                        else:
                            plain[token] = Caller(name, scopes, "token-file")
            self._plain, self._hashed = plain, hashed
            self._checked = now  # only now may other threads skip the check


class Authenticator:
    """Turns a bearer token into a Caller, or refuses it."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth
        self.system_scope = settings.auth_system_scope
        self.study_prefix = settings.auth_study_prefix
        self.study_suffix = settings.auth_study_suffix
        if not _PREFIX_RE.match(self.study_prefix):
            raise ValueError(
                f"auth_study_prefix {self.study_prefix!r} must match {_PREFIX_RE.pattern}"
            )
        if not _SUFFIX_RE.match(self.study_suffix):
            raise ValueError(
                f"auth_study_suffix {self.study_suffix!r} must match {_SUFFIX_RE.pattern}"
            )
        self.audience = settings.auth_jwt_audience or None
        self._files = [_FileTokens(admin_token_path(settings), admin=True)]
        if settings.auth_token_file:
            self._files.append(_FileTokens(_resolve(settings, settings.auth_token_file)))
        self._keys: list[tuple[Any, list[str]]] = []  # (key, algorithms) for keys without a kid
        self._by_kid: dict[str, tuple[Any, list[str]]] = {}
        if settings.auth_jwt_secret:
            self._keys.append((settings.auth_jwt_secret.encode("utf-8"), ["HS256"]))
        if settings.auth_jwt_public_key:
            pem = _resolve(settings, settings.auth_jwt_public_key).read_bytes()
            self._keys.append((pem, ["RS256"]))
        if settings.auth_jwks_file:
            self._load_jwks(_resolve(settings, settings.auth_jwks_file))

    @property
    def jwt_configured(self) -> bool:
        return bool(self._keys or self._by_kid)

    def _load_jwks(self, path: Path) -> None:
        data = json.loads(path.read_text("utf-8"))
        for jwk in jwt.PyJWKSet.from_dict(data).keys:
            algorithm = jwk.algorithm_name if jwk.algorithm_name != "UNKNOWN" else None
            algorithms = [algorithm] if algorithm else ["RS256", "HS256"]
            algorithms = [a for a in algorithms if a in ("RS256", "HS256")]
            if not algorithms:
                continue
            if jwk.key_id:
                self._by_kid[jwk.key_id] = (jwk.key, algorithms)
            else:
                self._keys.append((jwk.key, algorithms))

    # -- tokens ---------------------------------------------------------------------------------

    def caller(self, token: str) -> Caller:
        """The Caller a token stands for; AuthError (401) when no source accepts it."""
        if not token or len(token) > _MAX_TOKEN:
            raise UnauthorizedToken("The bearer token is empty or too long")
        for source in self._files:
            found = source.lookup(token, self.system_scope)
            if found is not None:
                return found
        if _JWT_RE.match(token) and self.jwt_configured:
            return self._jwt_caller(token)
        raise UnauthorizedToken("The bearer token is not valid")

    def _jwt_caller(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise UnauthorizedToken(f"The bearer token is not a valid JWT: {exc}") from None
        kid = header.get("kid")
        candidates = [self._by_kid[kid]] if kid in self._by_kid else list(self._keys)
        if not candidates:
            raise UnauthorizedToken("The bearer token is signed with an unknown key")
        options: jwt.types.Options = {"require": ["exp"], "verify_aud": self.audience is not None}
        last: jwt.PyJWTError | None = None
        for key, algorithms in candidates:
            try:
                claims = jwt.decode(
                    token, key, algorithms=algorithms, audience=self.audience, options=options
                )
            except jwt.ExpiredSignatureError:
                raise UnauthorizedToken("The bearer token has expired") from None
            except jwt.PyJWTError as exc:
                last = exc
                continue
            return Caller(_jwt_name(claims), frozenset(jwt_scopes(claims)), "jwt")
        raise UnauthorizedToken(f"The bearer token is not valid: {last}")

    # -- scopes ---------------------------------------------------------------------------------

    def study_scope(self, study_id: str) -> str:
        return f"{self.study_prefix}{study_id}{self.study_suffix}"

    def readable_studies(self, scopes: set[str] | frozenset[str]) -> frozenset[str] | None:
        """The studies whose events scopes let a caller read: None for all (the system scope),
        else every study named by a study scope, READ (``PROGRAMDATA-<id>.READ``) or WRITE."""
        if self.system_scope in scopes:
            return None
        read_suffix = self.study_suffix[0] + "READ"
        studies = set()
        for scope in scopes:
            if scope.startswith(self.study_prefix):
                rest = scope[len(self.study_prefix) :]
                for suffix in (self.study_suffix, read_suffix):
                    if rest.endswith(suffix) and len(rest) > len(suffix):
                        studies.add(rest[: -len(suffix)])
        return frozenset(studies)

    def allows(self, scopes: set[str] | frozenset[str], study_id: str | None) -> bool:
        """Whether scopes grant writing to a study (study_id None: the system scope only)."""
        if self.system_scope in scopes:
            return True
        return study_id is not None and self.study_scope(study_id) in scopes


def jwt_scopes(claims: dict[str, Any]) -> list[str]:
    """Scopes of a JWT: Ego's ``context.scope``, else ``scope`` (list or space-separated)."""
    context = claims.get("context")
    scope: Any = None
    if isinstance(context, dict):
        scope = context.get("scope")
    if scope is None:
        scope = claims.get("scope")
    if isinstance(scope, str):
        return scope.split()
    if isinstance(scope, list):
        return [s for s in scope if isinstance(s, str)]
    return []


def _jwt_name(claims: dict[str, Any]) -> str:
    context = claims.get("context")
    if isinstance(context, dict):
        user = context.get("user")
        if isinstance(user, dict):
            for key in ("name", "email"):
                if isinstance(user.get(key), str):
                    return user[key]
        application = context.get("application")
        if isinstance(application, dict) and isinstance(application.get("clientId"), str):
            return application["clientId"]
    for key in ("preferred_username", "email", "sub"):
        if isinstance(claims.get(key), str):
            return claims[key]
    return "jwt"


def _resolve(settings: Settings, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else settings.root / p


# -- the admin token ------------------------------------------------------------------------------


def admin_token_path(settings: Settings) -> Path:
    return settings.state_dir / ADMIN_TOKEN_NAME


def secret_key(path: Path) -> bytes:
    """The 32 random bytes kept in `path` (mode 0600), made on first use by whoever comes first."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
        return path.read_bytes()


def auth_configured(settings: Settings) -> bool:
    """Whether any token source exists besides a generated admin token."""
    return bool(
        settings.auth_token_file
        or settings.auth_jwt_secret
        or settings.auth_jwt_public_key
        or settings.auth_jwks_file
    )


def ensure_admin_token(settings: Settings) -> tuple[Path, bool]:
    """Create ``<root>/state/admin-token`` (mode 0600) unless it exists; returns (path, created)."""
    path = admin_token_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path, False
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return path, True


# -- in a request -----------------------------------------------------------------------------


def init_app(app: Flask, settings: Settings) -> Authenticator:
    """Attach an Authenticator to `app` and the 401/403 answers with their WWW-Authenticate."""
    auth = Authenticator(settings)
    app.extensions[EXTENSION] = auth
    app.register_error_handler(AuthError, _handle_auth_error)
    if not auth.enabled:
        log.warning("API auth is OFF: anyone who can reach the port can write to the catalog")
    return auth


def _handle_auth_error(error: AuthError) -> Response:
    status = status_of(error)
    body = song_error(error.error_id, status, error.message, context=error.context_name)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="songlake"'
    elif status == 403:
        headers["WWW-Authenticate"] = 'Bearer realm="songlake", error="insufficient_scope"'
    return error_response(body, headers)


def authenticator() -> Authenticator:
    return current_app.extensions[EXTENSION]


def _bearer() -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    kind, _, token = header.strip().partition(" ")
    if kind.lower() != "bearer":
        raise UnauthorizedToken("The Authorization header must be 'Bearer <token>'")
    return token.strip()


def current_caller() -> Caller | None:
    """The Caller of this request (None without a token, or with auth off); 401 on a bad token."""
    if "songlake_caller" in g:
        return g.songlake_caller
    auth = authenticator()
    caller = None
    if auth.enabled:
        token = _bearer()
        if token is not None:
            caller = auth.caller(token)
    g.songlake_caller = caller
    return caller


def require_write(study_id: str | None) -> Caller | None:
    """Refuse the request unless its token may write to `study_id` (None: needs the system scope).

    Returns the Caller (None when auth is off). 401 without a valid token, 403 without the scope.
    """
    auth = authenticator()
    if not auth.enabled:
        return None
    caller = current_caller()
    if caller is None:
        raise UnauthorizedToken("This endpoint needs 'Authorization: Bearer <token>'")
    if not auth.allows(caller.scopes, study_id):
        needed = (
            f"'{auth.system_scope}'"
            if study_id is None
            else f"'{auth.system_scope}' or '{auth.study_scope(study_id)}'"
        )
        raise ForbiddenToken(f"The token's scopes do not include {needed}")
    return caller


def require_events_reader(public: bool) -> frozenset[str] | None:
    """The studies whose events this request may stream (None: every study).

    Open when ``public`` or auth is off; else 401 without a valid token, 403 when the token holds
    neither the system scope nor a study's READ or WRITE scope."""
    auth = authenticator()
    if public or not auth.enabled:
        return None
    caller = current_caller()
    if caller is None:
        raise UnauthorizedToken("GET /events needs 'Authorization: Bearer <token>'")
    studies = auth.readable_studies(caller.scopes)
    if studies is not None and not studies:
        raise ForbiddenToken(
            f"The token's scopes include neither '{auth.system_scope}' nor a study's scope "
            f"('{auth.study_scope('<studyId>')}' or its READ twin)"
        )
    return studies


def require_system() -> Caller | None:
    """Refuse the request unless its token holds the system scope."""
    return require_write(None)


def actor() -> str | None:
    """Who to record in history rows for this request."""
    caller = current_caller()
    return None if caller is None else caller.name
