"""Score's upload protocol, driven by score-client's own call sequence (re-enacted in
tests/api/conftest.py), against the local store and against S3 (moto's server): a 3-part
upload, an interrupted one resumed, a wrong part md5, cancel, overwrite of a published object,
a study-scoped token writing another study's object; then Score's download of the result."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.app import create_app
from catalog import Catalog, SubmitItem
from catalog.store.layout import MIN_PART_SIZE
from tests.api.conftest import (
    ClientInterrupted,
    ScoreClient,
    ScoreFailure,
    scoped_catalog,
    snapshot,
)
from tests.catalog.store.conftest import CREDENTIALS, MotoS3, moto_server
from tests.conftest import STUDY, Payloads

SIZE = 2 * MIN_PART_SIZE + 1000  # Score's part plan: 20 MiB, 20 MiB, 1000 bytes
TOKENS = {
    "writer": "score.WRITE",
    "shouty": "SCORE.write",
    "study-writer": f"PROGRAMDATA-{STUDY}.WRITE",
    "other-writer": "PROGRAMDATA-OTHER.WRITE",
    "reader": "score.READ",
}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with moto_server() as server:
        yield server


@pytest.fixture(scope="module")
def content() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture(params=["local", "s3"])
def cat(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Catalog:
    toml = ""
    if request.param == "s3":
        moto = request.getfixturevalue("moto")
        for key, value in CREDENTIALS.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
        bucket = f"score.{uuid.uuid4().hex[:12]}"
        moto.client().create_bucket(Bucket=bucket)
        toml = (
            f'object_store = "s3"\ns3_bucket = "{bucket}"\ns3_endpoint_url = "{moto.url}"\n'
            's3_region = "us-east-1"\ns3_retry_backoff = 0.01\ns3_max_attempts = 2\n'
        )
    return scoped_catalog(tmp_path / "root", TOKENS, toml)


def score_client(cat: Catalog, token: str | None, tmp_path: Path) -> ScoreClient:
    return ScoreClient(create_app(cat).test_client(), token, tmp_path / "client-state")


def registered(cat: Catalog, payloads: Payloads, content: bytes, tmp_path: Path):
    """An UNPUBLISHED analysis with one file of `content`, nothing stored yet."""
    payload = payloads.variant_call(files=[payloads.file("big.vcf.gz", content=content)])
    aid = cat.submit_batch([SubmitItem(payload, STUDY)])[0].analysis_id
    (f,) = cat.analysis_files(STUDY, aid)
    path = tmp_path / "big.vcf.gz"
    path.write_bytes(content)
    return aid, f["objectId"], f["fileMd5sum"], path


def test_three_part_upload_then_publish_and_download(cat, payloads, content, tmp_path) -> None:
    aid, oid, md5, path = registered(cat, payloads, content, tmp_path)
    client = score_client(cat, "study-writer", tmp_path)
    client.upload(oid, path, md5)
    assert client.parts_sent == [1, 2, 3]
    assert client.calls[:5] == [
        "GET /download/ping",
        f"GET /upload/{oid}",
        f"GET /upload/{oid}/status",
        f"POST /upload/{oid}/uploads",
        f"POST /upload/{oid}/parts",
    ]
    spec = cat.store.spec(oid)
    assert (spec.object_size, spec.object_md5) == (SIZE, md5)
    assert [p.source_md5 for p in spec.parts] == [
        hashlib.md5(content[p.offset : p.offset + p.part_size]).hexdigest() for p in spec.parts
    ]
    assert cat.verify_storage(STUDY, rehash=True).ok
    cat.publish(STUDY, aid)  # Song's storage check passes
    assert score_client(cat, "reader", tmp_path).download(oid) == content


def test_interrupted_upload_resumes_with_the_missing_part(cat, payloads, content, tmp_path):
    aid, oid, md5, path = registered(cat, payloads, content, tmp_path)
    first = score_client(cat, "writer", tmp_path)
    with pytest.raises(ClientInterrupted):
        first.upload(oid, path, md5, stop_after=2)
    assert first.parts_sent == [1, 2] and not cat.store.exists(oid)
    status = first.call("GET", f"/upload/{oid}/status", fileSize=SIZE)
    assert [p.get("sourceMd5") is not None for p in status["parts"]] == [True, True, False]
    again_urls = first.call("GET", f"/upload/{oid}/parts")  # the part URLs again
    assert again_urls["uploadId"] == status["uploadId"]
    assert all(p["url"] for p in again_urls["parts"])
    assert_refused(first, "POST", f"/upload/{oid}/recovery", 400, "upload.refused", fileSize=5)
    first.call("POST", f"/upload/{oid}/recovery", fileSize=SIZE)

    again = score_client(cat, "writer", tmp_path)
    again.upload(oid, path, md5)
    assert again.parts_sent == [3]
    assert cat.store.spec(oid).object_md5 == md5
    cat.publish(STUDY, aid)
    assert score_client(cat, None, tmp_path).download(oid) == content  # an open file


def test_wrong_part_md5_is_refused_at_finalize(cat, payloads, content, tmp_path) -> None:
    _, oid, md5, path = registered(cat, payloads, content, tmp_path)
    client = score_client(cat, "writer", tmp_path)
    with pytest.raises(ScoreFailure) as failure:
        client.upload(oid, path, md5, wrong_md5_part=2)
    assert failure.value.status == 409
    assert failure.value.body["errorId"] == "mismatching.storage.object.checksums"
    assert not cat.store.exists(oid) and cat.store.blob_spec(oid) is None


def test_cancel_drops_the_upload(cat, payloads, content, tmp_path) -> None:
    _, oid, md5, path = registered(cat, payloads, content, tmp_path)
    client = score_client(cat, "writer", tmp_path)
    with pytest.raises(ClientInterrupted):
        client.upload(oid, path, md5, stop_after=1)
    client.call("DELETE", f"/upload/{oid}")
    assert_refused(
        client, "GET", f"/upload/{oid}/status", 404, "upload.id.not.found", fileSize=SIZE
    )
    with pytest.raises(ClientInterrupted):
        client.upload(oid, path, md5, stop_after=1)
    study = score_client(cat, "study-writer", tmp_path)
    assert_refused(study, "POST", "/upload/cancel", 403, "forbidden.token")  # every study's
    client.call("POST", "/upload/cancel")
    assert_refused(
        client, "GET", f"/upload/{oid}/status", 404, "upload.id.not.found", fileSize=SIZE
    )
    assert not cat.store.exists(oid)


def test_published_object_is_never_overwritten(cat, payloads, content, tmp_path) -> None:
    aid, oid, md5, path = registered(cat, payloads, content, tmp_path)
    score_client(cat, "writer", tmp_path).upload(oid, path, md5)
    again = score_client(cat, "writer", tmp_path)
    with pytest.raises(ScoreFailure, match="already exists remotely"):
        again.upload(oid, path, md5)  # score-client without --force
    assert_refused(
        again, "POST", f"/upload/{oid}/uploads", 500, "object.overwrite.refused", fileSize=SIZE
    )
    cat.publish(STUDY, aid)
    before = cat.store.read_meta(oid)
    with pytest.raises(ScoreFailure) as failure:
        again.upload(oid, path, md5, force=True)
    assert failure.value.status == 400
    assert failure.value.body["errorId"] == "illegal.analysis.state"
    assert cat.store.read_meta(oid) == before


def test_scopes_are_exact_and_per_study(cat, payloads, content, tmp_path) -> None:
    _, oid, md5, path = registered(cat, payloads, content, tmp_path)
    before = snapshot(cat)
    for token, status, error in (
        (None, 401, "unauthorized.token"),
        ("other-writer", 403, "forbidden.token"),
        ("shouty", 403, "forbidden.token"),
        ("reader", 403, "forbidden.token"),
    ):
        client = score_client(cat, token, tmp_path)
        assert_refused(client, "POST", f"/upload/{oid}/uploads", status, error, fileSize=SIZE)
    writer = score_client(cat, "writer", tmp_path)
    assert_refused(
        writer,
        "POST",
        f"/upload/{oid}/uploads",
        409,
        "mismatching.storage.object.sizes",
        fileSize=SIZE - 1,
    )
    assert_refused(
        writer,
        "POST",
        f"/upload/{oid}/uploads",
        409,
        "mismatching.storage.object.checksums",
        fileSize=SIZE,
        md5="0" * 32,
    )
    missing = str(uuid.uuid4())
    assert_refused(
        writer, "POST", f"/upload/{missing}/uploads", 404, "legacy.entity.not.found", fileSize=1
    )
    assert_refused(
        writer, "GET", f"/upload/{oid}/status", 404, "upload.id.not.found", fileSize=SIZE
    )
    assert not cat.store.exists(oid) and cat.store.blob_spec(oid) is None
    assert snapshot(cat) == before  # no table was written


def assert_refused(client: ScoreClient, method: str, path: str, status: int, error: str, **params):
    with pytest.raises(ScoreFailure) as failure:
        client.call(method, path, **params)
    assert failure.value.status == status, failure.value.body
    assert failure.value.body["errorId"] == error, failure.value.body
