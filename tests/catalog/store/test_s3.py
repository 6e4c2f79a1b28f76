"""The S3 object store against moto's server on 127.0.0.1, through real boto3 calls: Score's
layout, multipart, resume, faults (endpoint down or dropping, bucket missing, access denied),
publish verification, verify/sync and presigned downloads."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog import Catalog, SubmitItem
from catalog.errors import Internal, StorageCheckFailed
from catalog.settings import Settings, load_settings
from catalog.store import s3 as s3module
from catalog.store.s3 import S3ObjectStore, bucket_for, multipart_etag
from catalog.write.lifecycle import verify_for_publish
from songlake.cli import main
from tests.catalog.store.conftest import CREDENTIALS, MotoS3, TcpProxy, moto_server
from tests.conftest import STUDY, Payloads

MIB = 1024 * 1024


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoS3]:
    with moto_server() as server:
        yield server


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials through the standard chain (environment), no user profile files."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def s3(moto: MotoS3):
    return moto.client()


@pytest.fixture
def bucket(s3) -> str:
    name = f"score.{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(moto: MotoS3) -> Iterator[TcpProxy]:
    p = TcpProxy(moto.port)
    yield p
    p.close()


def make_store(url: str, bucket: str, **kw) -> S3ObjectStore:
    kw.setdefault("retry_backoff", 0.01)
    kw.setdefault("max_attempts", 3)
    kw.setdefault("connect_timeout", 2)
    kw.setdefault("read_timeout", 5)
    return S3ObjectStore(bucket=bucket, endpoint_url=url, region="us-east-1", **kw)


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"src-{uuid.uuid4().hex}.bin"
    path.write_bytes(data)
    return path


def keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def get(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


# -- layout ----------------------------------------------------------------------------------------


def test_score_layout_meta_and_md5chksum(moto, s3, bucket, tmp_path) -> None:
    store = make_store(moto.url, bucket)
    data = b"ACGT" * 1000
    oid = str(uuid.uuid4())
    spec = store.put_file(oid, write(tmp_path, data), expected_md5=md5(data))

    assert keys(s3, bucket) == sorted([f"data/{oid}", f"data/{oid}.meta", "data/heliograph"])
    assert get(s3, bucket, f"data/{oid}") == data
    meta = json.loads(get(s3, bucket, f"data/{oid}.meta"))
    assert list(meta) == ["objectKey", "objectId", "uploadId", "parts", "objectSize", "objectMd5"]
    assert meta == {
        "objectKey": f"data/{oid}",
        "objectId": oid,
        "uploadId": oid,
        "parts": [
            {
                "partNumber": 1,
                "partSize": len(data),
                "offset": 0,
                "url": None,
                "md5": None,
                "sourceMd5": md5(data),
            }
        ],
        "objectSize": len(data),
        "objectMd5": md5(data),
    }
    head = s3.head_object(Bucket=bucket, Key=f"data/{oid}")
    assert head["Metadata"]["md5chksum"] == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert spec.object_md5 == md5(data) and store.exists(oid)
    assert store.ping()


def test_multipart_parts_resume_free_idempotence(moto, s3, bucket, tmp_path, proxy) -> None:
    store = make_store(proxy.url, bucket, multipart_threshold=MIB)
    data = os.urandom(45 * MIB)
    path = write(tmp_path, data)
    oid = str(uuid.uuid4())
    spec = store.put_file(oid, path, expected_md5=md5(data), expected_size=len(data))

    meta = json.loads(get(s3, bucket, f"data/{oid}.meta"))
    sizes = [20 * MIB, 20 * MIB, 5 * MIB]  # Score's plan: 20 MiB floor, remainder last
    assert [p["partSize"] for p in meta["parts"]] == sizes
    assert [p["offset"] for p in meta["parts"]] == [0, 20 * MIB, 40 * MIB]
    assert [p["sourceMd5"] for p in meta["parts"]] == [
        md5(data[0 : 20 * MIB]),
        md5(data[20 * MIB : 40 * MIB]),
        md5(data[40 * MIB :]),
    ]
    assert meta["objectMd5"] == md5(data)
    head = s3.head_object(Bucket=bucket, Key=f"data/{oid}")
    assert head["ETag"].strip('"') == multipart_etag(spec.parts)
    assert head["ContentLength"] == len(data)

    before = proxy.bytes_up
    assert store.put_file(oid, path, expected_md5=md5(data)) == spec
    assert proxy.bytes_up - before < 64 * 1024  # already stored: no byte sent again
    with store.open_range(oid, 20 * MIB - 3, 6) as part:
        assert part.read() == data[20 * MIB - 3 : 20 * MIB + 3]


def test_data_dir_and_bucket_partitioning(moto, s3, bucket, tmp_path) -> None:
    for n in range(4):
        s3.create_bucket(Bucket=f"{bucket}.{n}")
    store = make_store(moto.url, bucket, data_dir="objs", bucket_pool=4, bucket_key_length=2)
    oid = "5be58fbb-775b-5259-bbbd-555e07fbdf24"
    part = f"{bucket}.{int('5b', 16) % 4}"
    assert bucket_for(bucket, oid, 4, 2) == part
    store.put_file(oid, write(tmp_path, b"partitioned"))
    assert keys(s3, part) == [f"objs/{oid}", f"objs/{oid}.meta"]
    assert keys(s3, bucket) == ["objs/heliograph"]  # the sentinel stays in the base bucket
    assert json.loads(get(s3, part, f"objs/{oid}.meta"))["objectKey"] == f"objs/{oid}"

    # pre-partitioning data in the base buckets is still found (Score's "relocated" fallback)
    legacy = "00000000-0000-4000-8000-000000000001"
    plain = make_store(moto.url, bucket, data_dir="objs")
    plain.put_file(legacy, write(tmp_path, b"legacy bytes"))
    assert store.exists(legacy)
    with store.open_range(legacy) as f:
        assert f.read() == b"legacy bytes"
    assert set(store.inventory()) == {oid, legacy}


def test_inventory_of_a_large_store_is_listed_by_prefix(s3, bucket, tmp_path, moto) -> None:
    """Past the first page, a bucket is listed by the objectIds' first two hex digits: every
    object is still found, with its size, and a missing .meta still shows."""
    store = make_store(moto.url, bucket)
    store.first_page = 3  # as if the bucket held more than 1,000 keys
    ids = [f"{a}{b}000000-0000-4000-8000-00000000000{a}" for a, b in ("00", "0f", "a1", "ff")]
    for n, oid in enumerate(ids):
        store.put_file(oid, write(tmp_path, b"x" * (n + 1)))
    s3.delete_object(Bucket=bucket, Key=f"data/{ids[2]}.meta")
    found = store.inventory()
    assert set(found) == set(ids)
    assert [found[oid].blob_size for oid in ids] == [1, 2, 3, 4]
    assert [found[oid].has_meta for oid in ids] == [True, True, False, True]


def test_a_prefix_listing_longer_than_one_page_is_followed(
    s3, bucket, tmp_path, moto, monkeypatch
) -> None:
    """AWS answers at most 1,000 keys a page: the listing of one prefix follows its continuation
    tokens (each page asking for the same page size) until every key is found."""
    monkeypatch.setattr(s3module, "LIST_MAX_KEYS", 2)  # moto then pages as AWS does past 1,000
    store = make_store(moto.url, bucket)
    store.first_page = 3
    ids = [f"0{n}000000-0000-4000-8000-000000000000" for n in range(5)]
    for oid in ids:
        store.put_file(oid, write(tmp_path, b"y"))
    found = store.inventory()
    assert sorted(found) == ids
    assert all(found[oid].has_meta and found[oid].blob_size == 1 for oid in ids)


# -- faults ----------------------------------------------------------------------------------------


def test_endpoint_down_at_start(s3, bucket, tmp_path, proxy) -> None:
    proxy.cut()
    store = make_store(proxy.url, bucket)
    oid = str(uuid.uuid4())
    with pytest.raises(Internal) as err:
        store.put_file(oid, write(tmp_path, b"x" * 100))
    assert err.value.error_id == "storage.service.error"
    assert "unreachable" in err.value.message and proxy.url in err.value.message
    assert f"data/{oid}.meta" in err.value.message
    assert proxy.refused >= 3  # retried
    assert keys(s3, bucket) == []


def test_endpoint_drops_mid_upload_then_resumes(s3, bucket, tmp_path, proxy) -> None:
    store = make_store(proxy.url, bucket, multipart_threshold=MIB, concurrency=1)
    data = os.urandom(45 * MIB)
    path = write(tmp_path, data)
    oid = str(uuid.uuid4())
    proxy.cut_after(30 * MIB)  # part 1 is in, part 2 breaks off, then nothing answers
    with pytest.raises(Internal) as err:
        store.put_file(oid, path, expected_md5=md5(data))
    assert err.value.error_id == "storage.service.error"
    assert f"data/{oid}.meta" not in keys(s3, bucket)  # never a .meta without complete bytes
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [u["Key"] for u in uploads] == [f"data/{oid}"]

    proxy.restore()
    before = proxy.bytes_up
    store.put_file(oid, path, expected_md5=md5(data))
    assert proxy.bytes_up - before < 27 * MIB  # parts 2 and 3 only: part 1 was resumed
    assert md5(get(s3, bucket, f"data/{oid}")) == md5(data)
    assert json.loads(get(s3, bucket, f"data/{oid}.meta"))["objectMd5"] == md5(data)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_a_dropped_connection_is_retried(s3, bucket, tmp_path, proxy) -> None:
    store = make_store(proxy.url, bucket)
    data = os.urandom(8 * MIB)
    oid = str(uuid.uuid4())
    proxy.cut_after(4 * MIB, stay_down=False)
    store.put_file(oid, write(tmp_path, data), expected_md5=md5(data))
    assert get(s3, bucket, f"data/{oid}") == data


def test_wrong_md5_changes_nothing(moto, s3, bucket, tmp_path) -> None:
    store = make_store(moto.url, bucket, multipart_threshold=MIB)
    oid = str(uuid.uuid4())
    old = b"old bytes"
    store.put_file(oid, write(tmp_path, old))
    data = os.urandom(21 * MIB)
    with pytest.raises(StorageCheckFailed) as err:
        store.put_file(oid, write(tmp_path, data), expected_md5="0" * 32)
    assert err.value.error_id == "mismatching.storage.object.checksums"
    assert get(s3, bucket, f"data/{oid}") == old and store.exists(oid)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)  # parts dropped


def test_missing_bucket_names_bucket_and_key(moto, tmp_path) -> None:
    store = make_store(moto.url, "no.such.bucket")
    oid = str(uuid.uuid4())
    with pytest.raises(Internal) as err:
        store.exists(oid)
    assert err.value.error_id == "storage.service.error"
    assert "bucket 'no.such.bucket' does not exist" in err.value.message
    assert f"s3://no.such.bucket/data/{oid}.meta" in err.value.message
    with pytest.raises(Internal, match="no.such.bucket"):
        store.put_file(oid, write(tmp_path, b"x"))


def test_access_denied_names_bucket_and_key(moto, bucket) -> None:
    store = make_store(moto.url, bucket)
    oid = str(uuid.uuid4())
    moto.require_auth(True)
    try:
        with pytest.raises(Internal) as err:
            store.exists(oid)
    finally:
        moto.require_auth(False)
    assert err.value.error_id == "storage.service.error"
    assert f"access to the bucket '{bucket}' was denied" in err.value.message
    assert f"data/{oid}.meta" in err.value.message


# -- the catalog on S3: publish, verify, sync ----------------------------------------------------


@pytest.fixture
def s3_settings(tmp_path: Path, moto: MotoS3, bucket: str) -> Settings:
    root = tmp_path / "root"
    root.mkdir()
    (root / "songlake.toml").write_text(
        f'object_store = "s3"\ns3_bucket = "{bucket}"\ns3_endpoint_url = "{moto.url}"\n'
        's3_region = "us-east-1"\ns3_retry_backoff = 0.01\ns3_max_attempts = 2\n'
    )
    return load_settings(root)


@pytest.fixture
def s3_catalog(s3_settings: Settings) -> Catalog:
    cat = Catalog.init(s3_settings)
    cat.create_study({"studyId": STUDY})
    assert isinstance(cat.store, S3ObjectStore)
    return cat


def submit_with_sources(catalog: Catalog, payloads: Payloads, n_files: int = 2) -> tuple[str, dict]:
    payload = payloads.variant_call(files=[payloads.file(f"f{i}.vcf.gz") for i in range(n_files)])
    folder = payloads.write_files(payload)
    sources = {f["fileName"]: str(folder / f["fileName"]) for f in payload["files"]}
    result = catalog.submit_batch([SubmitItem(payload, STUDY, source_paths=sources)])[0]
    assert result.ok, result.error
    return result.analysis_id, payload


def test_publish_verify_sync_on_s3(s3_catalog, s3, bucket, payloads) -> None:
    aid, payload = submit_with_sources(s3_catalog, payloads)
    files = s3_catalog.analysis_files(STUDY, aid)
    with pytest.raises(StorageCheckFailed) as err:
        s3_catalog.publish(STUDY, aid)
    assert err.value.error_id == "missing.storage.objects"
    report = s3_catalog.verify_storage()
    assert report.counts() == {"missing": 2} and not report.ok

    synced = s3_catalog.sync_storage()
    assert synced.ok and sorted(synced.uploaded) == sorted(f["objectId"] for f in files)
    for f in files:  # where a real Score server looks for them
        meta = json.loads(get(s3, bucket, f"data/{f['objectId']}.meta"))
        assert (meta["objectSize"], meta["objectMd5"]) == (f["fileSize"], f["fileMd5sum"])
    assert s3_catalog.verify_storage(rehash=True).ok
    s3_catalog.publish(STUDY, aid)
    assert s3_catalog.get_analysis(STUDY, aid)["analysisState"] == "PUBLISHED"


def test_corrupted_object_found_by_verify_and_refused_by_publish(s3_catalog, s3, bucket, payloads):
    aid, _ = submit_with_sources(s3_catalog, payloads)
    s3_catalog.sync_storage()
    first, second = (f["objectId"] for f in s3_catalog.analysis_files(STUDY, aid))
    body = get(s3, bucket, f"data/{first}")
    s3.put_object(Bucket=bucket, Key=f"data/{first}", Body=bytes(reversed(body)))  # same size
    s3.put_object(Bucket=bucket, Key=f"data/{second}", Body=body + b"!")

    report = s3_catalog.verify_storage()
    assert {(f.object_id, f.kind) for f in report.findings} == {
        (first, "mismatching.blob"),
        (second, "mismatching.size"),
    }
    with pytest.raises(StorageCheckFailed) as err:
        s3_catalog.publish(STUDY, aid)
    assert err.value.error_id in (
        "mismatching.storage.object.checksums",
        "mismatching.storage.object.sizes",
    )
    assert s3_catalog.get_analysis(STUDY, aid)["analysisState"] == "UNPUBLISHED"
    assert sorted(s3_catalog.sync_storage().uploaded) == sorted([first, second])
    assert s3_catalog.verify_storage(rehash=True).ok


def test_meta_deleted_by_hand(s3_catalog, s3, bucket, payloads) -> None:
    aid, _ = submit_with_sources(s3_catalog, payloads, n_files=1)
    s3_catalog.sync_storage()
    (oid,) = (f["objectId"] for f in s3_catalog.analysis_files(STUDY, aid))
    s3.delete_object(Bucket=bucket, Key=f"data/{oid}.meta")

    assert not s3_catalog.store.exists(oid)
    assert [f.kind for f in s3_catalog.verify_storage().findings] == ["missing.meta"]
    with pytest.raises(StorageCheckFailed) as err:
        s3_catalog.publish(STUDY, aid)
    assert err.value.error_id == "missing.storage.objects"
    assert s3_catalog.sync_storage().uploaded == [oid]
    s3_catalog.publish(STUDY, aid)


def test_publish_checks_in_songs_order(moto, bucket, tmp_path) -> None:
    store = make_store(moto.url, bucket)
    aid = str(uuid.uuid4())
    data = b"some bytes"
    oid = str(uuid.uuid4())
    store.put_file(oid, write(tmp_path, data))
    good = {"objectId": oid, "fileSize": len(data), "fileMd5sum": md5(data)}
    verify_for_publish(store, aid, [good])
    with pytest.raises(StorageCheckFailed, match="mismatching object sizes") as err:
        verify_for_publish(store, aid, [dict(good, fileSize=len(data) + 1)])
    assert err.value.error_id == "mismatching.storage.object.sizes"
    with pytest.raises(StorageCheckFailed) as err:
        verify_for_publish(store, aid, [dict(good, fileMd5sum=md5(data).upper())])
    assert err.value.error_id == "mismatching.storage.object.checksums"  # case-sensitive, as Song

    empty = str(uuid.uuid4())
    store.put_file(empty, write(tmp_path, b""))
    with pytest.raises(Internal) as err:
        verify_for_publish(store, aid, [{"objectId": empty, "fileSize": 0, "fileMd5sum": md5(b"")}])
    assert err.value.error_id == "invalid.storage.download.response"  # objectSize must be > 0


def test_cli_storage_verify_and_sync_on_s3(s3_catalog, s3, bucket, payloads) -> None:
    aid, _ = submit_with_sources(s3_catalog, payloads)
    root = str(s3_catalog.settings.root)
    runner = CliRunner()
    result = runner.invoke(main, ["--root", root, "storage", "verify", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "2 missing" in result.output
    result = runner.invoke(main, ["--root", root, "storage", "sync", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "2 uploaded, 0 failed" in result.output
    result = runner.invoke(main, ["--root", root, "storage", "verify", "--rehash", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["checked"], report["ok"], report["problems"]) == (2, 2, {})
    assert Catalog(s3_catalog.settings).store.exists(
        s3_catalog.analysis_files(STUDY, aid)[0]["objectId"]
    )


# -- downloads -------------------------------------------------------------------------------------


def test_presigned_download_urls_with_ranges(s3_catalog, payloads) -> None:
    from api.app import create_app

    aid, payload = submit_with_sources(s3_catalog, payloads, n_files=1)
    s3_catalog.sync_storage()
    s3_catalog.publish(STUDY, aid)
    (f,) = s3_catalog.analysis_files(STUDY, aid)
    content = payloads.contents[f["fileMd5sum"]]
    client = create_app(s3_catalog).test_client()

    spec = client.get(f"/download/{f['objectId']}?offset=0&length=-1").get_json()
    (part,) = spec["parts"]
    assert part["url"].startswith(s3_catalog.settings.s3_endpoint_url)
    req = urllib.request.Request(part["url"], headers={"Range": "bytes=2-5"})
    with urllib.request.urlopen(req, timeout=10) as response:
        assert response.status == 206 and response.read() == content[2:6]

    ping = client.get("/download/ping").get_data(as_text=True)
    with urllib.request.urlopen(ping, timeout=10) as response:
        assert response.read().startswith(b"songlake sentinel")


def test_a_file_dropped_into_the_inbox_lands_in_s3(s3_catalog, s3, bucket, payloads) -> None:
    """The issue's 'done when': a catalog configured for S3, a sidecar dropped into its inbox; the
    watcher's upload processes (which open the S3 store from the settings and the environment's
    credentials) put each file at data/<objectId> with a correct .meta, and publish passes."""
    from dataclasses import replace

    from tests.watcher.conftest import drop, wait_receipt
    from watcher import Watcher

    settings = replace(s3_catalog.settings, watch_linger=0.01, refresh_interval=0.1)
    w = Watcher(s3_catalog, settings).start()
    try:
        assert len(w._upload_pool.pids()) == settings.watch_upload_processes > 0
        payload = payloads.variant_call()
        sidecar = drop(settings.inbox_dir / STUDY, "s3", payload, payloads.contents)
        receipt = wait_receipt(sidecar, timeout=30)
    finally:
        w.stop()
    stored = keys(s3, bucket)
    for f in receipt["files"]:
        oid = f["objectId"]
        assert f["upload"]["status"] == "uploaded"
        assert {f"data/{oid}", f"data/{oid}.meta"} <= set(stored)
        meta = json.loads(s3.get_object(Bucket=bucket, Key=f"data/{oid}.meta")["Body"].read())
        assert meta["objectId"] == oid and meta["objectKey"] == f"data/{oid}"
        assert meta["objectMd5"] == f["fileMd5sum"] and meta["objectSize"] == f["fileSize"]
        head = s3.head_object(Bucket=bucket, Key=f"data/{oid}")
        digest = base64.b64decode(head["Metadata"]["md5chksum"]).hex()
        assert digest == f["fileMd5sum"] and head["ContentLength"] == f["fileSize"]
    s3_catalog.publish(STUDY, receipt["analysisId"])
    assert s3_catalog.get_analysis(STUDY, receipt["analysisId"])["analysisState"] == "PUBLISHED"
