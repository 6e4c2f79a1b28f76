"""Score-layout local object store and Song's publish-time storage checks."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest

from catalog.errors import BadRequest, Internal, NotFound, StorageCheckFailed
from catalog.store import LocalObjectStore, ObjectSpec, Part, PutRequest, part_plan
from catalog.store.hashing import md5_file
from catalog.store.layout import MIN_PART_SIZE
from catalog.store.local import GROUP_MAX_BYTES
from catalog.write.lifecycle import verify_for_publish

MIB = 1024 * 1024
AID = "a1b2c3d4-0000-4000-8000-000000000001"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def oid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


def make_file(tmp_path: Path, data: bytes, name: str | None = None) -> Path:
    p = tmp_path / (name or f"src-{uuid.uuid4().hex}.bin")
    p.write_bytes(data)
    return p


def data_dir(store: LocalObjectStore) -> Path:
    return store.root / "data"


def file_entry(object_id: str, data: bytes, **overrides) -> dict:
    entry = {"objectId": object_id, "fileSize": len(data), "fileMd5sum": md5(data)}
    entry.update(overrides)
    return entry


def rewrite_meta(store: LocalObjectStore, object_id: str, **changes) -> None:
    meta = data_dir(store) / f"{object_id}.meta"
    doc = json.loads(meta.read_text())
    doc.update(changes)
    meta.write_text(json.dumps(doc))


# -- layout ---------------------------------------------------------------------------------------


def test_layout_and_meta_json_exactly(store: LocalObjectStore, tmp_path: Path) -> None:
    data = b"ACGT" * 250
    object_id = oid()
    spec = store.put_file(object_id, make_file(tmp_path, data))

    names = sorted(p.name for p in data_dir(store).iterdir())
    assert names == sorted(["heliograph", object_id, f"{object_id}.meta"])
    assert (data_dir(store) / object_id).read_bytes() == data

    raw = (data_dir(store) / f"{object_id}.meta").read_text()
    doc = json.loads(raw)
    assert list(doc) == ["objectKey", "objectId", "uploadId", "parts", "objectSize", "objectMd5"]
    assert doc == {
        "objectKey": f"data/{object_id}",
        "objectId": object_id,
        "uploadId": object_id,
        "parts": [
            {
                "partNumber": 1,
                "partSize": 1000,
                "offset": 0,
                "url": None,
                "md5": None,
                "sourceMd5": md5(data),
            }
        ],
        "objectSize": 1000,
        "objectMd5": md5(data),
    }
    assert spec.to_dict() == doc
    assert store.spec(object_id) == spec
    assert store.exists(object_id)
    assert list(store.list_object_ids()) == [object_id]


def test_sentinel_ping_describe(store: LocalObjectStore) -> None:
    sentinel = data_dir(store) / "heliograph"
    assert sentinel.is_file() and sentinel.read_bytes()
    assert store.ping()
    assert str(store.root) in store.describe()
    LocalObjectStore(store.root)  # re-opening keeps everything
    assert store.ping()
    sentinel.unlink()
    assert not store.ping()


def test_spec_json_roundtrip_tolerates_unknown_fields() -> None:
    object_id = oid()
    doc = {
        "objectKey": f"data/{object_id}",
        "objectId": object_id,
        "uploadId": "real-multipart-upload-id",
        "parts": [
            {"partNumber": 2, "partSize": 5, "offset": 20971520, "url": "http://x", "md5": None},
            {"partNumber": 1, "partSize": 20971520, "offset": 0, "sourceMd5": "ab" * 16},
        ],
        "objectSize": 20971525,
        "objectMd5": "cd" * 16,
        "relocated": False,
    }
    spec = ObjectSpec.from_json(json.dumps(doc))
    assert [p.part_number for p in spec.parts] == [1, 2]
    assert spec.parts[0].source_md5 == "ab" * 16 and spec.parts[1].source_md5 is None
    out = json.loads(spec.to_json())
    assert out["uploadId"] == "real-multipart-upload-id"
    assert "relocated" not in out and "sourceMd5" not in out["parts"][1]
    assert out["parts"][1]["url"] is None
    assert ObjectSpec.from_json(out) == spec


# -- part plan ------------------------------------------------------------------------------------


def test_part_plan_sizes() -> None:
    assert part_plan(0) == []
    assert part_plan(1) == [Part(1, 1, 0)]
    assert part_plan(20 * MIB) == [Part(1, 20 * MIB, 0)]
    assert part_plan(20 * MIB + 1) == [Part(1, 20 * MIB, 0), Part(2, 1, 20 * MIB)]
    assert part_plan(45 * MIB, part_size=1) == part_plan(45 * MIB)  # 20 MiB floor
    assert [p.part_size for p in part_plan(100 * MIB, part_size=64 * MIB)] == [64 * MIB, 36 * MIB]


def test_part_plan_huge_file_stays_within_10000_parts() -> None:
    size = 300_000_000_000
    plan = part_plan(size)
    assert len(plan) <= 10_000
    assert plan[0].part_size == max(MIN_PART_SIZE, size // 10_000 + 1)
    assert sum(p.part_size for p in plan) == size
    offset = 0
    for number, part in enumerate(plan, start=1):
        assert part.part_number == number and part.offset == offset
        offset += part.part_size


def test_multi_part_file_source_md5_per_range(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects", part_md5=True)
    data = b"".join(os.urandom(MIB) for _ in range(45)) + b"tail"
    src = make_file(tmp_path, data)
    object_id = oid()
    spec = store.put_file(object_id, src, expected_md5=md5(data), expected_size=len(data))

    assert spec.object_size == len(data)
    assert spec.object_md5 == md5(data) == md5_file(src)[0]
    assert [(p.part_number, p.offset, p.part_size) for p in spec.parts] == [
        (1, 0, 20 * MIB),
        (2, 20 * MIB, 20 * MIB),
        (3, 40 * MIB, 5 * MIB + 4),
    ]
    for part in spec.parts:
        assert part.source_md5 == md5(data[part.offset : part.offset + part.part_size])
    assert md5_file(data_dir(store) / object_id) == (md5(data), len(data))


def test_multi_part_file_without_part_md5_by_default(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    """One md5 per byte: the parts carry no sourceMd5 (omitted from the .meta, as Score omits a
    null one) and the whole-object md5 is still checked and recorded."""
    data = os.urandom(45 * MIB) + b"tail"
    src = make_file(tmp_path, data)
    object_id = oid()
    spec = store.put_file(object_id, src, expected_md5=md5(data), expected_size=len(data))

    assert [p.source_md5 for p in spec.parts] == [None, None, None]
    meta = json.loads((data_dir(store) / f"{object_id}.meta").read_text())
    assert meta["objectMd5"] == md5(data)
    assert [sorted(p) for p in meta["parts"]] == [
        ["md5", "offset", "partNumber", "partSize", "url"]
    ] * 3
    assert md5_file(data_dir(store) / object_id) == (md5(data), len(data))
    with pytest.raises(StorageCheckFailed) as err:
        store.put_file(oid(), src, expected_md5="0" * 32, expected_size=len(data))
    assert err.value.error_id == "mismatching.storage.object.checksums"


def test_md5_file(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 17)
    assert md5_file(make_file(tmp_path, data)) == (md5(data), len(data))
    assert md5_file(make_file(tmp_path, b"")) == (md5(b""), 0)


# -- put_file -------------------------------------------------------------------------------------


def test_second_put_is_idempotent(store: LocalObjectStore, tmp_path: Path) -> None:
    data = os.urandom(4096)
    src = make_file(tmp_path, data)
    object_id = oid()
    first = store.put_file(object_id, src)
    blob, meta = data_dir(store) / object_id, data_dir(store) / f"{object_id}.meta"
    before = (blob.stat().st_mtime_ns, blob.stat().st_ino, meta.stat().st_mtime_ns)

    assert store.put_file(object_id, src) == first
    assert store.put_file(object_id, src, expected_md5=md5(data), expected_size=4096) == first
    assert (blob.stat().st_mtime_ns, blob.stat().st_ino, meta.stat().st_mtime_ns) == before
    assert sorted(p.name for p in data_dir(store).iterdir()) == sorted(
        ["heliograph", object_id, f"{object_id}.meta"]
    )


def test_put_replaces_different_content(store: LocalObjectStore, tmp_path: Path) -> None:
    object_id = oid()
    store.put_file(object_id, make_file(tmp_path, b"x" * 100))
    spec = store.put_file(object_id, make_file(tmp_path, b"y" * 100))
    assert spec.object_md5 == md5(b"y" * 100)
    assert store.spec(object_id) == spec
    assert (data_dir(store) / object_id).read_bytes() == b"y" * 100


def test_mismatching_expected_md5_leaves_nothing(store: LocalObjectStore, tmp_path: Path) -> None:
    data = os.urandom(2 * MIB + 3)
    src = make_file(tmp_path, data)
    object_id = oid()
    with pytest.raises(StorageCheckFailed) as err:
        store.put_file(object_id, src, expected_md5="0" * 32)
    assert err.value.error_id == "mismatching.storage.object.checksums"
    assert err.value.context["object_id"] == object_id
    assert err.value.context["path"] == str(src)
    assert [p.name for p in data_dir(store).iterdir()] == ["heliograph"]
    assert not store.exists(object_id)


def test_mismatching_expected_size(store: LocalObjectStore, tmp_path: Path) -> None:
    object_id = oid()
    with pytest.raises(StorageCheckFailed) as err:
        store.put_file(object_id, make_file(tmp_path, b"abc"), expected_size=4)
    assert err.value.error_id == "mismatching.storage.object.sizes"
    assert err.value.context["object_id"] == object_id
    assert [p.name for p in data_dir(store).iterdir()] == ["heliograph"]


def test_failed_overwrite_keeps_the_old_object(store: LocalObjectStore, tmp_path: Path) -> None:
    object_id = oid()
    old = store.put_file(object_id, make_file(tmp_path, b"old content"))
    with pytest.raises(StorageCheckFailed):
        store.put_file(object_id, make_file(tmp_path, b"new content"), expected_md5="f" * 32)
    assert store.spec(object_id) == old
    assert (data_dir(store) / object_id).read_bytes() == b"old content"
    assert sorted(p.name for p in data_dir(store).iterdir()) == sorted(
        ["heliograph", object_id, f"{object_id}.meta"]
    )


# -- put_files: many at once ----------------------------------------------------------------------


def test_put_files_stores_each_small_file_or_reports_its_error(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    good = [os.urandom(1024 + i) for i in range(3)]
    paths = [make_file(tmp_path, data) for data in good]
    ids = [oid() for _ in range(6)]
    before = make_file(tmp_path, b"stored before")
    already = store.put_file(ids[5], before)
    stored_before = (data_dir(store) / ids[5]).stat().st_ino
    big = os.urandom(GROUP_MAX_BYTES + 1)  # over the group limit: stored on its own
    results = store.put_files(
        [
            PutRequest(ids[0], str(paths[0]), md5(good[0]), len(good[0])),
            PutRequest(ids[1], str(paths[1]), "0" * 32, len(good[1])),  # wrong md5
            PutRequest(ids[2], str(tmp_path / "gone.bam"), md5(b"x"), 1),  # no source
            PutRequest(ids[3], str(paths[2]), md5(good[2]).upper(), len(good[2])),
            PutRequest(ids[4], str(make_file(tmp_path, big)), md5(big), len(big)),
            PutRequest(ids[5], str(before), md5(b"stored before"), 13),
        ]
    )
    assert isinstance(results[1], StorageCheckFailed)
    assert results[1].error_id == "mismatching.storage.object.checksums"
    assert results[1].context == {"object_id": ids[1], "path": str(paths[1])}
    assert isinstance(results[2], FileNotFoundError)
    assert results[5] == already  # not copied again
    assert (data_dir(store) / ids[5]).stat().st_ino == stored_before
    for i, data in ((0, good[0]), (3, good[2]), (4, big)):
        assert results[i] == store.spec(ids[i])
        assert store.spec(ids[i]).object_md5 == md5(data)
        assert (data_dir(store) / ids[i]).read_bytes() == data
    assert not store.exists(ids[1]) and not store.exists(ids[2])
    assert sorted(p.name for p in data_dir(store).iterdir()) == sorted(
        ["heliograph"] + [n for i in (0, 3, 4, 5) for n in (ids[i], f"{ids[i]}.meta")]
    )  # no temporary file left behind


def test_put_files_replaces_an_older_object_and_keeps_it_when_the_new_one_is_wrong(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    kept, replaced = oid(), oid()
    old = store.put_file(kept, make_file(tmp_path, b"old one"))
    store.put_file(replaced, make_file(tmp_path, b"old two"))
    results = store.put_files(
        [
            PutRequest(kept, str(make_file(tmp_path, b"new one")), "f" * 32, 7),
            PutRequest(replaced, str(make_file(tmp_path, b"new two")), md5(b"new two"), 7),
        ]
    )
    assert isinstance(results[0], StorageCheckFailed)
    assert store.spec(kept) == old and (data_dir(store) / kept).read_bytes() == b"old one"
    assert results[1] == store.spec(replaced)
    assert (data_dir(store) / replaced).read_bytes() == b"new two"
    assert len(list(data_dir(store).iterdir())) == 5


@pytest.mark.parametrize(
    "bad_id",
    ["abc", "../etc", "../../etc/passwd", "heliograph", "", str(uuid.uuid4()) + "\n"],
)
def test_non_uuid_ids_rejected(store: LocalObjectStore, tmp_path: Path, bad_id: str) -> None:
    src = make_file(tmp_path, b"data")
    calls = [
        lambda: store.put_file(bad_id, src),
        lambda: store.exists(bad_id),
        lambda: store.spec(bad_id),
        lambda: store.open_range(bad_id),
        lambda: store.delete(bad_id),
    ]
    for call in calls:
        with pytest.raises(BadRequest) as err:
            call()
        assert err.value.error_id == "malformed.parameter"
    assert [p.name for p in data_dir(store).iterdir()] == ["heliograph"]


def test_delete_and_listing(store: LocalObjectStore, tmp_path: Path) -> None:
    ids = sorted(oid() for _ in range(3))
    for object_id in ids:
        store.put_file(object_id, make_file(tmp_path, object_id.encode()))
    (data_dir(store) / ".tmp-leftover").write_bytes(b"junk")
    assert list(store.list_object_ids()) == ids
    store.delete(ids[1])
    store.delete(ids[1])  # idempotent
    assert not store.exists(ids[1]) and store.spec(ids[1]) is None
    assert not (data_dir(store) / ids[1]).exists()
    assert list(store.list_object_ids()) == [ids[0], ids[2]]


# -- open_range -----------------------------------------------------------------------------------


def test_open_range(store: LocalObjectStore, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 5)
    object_id = oid()
    store.put_file(object_id, make_file(tmp_path, data))
    with store.open_range(object_id) as f:
        assert f.read() == data
    with store.open_range(object_id, 1000, 2 * MIB) as f:
        assert f.read() == data[1000 : 1000 + 2 * MIB]
    with store.open_range(object_id, MIB + 7, -1) as f:
        chunks = []
        while chunk := f.read(65536):
            chunks.append(chunk)
        assert b"".join(chunks) == data[MIB + 7 :]
    with store.open_range(object_id, len(data), -1) as f:
        assert f.read() == b""
    for offset, length in [(-1, 10), (0, len(data) + 1), (len(data) + 1, -1), (0, -2)]:
        with pytest.raises(BadRequest):
            store.open_range(object_id, offset, length)
    with pytest.raises(NotFound) as err:
        store.open_range(oid())
    assert err.value.error_id == "storage.object.not.found"


# -- verify_for_publish ---------------------------------------------------------------------------


@pytest.fixture
def two_files(store: LocalObjectStore, tmp_path: Path) -> tuple[list[dict], list[bytes]]:
    blobs = [b"first file\n" * 10, b"second file\n" * 20]
    entries = []
    for data in blobs:
        object_id = oid()
        store.put_file(object_id, make_file(tmp_path, data))
        entries.append(file_entry(object_id, data))
    return entries, blobs


def test_publish_all_good(store: LocalObjectStore, two_files) -> None:
    entries, _ = two_files
    assert verify_for_publish(store, AID, entries) is None


def test_publish_no_files(store: LocalObjectStore) -> None:
    with pytest.raises(Internal) as err:
        verify_for_publish(store, AID, [])
    assert err.value.error_id == "analysis.missing.files"
    assert err.value.context["analysis_id"] == AID


def test_publish_missing_objects_come_first(store: LocalObjectStore, two_files) -> None:
    entries, _ = two_files
    gone1, gone2 = oid(), oid()
    files = [
        {**entries[0], "fileSize": 1},  # a size mismatch must not win over missing objects
        file_entry(gone1, b"never uploaded"),
        entries[1],
        file_entry(gone2, b"nor this"),
    ]
    with pytest.raises(StorageCheckFailed) as err:
        verify_for_publish(store, AID, files)
    assert err.value.error_id == "missing.storage.objects"
    assert err.value.message == (
        "The following storage objectIds must be uploaded to the storage server before the "
        f"analysisId {AID} can be published: {gone1},{gone2}"
    )
    assert err.value.context == {"analysis_id": AID, "object_ids": [gone1, gone2]}


def test_publish_meta_deleted_by_hand(store: LocalObjectStore, two_files) -> None:
    entries, _ = two_files
    (data_dir(store) / f"{entries[1]['objectId']}.meta").unlink()
    with pytest.raises(StorageCheckFailed) as err:
        verify_for_publish(store, AID, entries)
    assert err.value.error_id == "missing.storage.objects"
    assert err.value.context["object_ids"] == [entries[1]["objectId"]]


def test_publish_size_mismatch(store: LocalObjectStore, two_files) -> None:
    entries, _ = two_files
    files = [{**entries[0], "fileSize": 5, "fileMd5sum": "0" * 32}, {**entries[1], "fileSize": 6}]
    with pytest.raises(StorageCheckFailed) as err:
        verify_for_publish(store, AID, files)
    a, b = entries[0]["objectId"], entries[1]["objectId"]
    assert err.value.error_id == "mismatching.storage.object.sizes"
    assert err.value.message == (
        "The following file objectIds have mismatching object sizes in the storage server: "
        f"[{a} , {b}]. The analysisId '{AID}' cannot be published until they all match."
    )
    assert err.value.context == {"analysis_id": AID, "object_ids": [a, b]}


def test_publish_md5_mismatch(store: LocalObjectStore, two_files) -> None:
    entries, _ = two_files
    files = [entries[0], {**entries[1], "fileMd5sum": "0" * 32}]
    with pytest.raises(StorageCheckFailed) as err:
        verify_for_publish(store, AID, files)
    assert err.value.error_id == "mismatching.storage.object.checksums"
    assert err.value.context["analysis_id"] == AID
    assert err.value.context["object_ids"] == [entries[1]["objectId"]]
    assert entries[1]["objectId"] in err.value.message and AID in err.value.message


def test_publish_md5_compare_is_case_sensitive(store: LocalObjectStore, two_files) -> None:
    entries, _ = two_files
    files = [{**entries[0], "fileMd5sum": entries[0]["fileMd5sum"].upper()}, entries[1]]
    with pytest.raises(StorageCheckFailed) as err:
        verify_for_publish(store, AID, files)
    assert err.value.error_id == "mismatching.storage.object.checksums"
    assert err.value.context["object_ids"] == [entries[0]["objectId"]]


def test_publish_undefined_md5(store: LocalObjectStore, two_files) -> None:
    entries, _ = two_files
    undefined = entries[0]["objectId"]
    rewrite_meta(store, undefined, objectMd5=None)
    with pytest.raises(StorageCheckFailed) as err:
        verify_for_publish(store, AID, entries)
    assert err.value.error_id == "mismatching.storage.object.checksums"
    assert err.value.context["object_ids"] == [undefined]
    assert f"ObjectIds with an undefined md5 checksum(1): [{undefined}]" in err.value.message

    assert verify_for_publish(store, AID, entries, ignore_undefined_md5=True) is None

    # ignoring undefined md5s does not excuse a defined mismatch
    files = [entries[0], {**entries[1], "fileMd5sum": "1" * 32}]
    with pytest.raises(StorageCheckFailed) as err:
        verify_for_publish(store, AID, files, ignore_undefined_md5=True)
    assert err.value.context["object_ids"] == [entries[1]["objectId"]]
    assert err.value.message.startswith("[WARNING]: Ignoring objectIds")


def test_publish_zero_byte_object_is_invalid(store: LocalObjectStore, tmp_path: Path) -> None:
    object_id = oid()
    spec = store.put_file(object_id, make_file(tmp_path, b""))
    assert spec.object_size == 0 and spec.parts == ()
    with pytest.raises(Internal) as err:
        verify_for_publish(store, AID, [file_entry(object_id, b"")])
    assert err.value.error_id == "invalid.storage.download.response"
    assert err.value.context == {"analysis_id": AID, "object_ids": [object_id]}
    assert object_id in err.value.message


@pytest.mark.parametrize(
    "changes",
    [{"objectSize": "10"}, {"objectMd5": "xyz"}, {"objectMd5": ""}, {"objectId": "-bad-"}],
)
def test_publish_invalid_meta(store: LocalObjectStore, tmp_path: Path, changes: dict) -> None:
    object_id = oid()
    store.put_file(object_id, make_file(tmp_path, b"0123456789"))
    rewrite_meta(store, object_id, **changes)
    with pytest.raises(Internal) as err:
        verify_for_publish(store, AID, [file_entry(object_id, b"0123456789")])
    assert err.value.error_id == "invalid.storage.download.response"


class VanishingMetaStore(LocalObjectStore):
    """The .meta disappears between Song's "exists?" and its spec fetch."""

    def read_meta(self, object_id: str):
        return None


def test_publish_spec_gone_after_exists(tmp_path: Path) -> None:
    store = VanishingMetaStore(tmp_path / "objects")
    object_id = oid()
    store.put_file(object_id, make_file(tmp_path, b"abc"))
    with pytest.raises(NotFound) as err:
        verify_for_publish(store, AID, [file_entry(object_id, b"abc")])
    assert err.value.error_id == "storage.object.not.found"
    assert err.value.context == {"analysis_id": AID, "object_ids": [object_id]}
