"""What the console tests share: a browser-like client that signs in and fills forms (the
session cookie and the CSRF token carried as a browser carries them), and a token file."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api.app import create_app
from catalog.catalog import Catalog

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
#: tokens of the token file the console tests sign in with
TOKENS = {
    "study-token": "PROGRAMDATA-ABC123.WRITE",
    "other-token": "PROGRAMDATA-OTHER.WRITE",
    "reader-token": "PROGRAMDATA-ABC123.READ",
    "system-token": "song.WRITE",
}


class Console:
    """The console through Flask's test client, as a browser uses it."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self.client.get(path, **kw)

    def page(self, path: str, status: int = 200) -> str:
        response = self.client.get(path)
        assert response.status_code == status, response.get_data(as_text=True)[:2000]
        return response.get_data(as_text=True)

    def csrf(self) -> str:
        found = CSRF.search(self.page("/ui/signin"))
        assert found is not None
        return found.group(1)

    def post(self, path: str, *, csrf: bool = True, **form: str) -> TestResponse:
        data = dict(form)
        if csrf:
            data["csrf"] = self.csrf()
        return self.client.post(path, data=data)

    def sign_in(self, token: str) -> TestResponse:
        response = self.post("/ui/signin", token=token)
        assert response.status_code == 303, response.get_data(as_text=True)[:2000]
        return response


@pytest.fixture
def console(catalog: Catalog) -> Console:
    """The console over the test catalog, with the token file of TOKENS; nobody signed in."""
    lines = [f"{token} {scope}" for token, scope in TOKENS.items()]
    (catalog.settings.root / "tokens.txt").write_text("\n".join(lines) + "\n")
    catalog.settings = dataclasses.replace(catalog.settings, auth_token_file="tokens.txt")
    return Console(create_app(catalog).test_client())
