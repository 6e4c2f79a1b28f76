"""GA4GH DRS 1.4 over the catalog, every answer checked against the specification's shapes
(written below as JSON Schemas from the DRS 1.4.0 field list: DrsObject, AccessURL, Error and
service-info); plus the signed URLs' lifecycle, forwarded headers and Score's download edge
cases (missing .meta, external, /profile, /listing)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from api.app import create_app
from catalog import Catalog
from tests.api.conftest import assert_song_error, bearer, local_path, register, scoped_catalog
from tests.conftest import STUDY

CHECKSUM = {
    "type": "object",
    "required": ["checksum", "type"],
    "properties": {"checksum": {"type": "string"}, "type": {"type": "string"}},
}
ACCESS_URL = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {"type": "string"},
        "headers": {"type": "array", "items": {"type": "string"}},
    },
}
ACCESS_METHOD = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"enum": ["s3", "gs", "ftp", "gsiftp", "globus", "htsget", "https", "file"]},
        "access_url": ACCESS_URL,
        "access_id": {"type": "string"},
        "region": {"type": "string"},
        "cloud": {"type": "string"},
        "available": {"type": "boolean"},
    },
    "anyOf": [{"required": ["access_url"]}, {"required": ["access_id"]}],
}
DRS_OBJECT = {
    "type": "object",
    "required": ["id", "self_uri", "size", "created_time", "checksums"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "self_uri": {"type": "string", "pattern": "^drs://"},
        "size": {"type": "integer", "minimum": 0},
        "created_time": {"type": "string", "format": "date-time"},
        "updated_time": {"type": "string", "format": "date-time"},
        "version": {"type": "string"},
        "mime_type": {"type": "string"},
        "checksums": {"type": "array", "minItems": 1, "items": CHECKSUM},
        "access_methods": {"type": "array", "minItems": 1, "items": ACCESS_METHOD},
        "description": {"type": "string"},
        "aliases": {"type": "array", "items": {"type": "string"}},
    },
}
ERROR = {
    "type": "object",
    "required": ["msg", "status_code"],
    "properties": {"msg": {"type": "string"}, "status_code": {"type": "integer"}},
}
SERVICE_INFO = {
    "type": "object",
    "required": ["id", "name", "type", "organization", "version"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "type": {
            "type": "object",
            "required": ["group", "artifact", "version"],
            "properties": {
                "group": {"type": "string"},
                "artifact": {"type": "string"},
                "version": {"type": "string"},
            },
        },
        "description": {"type": "string"},
        "organization": {
            "type": "object",
            "required": ["name", "url"],
            "properties": {"name": {"type": "string"}, "url": {"type": "string"}},
        },
        "version": {"type": "string"},
    },
}
DRS = "/ga4gh/drs/v1"
CHECKER = jsonschema.FormatChecker()
TOKENS = {
    "reader": "score.READ",
    "shouty": "SCORE.read",
    "study-reader": f"PROGRAMDATA-{STUDY}.READ",
    "other-reader": "PROGRAMDATA-OTHER.READ",
}


def valid(response, schema, status: int = 200) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    jsonschema.validate(body, schema, format_checker=CHECKER)
    if schema is ERROR:
        assert body["status_code"] == status
    return body


@pytest.fixture
def cat(tmp_path: Path) -> Catalog:
    return scoped_catalog(tmp_path / "root", TOKENS, 'trusted_proxies = "127.0.0.1, 10.0.0.0/8"\n')


@pytest.fixture
def client(cat: Catalog):
    return create_app(cat).test_client()


def test_service_info(client) -> None:
    info = valid(client.get(f"{DRS}/service-info"), SERVICE_INFO)
    assert info["type"] == {"group": "org.ga4gh", "artifact": "drs", "version": "1.4.0"}


def test_published_open_object_and_its_access_url(cat, client, payloads) -> None:
    oid, content = register(cat, payloads, access="open")
    obj = valid(client.get(f"{DRS}/objects/{oid}"), DRS_OBJECT)
    assert obj["id"] == oid and obj["self_uri"] == f"drs://localhost/{oid}"
    assert obj["size"] == len(content)
    (f,) = [f for f in cat.analysis_files(STUDY, cat.model.files[oid].analysis_id)]
    assert obj["checksums"] == [{"checksum": f["fileMd5sum"], "type": "md5"}]
    assert valid(client.post(f"{DRS}/objects/{oid}", json={"passports": []}), DRS_OBJECT) == obj
    (method,) = obj["access_methods"]
    url = valid(client.get(f"{DRS}/objects/{oid}/access/{method['access_id']}"), ACCESS_URL)
    assert client.get(local_path(url["url"])).data == content
    valid(client.get(f"{DRS}/objects/{oid}/access/gs"), ERROR, 404)
    valid(client.get(f"{DRS}/objects/not-an-id"), ERROR, 404)


def test_controlled_object_needs_a_read_scope(cat, client, payloads) -> None:
    oid, _ = register(cat, payloads, access="controlled")
    valid(client.get(f"{DRS}/objects/{oid}"), ERROR, 401)
    valid(client.get(f"{DRS}/objects/{oid}/access/https"), ERROR, 401)
    valid(client.get(f"{DRS}/objects/{oid}", headers=bearer("other-reader")), ERROR, 403)
    valid(client.get(f"{DRS}/objects/{oid}", headers=bearer("shouty")), ERROR, 403)  # exact
    for token in ("reader", "study-reader"):
        valid(client.get(f"{DRS}/objects/{oid}", headers=bearer(token)), DRS_OBJECT)
        valid(client.get(f"{DRS}/objects/{oid}/access/https", headers=bearer(token)), ACCESS_URL)


def test_unpublished_object_only_with_the_study_scope(cat, client, payloads) -> None:
    oid, _ = register(cat, payloads, access="open", state="UNPUBLISHED")
    valid(client.get(f"{DRS}/objects/{oid}"), ERROR, 404)
    valid(client.get(f"{DRS}/objects/{oid}", headers=bearer("other-reader")), ERROR, 404)
    valid(client.get(f"{DRS}/objects/{oid}", headers=bearer("study-reader")), DRS_OBJECT)


def test_suppressed_object_is_gone(cat, client, payloads) -> None:
    oid, _ = register(cat, payloads, access="open", state="SUPPRESSED")
    valid(client.get(f"{DRS}/objects/{oid}"), ERROR, 404)
    valid(client.get(f"{DRS}/objects/{oid}", headers=bearer("reader")), ERROR, 404)


def test_signed_url_refused_after_unpublish_and_suppress(cat, client, payloads) -> None:
    oid, content = register(cat, payloads, access="open")
    spec = client.get(f"/download/{oid}?offset=0&length=-1").get_json()
    url = local_path(spec["parts"][0]["url"])
    drs_url = local_path(client.get(f"{DRS}/objects/{oid}/access/https").get_json()["url"])
    assert client.get(url).data == content
    aid = cat.model.files[oid].analysis_id
    cat.unpublish(STUDY, aid)
    assert_song_error(client.get(url), 403, "forbidden.token")
    assert_song_error(client.get(drs_url), 403, "forbidden.token")
    cat.publish(STUDY, aid)
    assert client.get(url).data == content  # the state it was signed for, again
    cat.suppress(STUDY, aid)
    assert_song_error(client.get(url), 403, "forbidden.token")


def test_forwarded_headers_only_from_trusted_proxies(cat, client, payloads) -> None:
    oid, _ = register(cat, payloads, access="open")
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "data.example.org",
        "X-Forwarded-Prefix": "/song",
    }
    for remote, expected in (
        ("10.1.2.3", "https://data.example.org/song/objects/data/"),
        ("192.0.2.7", "http://localhost/objects/data/"),
    ):
        spec = client.get(
            f"/download/{oid}?offset=0&length=-1",
            headers=forwarded,
            environ_base={"REMOTE_ADDR": remote},
        ).get_json()
        assert spec["parts"][0]["url"].startswith(expected), (remote, spec["parts"][0]["url"])
    obj = client.get(
        f"{DRS}/objects/{oid}", headers=forwarded, environ_base={"REMOTE_ADDR": "10.1.2.3"}
    ).get_json()
    assert obj["self_uri"] == f"drs://data.example.org/{oid}"


def test_missing_meta_falls_back_to_the_blob(cat, client, payloads) -> None:
    oid, content = register(cat, payloads, access="open")
    (cat.settings.objects_dir / "data" / f"{oid}.meta").unlink()
    spec = client.get(f"/download/{oid}?offset=0&length=-1").get_json()
    assert (spec["objectSize"], spec["objectMd5"], spec["uploadId"]) == (len(content), None, oid)
    assert client.get(local_path(spec["parts"][0]["url"])).data == content


def test_external_profile_and_listing(cat, client, payloads) -> None:
    oid, content = register(cat, payloads, access="open")
    external = client.get(f"/download/{oid}?offset=0&length=7&external=true").get_json()
    assert external["objectSize"] == 7  # Score echoes the length asked for
    assert client.get("/profile").get_data(as_text=True) == "s3"
    assert_song_error(client.get("/listing"), 401, "unauthorized.token")
    (entry,) = client.get("/listing", headers=bearer("reader")).get_json()
    assert (entry["id"], entry["size"]) == (oid, len(content)) and entry["lastModified"] > 0
