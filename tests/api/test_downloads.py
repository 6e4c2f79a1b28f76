"""Score-style downloads from the local store: specs with signed URLs, HTTP ranges, the ping,
existence, and Score's access rules for open and controlled files; plus `storage verify|sync`
on the local store."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from api.app import create_app
from catalog import Catalog
from songlake.cli import main
from tests.api.conftest import assert_song_error, bearer, local_path, register, scoped_catalog
from tests.conftest import STUDY

TOKENS = {
    "reader": "score.READ",
    "shouty": "SCORE.read",
    "study-reader": f"PROGRAMDATA-{STUDY}.READ",
    "other-reader": "PROGRAMDATA-OTHER.READ",
    "lower-study": f"PROGRAMDATA-{STUDY.lower()}.READ",  # study ids are case-sensitive
    "lower-writer": f"programdata-{STUDY.lower()}.write",
    "writer": "score.WRITE",
}


@pytest.fixture
def cat(tmp_path: Path) -> Catalog:
    return scoped_catalog(tmp_path / "root", TOKENS)


@pytest.fixture
def client(cat: Catalog):
    return create_app(cat).test_client()


def test_open_file_spec_urls_and_ranges(cat, client, payloads) -> None:
    oid, content = register(cat, payloads, access="open")
    response = client.get(f"/download/{oid}?offset=0&length=-1")  # no token: open
    assert response.status_code == 200, response.get_json()
    spec = response.get_json()
    assert (spec["objectId"], spec["objectSize"]) == (oid, len(content))
    (part,) = spec["parts"]
    assert part["sourceMd5"] == spec["objectMd5"]
    assert "X-Amz-Date=" in part["url"] and "X-Amz-Expires=" in part["url"]

    whole = client.get(local_path(part["url"]))
    assert whole.status_code == 200 and whole.data == content
    ranged = client.get(local_path(part["url"]), headers={"Range": "bytes=3-9"})
    assert ranged.status_code == 206 and ranged.data == content[3:10]
    assert ranged.headers["Content-Range"] == f"bytes 3-9/{len(content)}"
    past = client.get(local_path(part["url"]), headers={"Range": f"bytes={len(content) + 5}-"})
    assert_song_error(past, 416, "requested.range.not.satisfiable")
    assert past.headers["Content-Range"] == f"bytes */{len(content)}"

    tampered = local_path(part["url"]).replace("X-Amz-Expires=", "X-Amz-Expires=9")
    assert_song_error(client.get(tampered), 403, "forbidden.token")


def test_ranged_and_external_specs(cat, client, payloads) -> None:
    oid, content = register(cat, payloads, access="open")
    spec = client.get(f"/download/{oid}?offset=2&length=5").get_json()
    assert (spec["objectSize"], spec["uploadId"]) == (5, oid)
    assert spec["parts"] == [
        {"partNumber": 1, "partSize": 5, "offset": 2, "url": spec["parts"][0]["url"], "md5": None}
    ]
    external = client.get(f"/download/{oid}?offset=0&length=-1&external=true").get_json()
    assert [(p["partNumber"], p["partSize"], p["offset"]) for p in external["parts"]] == [
        (1, -1, 0)
    ]
    past = client.get(f"/download/{oid}?offset={len(content) - 2}&length=5")
    assert_song_error(past, 500, "storage.range.exceeds.object")  # Score's answer
    assert_song_error(client.get(f"/download/{oid}?offset=-1&length=5"), 400, "malformed.parameter")
    tail = client.get(f"/download/{oid}?offset=3&length=-7").get_json()  # negative: to the end
    assert (tail["objectSize"], tail["parts"][0]["offset"]) == (len(content) - 3, 3)
    assert client.get(f"/download/{oid}?offset=0&length=-5").get_json()["uploadId"] == oid


def test_bad_object_ids(client) -> None:
    assert_song_error(
        client.get("/download/not-a-uuid?offset=0&length=-1"), 400, "malformed.parameter"
    )
    missing = str(uuid.uuid4())
    assert_song_error(
        client.get(f"/download/{missing}?offset=0&length=-1"), 404, "legacy.entity.not.found"
    )


def test_controlled_file_needs_a_read_scope(cat, client, payloads) -> None:
    oid, _ = register(cat, payloads)
    url = f"/download/{oid}?offset=0&length=-1"
    assert_song_error(client.get(url), 401, "unauthorized.token")
    assert_song_error(client.get(url, headers=bearer("nobody")), 401, "unauthorized.token")
    assert_song_error(client.get(url, headers=bearer("other-reader")), 403, "forbidden.token")
    assert_song_error(client.get(url, headers=bearer("writer")), 403, "forbidden.token")
    assert_song_error(client.get(url, headers=bearer("lower-study")), 403, "forbidden.token")
    for token in ("reader", "shouty", "study-reader"):
        assert client.get(url, headers=bearer(token)).status_code == 200, token


@pytest.mark.parametrize("state", ["UNPUBLISHED", "SUPPRESSED"])
def test_urls_only_for_published_analyses(cat, client, payloads, state) -> None:
    oid, content = register(cat, payloads, state=state)
    url = f"/download/{oid}?offset=0&length=-1"
    assert_song_error(client.get(url), 401, "unauthorized.token")  # access is checked first
    assert_song_error(client.get(url, headers=bearer("reader")), 400, "illegal.analysis.state")
    spec = client.get(url + "&exclude-urls=true", headers=bearer("reader")).get_json()
    assert spec["objectSize"] == len(content) and spec["parts"][0]["url"] is None


def test_ping_and_upload_existence(cat, client, payloads) -> None:
    url = client.get("/download/ping").get_data(as_text=True)
    assert client.get(local_path(url)).data.startswith(b"songlake sentinel")

    oid, _ = register(cat, payloads, state="UNPUBLISHED")
    assert_song_error(client.get(f"/upload/{oid}"), 401, "unauthorized.token")
    assert_song_error(
        client.get(f"/upload/{oid}", headers=bearer("reader")), 403, "forbidden.token"
    )
    assert_song_error(
        client.get(f"/upload/{oid}", headers=bearer("lower-writer")), 403, "forbidden.token"
    )
    assert client.get(f"/upload/{oid}", headers=bearer("writer")).get_json() is True
    cat.store.delete(oid)
    assert client.get(f"/upload/{oid}", headers=bearer("writer")).get_json() is False


# -- storage verify / sync on the local store ------------------------------------------------


def test_verify_and_sync_local(cat, payloads) -> None:
    oid, content = register(cat, payloads, access="open", state="UNPUBLISHED")
    assert cat.verify_storage(STUDY).ok
    blob = cat.settings.objects_dir / "data" / oid
    blob.write_bytes(bytes(reversed(content)))  # same size: only the bytes can tell
    assert cat.verify_storage().ok
    assert [f.kind for f in cat.verify_storage(rehash=True).findings] == ["mismatching.md5"]
    (cat.settings.objects_dir / "data" / f"{oid}.meta").unlink()
    assert [f.kind for f in cat.verify_storage().findings] == ["missing.meta"]

    runner = CliRunner()
    root = str(cat.settings.root)
    result = runner.invoke(main, ["--root", root, "storage", "verify", "--quiet"])
    assert result.exit_code == 1 and "1 missing.meta" in result.output, result.output
    result = runner.invoke(main, ["--root", root, "storage", "sync", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["uploaded"] == 1
    assert blob.read_bytes() == content
    result = runner.invoke(main, ["--root", root, "storage", "verify", "--rehash", "--quiet"])
    assert result.exit_code == 0, result.output


def test_sync_without_a_source_fails_clearly(cat, payloads) -> None:
    payload = payloads.variant_call()
    aid = cat.submit(payload, STUDY)  # registered without a source path
    report = cat.sync_storage()
    assert not report.ok and report.failed[0].analysis_id == aid
    assert "no source path was recorded at ingest" in report.failed[0].message
