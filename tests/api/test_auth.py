"""API auth: Song's scopes over bearer tokens from the admin token, a token file and JWTs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from api.app import create_app
from api.auth import ensure_admin_token
from catalog.catalog import Catalog
from tests.api.conftest import JWT_SECRET, assert_song_error, bearer, hs256, snapshot
from tests.conftest import REPO, STUDY


@pytest.fixture
def jwt_catalog(catalog: Catalog) -> Catalog:
    catalog.settings = dataclasses.replace(catalog.settings, auth_jwt_secret=JWT_SECRET)
    return catalog


@pytest.fixture
def jwt_client(jwt_catalog: Catalog):
    return create_app(jwt_catalog).test_client()


def test_writes_need_a_token(catalog, payloads):
    client = create_app(catalog).test_client()
    before = snapshot(catalog)
    for method, path in (
        ("post", f"/submit/{STUDY}"),
        ("post", "/studies/NEW/"),
        ("post", "/schemas"),
        ("put", f"/studies/{STUDY}/analysis/publish/x"),
        ("put", f"/studies/{STUDY}/files/x"),
        ("delete", f"/studies/{STUDY}/files/x"),
        ("post", "/sql"),
    ):
        response = getattr(client, method)(path, data=json.dumps(payloads.variant_call()))
        assert_song_error(response, 401, "unauthorized.token")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert snapshot(catalog) == before
    assert client.get(f"/studies/{STUDY}").status_code == 200  # reads stay public


def test_admin_token_file_is_private_and_kept(settings, catalog):
    path, created = ensure_admin_token(settings)
    assert created and path == settings.state_dir / "admin-token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    assert ensure_admin_token(settings) == (path, False)
    assert path.read_text().strip() == token
    client = create_app(catalog).test_client()
    assert client.post("/studies/ADMIN/", json={}, headers=bearer(token)).status_code == 200
    assert_song_error(
        client.post("/studies/ADMIN2/", json={}, headers=bearer(token + "x")),
        401,
        "unauthorized.token",
    )
    assert_song_error(
        client.post("/studies/ADMIN2/", json={}, headers={"Authorization": f"Basic {token}"}),
        401,
        "unauthorized.token",
    )


def test_static_token_file(catalog, payloads):
    tokens = catalog.settings.root / "tokens.txt"
    hashed = hashlib.sha256(b"hashed-study-token").hexdigest()
    tokens.write_text(
        "# token            scopes\n"
        "study-token        PROGRAMDATA-ABC123.WRITE\n"
        "other-token        PROGRAMDATA-OTHER.WRITE song.READ\n"
        "empty-token\n"
        f"sha256:{hashed}   PROGRAMDATA-ABC123.WRITE   # hashed on disk\n"
        "system-token       song.WRITE\n"
    )
    catalog.settings = dataclasses.replace(catalog.settings, auth_token_file="tokens.txt")
    client = create_app(catalog).test_client()
    submit = f"/submit/{STUDY}"

    ok = client.post(
        submit, data=json.dumps(payloads.variant_call()), headers=bearer("study-token")
    )
    assert ok.status_code == 200, ok.get_json()
    ok = client.post(
        submit, data=json.dumps(payloads.variant_call()), headers=bearer("hashed-study-token")
    )
    assert ok.status_code == 200, ok.get_json()
    before = snapshot(catalog)
    for token in ("other-token", "empty-token"):
        response = client.post(
            submit, data=json.dumps(payloads.variant_call()), headers=bearer(token)
        )
        body = assert_song_error(response, 403, "forbidden.token")
        assert "PROGRAMDATA-ABC123.WRITE" in body["message"]
    # a study scope is not the system scope
    assert_song_error(
        client.post("/schemas", json={}, headers=bearer("study-token")), 403, "forbidden.token"
    )
    assert_song_error(
        client.post("/sql", json={"query": "SELECT 1"}, headers=bearer("study-token")),
        403,
        "forbidden.token",
    )
    assert_song_error(client.post(submit, headers=bearer("nobody")), 401, "unauthorized.token")
    assert snapshot(catalog) == before
    response = client.post(
        "/sql", json={"query": "SELECT 1 AS one"}, headers=bearer("system-token")
    )
    assert response.get_json()["rows"] == [[1]]


def test_ego_jwt_scopes(jwt_catalog, jwt_client, payloads):
    submit = f"/submit/{STUDY}"
    body = json.dumps(payloads.variant_call())
    ok = jwt_client.post(submit, data=body, headers=bearer(hs256([f"PROGRAMDATA-{STUDY}.WRITE"])))
    assert ok.status_code == 200, ok.get_json()
    analysis_id = ok.get_json()["analysisId"]
    # the caller is recorded as the actor of state changes
    token = hs256(["song.WRITE"])
    suppress = jwt_client.put(
        f"/studies/{STUDY}/analysis/suppress/{analysis_id}", headers=bearer(token)
    )
    assert suppress.status_code == 200
    assert jwt_catalog.history(STUDY, analysis_id)[-1]["actor"] == "tester@example.org"
    # "scope" as a space-separated string (Keycloak and most OAuth servers)
    plain = hs256(f"openid PROGRAMDATA-{STUDY}.WRITE", ego=False)
    created = jwt_client.post(
        submit, data=json.dumps(payloads.variant_call()), headers=bearer(plain)
    )
    assert created.status_code == 200, created.get_json()


def test_bad_jwts_are_refused(jwt_catalog, jwt_client, payloads):
    submit = f"/submit/{STUDY}"
    body = json.dumps(payloads.variant_call())
    before = snapshot(jwt_catalog)
    scopes = ["song.WRITE"]
    forged = jwt.encode(
        {"context": {"scope": scopes}, "exp": int(time.time()) + 600},
        "another-secret-" + "y" * 40,
        algorithm="HS256",
    )
    unsigned = jwt.encode(
        {"context": {"scope": scopes}, "exp": int(time.time()) + 600}, None, "none"
    )
    for token, words in (
        (forged, "not valid"),
        (hs256(scopes, exp=time.time() - 60), "expired"),
        (unsigned, "not valid"),
        (hs256(scopes)[:-4] + "AAAA", "not valid"),
        (jwt.encode({"context": {"scope": scopes}}, JWT_SECRET, "HS256"), "not valid"),  # no exp
    ):
        response = jwt_client.post(submit, data=body, headers=bearer(token))
        assert words in assert_song_error(response, 401, "unauthorized.token")["message"]
    for scopes_given in (
        [],
        ["PROGRAMDATA-OTHER.WRITE"],
        ["song.READ"],
        [f"PROGRAMDATA-{STUDY}.READ"],
    ):
        response = jwt_client.post(submit, data=body, headers=bearer(hs256(scopes_given)))
        assert_song_error(response, 403, "forbidden.token")
    assert snapshot(jwt_catalog) == before


def test_rs256_public_key_and_jwks(catalog, tmp_path, payloads):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "ego.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(other.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k2", "alg": "RS256", "use": "sig"}]}))
    catalog.settings = dataclasses.replace(
        catalog.settings, auth_jwt_public_key=str(pem), auth_jwks_file=str(jwks)
    )
    client = create_app(catalog).test_client()
    claims = {"context": {"scope": ["song.WRITE"]}, "exp": int(time.time()) + 600}
    by_pem = jwt.encode(claims, key, algorithm="RS256")
    by_kid = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k2"})
    wrong_kid = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k2"})
    assert client.post("/studies/RS1/", json={}, headers=bearer(by_pem)).status_code == 200
    assert client.post("/studies/RS2/", json={}, headers=bearer(by_kid)).status_code == 200
    assert_song_error(
        client.post("/studies/RS3/", json={}, headers=bearer(wrong_kid)), 401, "unauthorized.token"
    )
    # an HS256 token signed with the public key as the secret (algorithm confusion) is refused
    confused = jwt.encode(claims, "k" * 64, algorithm="HS256")
    assert_song_error(
        client.post("/studies/RS4/", json={}, headers=bearer(confused)), 401, "unauthorized.token"
    )
    assert "RS3" not in catalog.list_studies() and "RS4" not in catalog.list_studies()


def test_study_scope_prefix_and_suffix_are_configurable(catalog):
    catalog.settings = dataclasses.replace(
        catalog.settings,
        auth_jwt_secret=JWT_SECRET,
        auth_study_prefix="song-",
        auth_study_suffix=".WRITE",
        auth_system_scope="admin.WRITE",
    )
    client = create_app(catalog).test_client()
    assert (
        client.post("/studies/P1/", json={}, headers=bearer(hs256(["song-P1.WRITE"]))).status_code
        == 200
    )
    assert_song_error(
        client.post("/studies/P2/", json={}, headers=bearer(hs256(["PROGRAMDATA-P2.WRITE"]))),
        403,
        "forbidden.token",
    )
    assert (
        client.post("/studies/P3/", json={}, headers=bearer(hs256(["admin.WRITE"]))).status_code
        == 200
    )
    with pytest.raises(ValueError, match="prefix"):
        create_app(catalog, settings=dataclasses.replace(catalog.settings, auth_study_prefix="x"))


def test_auth_off_lets_anyone_write(catalog, caplog):
    settings = dataclasses.replace(catalog.settings, auth=False)
    with caplog.at_level("WARNING", logger="songlake.api"):
        client = create_app(catalog, settings=settings).test_client()
    assert any("auth is OFF" in r.getMessage() for r in caplog.records)
    assert client.post("/studies/OPEN/", json={}).status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_creates_an_admin_token(catalog):
    """`songlake serve` with no auth configured makes <root>/state/admin-token and says where."""
    root = catalog.settings.root
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGLAKE_")}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "songlake"),
            "--root",
            str(root),
            "serve",
            "--no-watch",
            "--port",
            str(port),
            "--threads",
            "2",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "serving" in line or not line:
                break
        text = "".join(lines)
        token_path = root / "state" / "admin-token"
        assert f"admin token (system scope) created {token_path}" in text, text
        assert stat.S_IMODE(os.stat(token_path).st_mode) == 0o600
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
