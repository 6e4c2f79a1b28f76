"""What the API tests share: the app with an admin token, SongError assertions, JWTs, catalog
snapshots."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
import pytest
from flask.testing import FlaskClient

from api.app import create_app
from api.auth import ensure_admin_token
from api.errors import status_name
from api.server import ApiServer
from catalog.catalog import Catalog

SONG_ERROR_KEYS = {
    "errorId",
    "httpStatusCode",
    "httpStatusName",
    "message",
    "requestUrl",
    "debugMessage",
    "timestamp",
    "stackTrace",
}
#: long enough that PyJWT does not warn about a short HMAC key
JWT_SECRET = "songlake-test-secret-" + "x" * 40


def assert_song_error(response: Any, status: int, error_id: str) -> dict[str, Any]:
    """The response is a full SongError with this status and id; returns the body."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert SONG_ERROR_KEYS <= set(body), sorted(SONG_ERROR_KEYS - set(body))
    assert body["errorId"] == error_id, body
    assert body["httpStatusCode"] == status
    assert body["httpStatusName"] == status_name(status)
    assert f"::{error_id}] - " in body["message"]
    assert body["stackTrace"] == []
    return body


def snapshot(catalog: Catalog) -> dict[str, int]:
    """Every table's Delta version: equal before and after means nothing was written."""
    return catalog.tables.versions()


def hs256(
    scopes: list[str] | str, *, ego: bool = True, exp: float | None = None, **claims: Any
) -> str:
    """A JWT signed with JWT_SECRET; scopes in Ego's context.scope or in scope."""
    body: dict[str, Any] = {
        "sub": "tester",
        "exp": int(exp if exp is not None else time.time() + 600),
    }
    if ego:
        body["context"] = {"scope": scopes, "user": {"name": "tester@example.org"}}
    else:
        body["scope"] = scopes
    body.update(claims)
    return jwt.encode(body, JWT_SECRET, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def token(catalog: Catalog) -> str:
    """The admin token (system scope) that `songlake serve` would create."""
    return ensure_admin_token(catalog.settings)[0].read_text().strip()


@pytest.fixture
def client(catalog: Catalog, token: str) -> FlaskClient:
    """The app over the test catalog, every request sent with the admin token."""
    client = create_app(catalog).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@contextmanager
def running(catalog: Catalog, threads: int = 16) -> Iterator[tuple[ApiServer, Any]]:
    app = create_app(catalog)
    server = ApiServer(app, "127.0.0.1", 0, threads=threads)
    thread = threading.Thread(target=server.run, name="songlake-test-server")
    thread.start()
    try:
        yield server, app
    finally:
        server.stop()
        thread.join(timeout=10)
        assert not thread.is_alive()
