"""What the API tests share: the app with an admin token, SongError assertions, JWTs, catalog
snapshots."""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from flask.testing import FlaskClient

from api.app import create_app
from api.auth import ensure_admin_token
from api.errors import status_name
from api.server import ApiServer
from catalog import SubmitItem
from catalog.catalog import Catalog
from catalog.settings import load_settings
from tests.conftest import STUDY, Payloads

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


def scoped_catalog(root: Path, tokens: dict[str, str], toml: str = "") -> Catalog:
    """A new catalog at ``root`` whose token file holds ``tokens`` (token -> scope), with study
    STUDY; ``toml`` adds settings."""
    root.mkdir()
    (root / "tokens").write_text("".join(f"{t} {s}\n" for t, s in tokens.items()))
    (root / "songlake.toml").write_text('auth_token_file = "tokens"\n' + toml)
    catalog = Catalog.init(load_settings(root))
    catalog.create_study({"studyId": STUDY})
    return catalog


def register(
    cat: Catalog, payloads: Payloads, access: str = "controlled", state: str = "PUBLISHED"
):
    """One analysis with one file of `access`, its bytes uploaded, in `state`."""
    payload = payloads.variant_call(files=[payloads.file("a.vcf.gz", fileAccess=access)])
    folder = payloads.write_files(payload)
    source = {"a.vcf.gz": str(folder / "a.vcf.gz")}
    aid = cat.submit_batch([SubmitItem(payload, STUDY, source_paths=source)])[0].analysis_id
    cat.upload(aid, folder)
    if state != "UNPUBLISHED":
        cat.publish(STUDY, aid)
    if state == "SUPPRESSED":
        cat.suppress(STUDY, aid)
    (f,) = cat.analysis_files(STUDY, aid)
    return f["objectId"], payloads.contents[f["fileMd5sum"]]


def local_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


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


# -- score-client, re-enacted ---------------------------------------------------------------------


class ClientInterrupted(Exception):
    """The re-enacted client stopped on purpose (a test's ``stop_after``)."""


class ScoreFailure(Exception):
    """A call answered with an error, as score-client would report it."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class ScoreClient:
    """score-client's upload and download, call for call, as its sources make them
    (ScoreStorageService, S3UploadService, ParallelPartObjectTransport, DownloadService):

    upload: ping → GET the ping URL → GET /upload/{id} (exists?) → GET status (404: none in
    progress) → POST uploads (overwrite=true, as ``startUpload`` after a failed resume) → per
    part: PUT the bytes, compare the ETag with the md5, POST parts → POST /upload/{id}. A resume
    (the local ``.<id>/uploadId`` present) takes the parts from status, re-hashes those with a
    ``sourceMd5`` and sends only what is missing or differs.

    download: GET /download/{id}?offset=0&length=-1 → per part a GET with its Range, checked
    against ``sourceMd5`` → the whole md5 against ``objectMd5``.

    Calls to songlake go through a Flask test client; URLs outside it (S3) through urllib.
    """

    def __init__(self, client: FlaskClient, token: str | None, state_dir: Any) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.state_dir = state_dir
        self.calls: list[str] = []
        self.parts_sent: list[int] = []

    # -- transport -------------------------------------------------------------------------------
    def call(self, method: str, path: str, **params: Any) -> Any:
        self.calls.append(f"{method} {path}")
        response = self.client.open(path, method=method, query_string=params, headers=self.headers)
        if response.status_code != 200:
            raise ScoreFailure(response.status_code, response.get_json(silent=True))
        if response.mimetype == "application/json":
            return response.get_json()
        return response.get_data(as_text=True)

    def _url(self, method: str, url: str, data: bytes | None = None, headers: Any = None):
        """(status, headers, body) of a request to a URL the server handed out."""
        parts = urlsplit(url)
        if parts.hostname == "localhost":
            r = self.client.open(
                f"{parts.path}?{parts.query}", method=method, data=data, headers=headers or {}
            )
            return r.status_code, r.headers, r.data
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    # -- upload ----------------------------------------------------------------------------------
    def _state_file(self, object_id: str) -> Any:
        return self.state_dir / f".{object_id}" / "uploadId"

    def upload(
        self,
        object_id: str,
        path: Any,
        md5: str,
        *,
        force: bool = False,
        stop_after: int | None = None,
        wrong_md5_part: int | None = None,
    ) -> None:
        ping = self.call("GET", "/download/ping")
        assert self._url("GET", ping)[0] == 200
        if self.call("GET", f"/upload/{object_id}") and not force:
            raise ScoreFailure(0, f"Object {object_id} already exists remotely")
        size = path.stat().st_size
        state = self._state_file(object_id)
        try:
            progress = self.call("GET", f"/upload/{object_id}/status", fileSize=size)
        except ScoreFailure as exc:
            if exc.status != 404:
                raise
            progress = None
        if progress is not None and not state.exists():
            raise ScoreFailure(
                0, "There is already an upload in progress that was started elsewhere"
            )
        if progress is not None:
            assert state.read_text() == progress["uploadId"], "conflicting local upload"
            upload_id, parts = progress["uploadId"], progress["parts"]
        else:
            spec = self.call(
                "POST",
                f"/upload/{object_id}/uploads",
                fileSize=size,
                overwrite="true",
                md5=md5,
            )
            upload_id, parts = spec["uploadId"], spec["parts"]
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(upload_id)
        with open(path, "rb") as source:
            for n, part in enumerate(parts, start=1):
                source.seek(part["offset"])
                data = source.read(part["partSize"])
                digest = hashlib.md5(data).hexdigest()
                if part.get("sourceMd5") == digest:
                    continue  # completed, and the local bytes still agree
                status, headers, _ = self._url(
                    "PUT", part["url"], data, {"Content-Type": "application/octet-stream"}
                )
                assert status == 200, status
                etag = headers["ETag"].strip('"')
                assert etag == digest  # score-client retries the part otherwise
                sent = "0" * 32 if part["partNumber"] == wrong_md5_part else digest
                self.call(
                    "POST",
                    f"/upload/{object_id}/parts",
                    uploadId=upload_id,
                    partNumber=part["partNumber"],
                    md5=sent,
                    etag=etag,
                )
                self.parts_sent.append(part["partNumber"])
                if stop_after is not None and n == stop_after:
                    raise ClientInterrupted(upload_id)
        self.call("POST", f"/upload/{object_id}", uploadId=upload_id)
        state.unlink()

    # -- download --------------------------------------------------------------------------------
    def download(self, object_id: str) -> bytes:
        spec = self.call("GET", f"/download/{object_id}", offset=0, length=-1)
        out = bytearray()
        for part in sorted(spec["parts"], key=lambda p: p["partNumber"]):
            end = part["offset"] + part["partSize"] - 1
            status, _, data = self._url(
                "GET", part["url"], headers={"Range": f"bytes={part['offset']}-{end}"}
            )
            assert status == 206, status
            if part.get("sourceMd5"):
                assert hashlib.md5(data).hexdigest() == part["sourceMd5"]
            out += data
        assert hashlib.md5(out).hexdigest() == spec["objectMd5"]
        return bytes(out)
