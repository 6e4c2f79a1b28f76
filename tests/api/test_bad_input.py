"""Bad input over HTTP: each answer is the right SongError, and nothing in the catalog changes."""

from __future__ import annotations

import dataclasses
import json

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from catalog.catalog import Catalog
from tests.api.conftest import JWT_SECRET, assert_song_error, bearer, hs256, snapshot
from tests.conftest import STUDY


@pytest.fixture
def app_catalog(catalog: Catalog) -> Catalog:
    catalog.settings = dataclasses.replace(catalog.settings, auth_jwt_secret=JWT_SECRET)
    return catalog


@pytest.fixture
def client(app_catalog: Catalog) -> FlaskClient:
    client = create_app(app_catalog).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {hs256(['song.WRITE'])}"
    return client


@pytest.fixture
def analysis_id(app_catalog: Catalog, payloads) -> str:
    return app_catalog.submit(payloads.variant_call(), STUDY)


@pytest.fixture
def unchanged(app_catalog: Catalog):
    """Asserts, after the test, that no table got a new version."""
    before = snapshot(app_catalog)
    yield
    assert snapshot(app_catalog) == before


def test_invalid_json_and_arrays(client, analysis_id, unchanged):
    for method, path in (
        ("post", f"/submit/{STUDY}"),
        ("post", "/studies/NEW/"),
        ("post", "/schemas"),
        ("put", f"/studies/{STUDY}/analysis/{analysis_id}"),
        ("patch", f"/studies/{STUDY}/analysis/{analysis_id}"),
    ):
        for body in ("{not json", "[1, 2]", '"text"', "\xff\xfe"):
            response = getattr(client, method)(path, data=body, content_type="application/json")
            assert_song_error(response, 422, "payload.parsing")
    files = client.get(f"/studies/{STUDY}/analysis/{analysis_id}/files").get_json()
    response = client.put(f"/studies/{STUDY}/files/{files[0]['objectId']}", data="[]")
    assert_song_error(response, 422, "payload.parsing")


def test_wrong_query_parameter_types(client, analysis_id, unchanged):
    base = f"/studies/{STUDY}/analysis"
    for query in ("limit=abc", "offset=-1", "analysisStates=FOO", "limit=1.5"):
        assert_song_error(client.get(f"{base}/paginated?{query}"), 400, "malformed.parameter")
    assert_song_error(client.get(f"{base}?analysisStates=FOO"), 400, "malformed.parameter")
    assert_song_error(
        client.put(f"{base}/publish/{analysis_id}?ignoreUndefinedMd5=perhaps"),
        400,
        "malformed.parameter",
    )
    assert_song_error(client.get("/schemas?limit=abc"), 400, "malformed.parameter")
    assert_song_error(client.get("/entities?page=-1"), 400, "malformed.parameter")


def test_analysis_of_another_study(client, app_catalog, analysis_id):
    app_catalog.create_study({"studyId": "OTHER"})
    before = snapshot(app_catalog)
    for method, path in (
        ("get", f"/studies/OTHER/analysis/{analysis_id}"),
        ("get", f"/studies/OTHER/analysis/{analysis_id}/files"),
        ("put", f"/studies/OTHER/analysis/publish/{analysis_id}"),
        ("put", f"/studies/OTHER/analysis/suppress/{analysis_id}"),
        ("put", f"/studies/OTHER/analysis/unpublish/{analysis_id}"),
    ):
        response = getattr(client, method)(path)
        assert_song_error(response, 400, "entity.not.related.to.study")
    files = app_catalog.analysis_files(STUDY, analysis_id)
    response = client.put(f"/studies/OTHER/files/{files[0]['objectId']}", json={"dataType": "x"})
    assert_song_error(response, 400, "entity.not.related.to.study")
    assert snapshot(app_catalog) == before
    assert app_catalog.get_analysis(STUDY, analysis_id)["analysisState"] == "UNPUBLISHED"


def test_unknown_things_are_404(client, analysis_id, unchanged):
    cases = (
        ("get", "/studies/NOPE/analysis", "study.id.does.not.exist"),
        ("post", "/submit/NOPE", "study.id.does.not.exist"),
        ("get", f"/studies/{STUDY}/analysis/nope", "analysis.id.not.found"),
        ("put", f"/studies/{STUDY}/analysis/publish/nope", "analysis.id.not.found"),
        ("put", f"/studies/{STUDY}/analysis/suppress/nope", "analysis.id.not.found"),
        ("get", f"/studies/{STUDY}/files/nope", "file.not.found"),
        ("put", f"/studies/{STUDY}/files/nope", "file.not.found"),
        ("delete", f"/studies/{STUDY}/files/nope", "file.not.found"),
        ("get", "/schemas/nope", "analysis.type.not.found"),
        ("get", "/entities/nope", "legacy.entity.not.found"),
        ("get", "/export/analysis/nope", "analysis.id.not.found"),
        ("get", "/no/such/route", "not.found"),
    )
    for method, path, error_id in cases:
        kwargs = {"json": {"dataType": "x"}} if method in ("put", "post") else {}
        assert_song_error(getattr(client, method)(path, **kwargs), 404, error_id)
    payload = {"studyId": STUDY, "analysisType": {"name": "noSuchType"}, "samples": [], "files": []}
    assert_song_error(
        client.post(f"/submit/{STUDY}", data=json.dumps(payload)), 404, "analysis.type.not.found"
    )


def test_fifty_megabyte_body(client, unchanged):
    body = b'{"studyId": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    assert_song_error(client.post(f"/submit/{STUDY}", data=body), 413, "payload.too.large")
    assert_song_error(client.post("/schemas", data=body), 413, "payload.too.large")


def test_bad_tokens(app_catalog, payloads, unchanged):
    client = create_app(app_catalog).test_client()
    submit = f"/submit/{STUDY}"
    body = json.dumps(payloads.variant_call())
    forged = hs256(["song.WRITE"])[:-6] + "abcdef"
    assert_song_error(
        client.post(submit, data=body, headers=bearer(forged)), 401, "unauthorized.token"
    )
    expired = hs256(["song.WRITE"], exp=1_000_000_000)
    assert_song_error(
        client.post(submit, data=body, headers=bearer(expired)), 401, "unauthorized.token"
    )
    other = hs256(["PROGRAMDATA-OTHER.WRITE"])
    assert_song_error(client.post(submit, data=body, headers=bearer(other)), 403, "forbidden.token")
    none = hs256([])
    assert_song_error(client.post(submit, data=body, headers=bearer(none)), 403, "forbidden.token")
    assert_song_error(client.post(submit, data=body), 401, "unauthorized.token")
    assert_song_error(
        client.post(submit, data=body, headers=bearer("x" * 20_000)), 401, "unauthorized.token"
    )


def test_hostile_path_segments(client, analysis_id, unchanged):
    base = f"/studies/{STUDY}/analysis"
    for path in (
        f"{base}/%00",
        f"{base}/abc%00def",
        f"/studies/{STUDY}/files/%2e%2e",
        f"/studies/{STUDY}/files/..",
        f"/studies/{STUDY}/donors/" + "a" * 10_240,
        f"/export/analysis/{analysis_id}," + "b" * 10_240,
    ):
        response = client.get(path)
        assert response.status_code in (400, 404), path
        body = response.get_json()
        assert body["errorId"] in ("malformed.parameter", "not.found"), (path, body["errorId"])
    long_id = "a" * 10_240
    assert_song_error(client.get(f"{base}/{long_id}"), 400, "malformed.parameter")
    assert_song_error(client.put(f"{base}/publish/{long_id}"), 400, "malformed.parameter")
    assert_song_error(client.post(f"/studies/{long_id}/", json={}), 400, "malformed.parameter")
    assert_song_error(client.get(f"{base}/%00"), 400, "malformed.parameter")
    # `..` cannot climb out of a route: the SQL endpoint still cannot read files
    response = client.post("/sql", json={"query": "SELECT * FROM '../../../../etc/passwd'"})
    assert_song_error(response, 400, "illegal.query.parameter")
