"""Score's upload protocol on S3: real multipart uploads, the client PUTs each part to S3 itself.

The upload's state sits in the state bucket exactly where a Score server keeps it (score-storage.md
§1.6), so either can finish what the other started:

    <state bucket>/upload/<objectId>_<uploadId>/.meta                 the spec (no URLs)
    <state bucket>/upload/<objectId>_<uploadId>/part-%08x|{json}      0 bytes: a completed part

The uploadId is S3's own. Part URLs are presigned ``upload_part`` PUTs. At finalize the parts S3
lists must be the planned ones (sizes), each with the ETag recorded, and the ETag the md5 the
client gave; S3 then completes the upload, the blob is checked (size, md5chksum, multipart ETag)
and the .meta is written last.
"""

from __future__ import annotations

from typing import Any

from ..errors import MismatchingObjectSize, UploadRefused
from .layout import ObjectSpec, Part, check_object_id, parse_meta
from .multipart import UPLOAD_DIR, PartRecord, Uploads, part_record_name
from .s3 import MD5_METADATA, S3ObjectStore, _b64, _etag

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}


def _missing(exc: Exception) -> bool:
    """Whether an S3 error says the key or the upload is not there."""
    response = getattr(exc, "response", None)
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return error.get("Code") in _MISSING


class S3Uploads(Uploads):
    """Uploads into an S3ObjectStore (see the module docstring)."""

    store: S3ObjectStore

    def __init__(self, store: S3ObjectStore) -> None:
        super().__init__(store)

    def _prefix(self, object_id: str, upload_id: str = "") -> str:
        oid = check_object_id(object_id)
        return f"{UPLOAD_DIR}/{oid}_{upload_id}/" if upload_id else f"{UPLOAD_DIR}/{oid}_"

    def _state(self, object_id: str) -> str:
        return self.store.state_bucket_for(object_id)

    def _target(self, object_id: str) -> tuple[str, str]:
        return self.store.object_bucket(object_id), self.store.data_key(object_id)

    def _list(self, bucket: str, prefix: str, **kwargs: Any) -> list[dict[str, Any]]:
        pages: list[dict[str, Any]] = []
        token = None
        while True:
            args = dict(kwargs, Prefix=prefix)
            if token:
                args["ContinuationToken"] = token
            page = self.store._call("list_objects_v2", bucket, None, **args)
            pages.append(page)
            if not page.get("IsTruncated"):
                return pages
            token = page["NextContinuationToken"]

    # -- state -----------------------------------------------------------------------------------

    def _start(self, object_id: str, size: int, md5: str | None) -> str:
        self.store.ensure_sentinel()
        bucket, key = self._target(object_id)
        extra = {"Metadata": {MD5_METADATA: _b64(md5.lower())}} if md5 else {}
        return str(self.store._call("create_multipart_upload", bucket, key, **extra)["UploadId"])

    def _save_spec(self, spec: ObjectSpec) -> None:
        key = self._prefix(spec.object_id, spec.upload_id or "") + ".meta"
        self.store._call(
            "put_object",
            self._state(spec.object_id),
            key,
            Body=spec.to_json().encode(),
            ContentType="application/json",
        )

    def _spec(self, object_id: str, upload_id: str) -> ObjectSpec | None:
        key = self._prefix(object_id, upload_id) + ".meta"
        try:
            body = self.store._call("get_object", self._state(object_id), key)["Body"].read()
        except Exception as exc:
            if _missing(exc):
                return None
            raise
        return ObjectSpec.from_json(parse_meta(object_id, body))

    def _current(self, object_id: str) -> ObjectSpec | None:
        bucket = self._state(object_id)
        for page in self._list(bucket, self._prefix(object_id), Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                try:
                    body = self.store._call("get_object", bucket, common["Prefix"] + ".meta")
                except Exception as exc:
                    if _missing(exc):
                        continue
                    raise
                raw = parse_meta(object_id, body["Body"].read())
                return ObjectSpec.from_json(raw)
        return None

    def _records(self, object_id: str, upload_id: str) -> dict[int, PartRecord]:
        prefix = self._prefix(object_id, upload_id) + "part-"
        out = {}
        for page in self._list(self._state(object_id), prefix):
            for item in page.get("Contents", []):
                _, _, text = item["Key"].partition("|")
                record = PartRecord.from_json(text)
                out[record.part_number] = record
        return out

    def _record_key(self, object_id: str, upload_id: str, part_number: int) -> str:
        return self._prefix(object_id, upload_id) + part_record_name(part_number)

    def _write_record(self, object_id: str, upload_id: str, record: PartRecord) -> None:
        self._drop_record(object_id, upload_id, record.part_number)
        key = f"{self._record_key(object_id, upload_id, record.part_number)}|{record.to_json()}"
        self.store._call("put_object", self._state(object_id), key, Body=b"")

    def _drop_record(self, object_id: str, upload_id: str, part_number: int) -> None:
        bucket = self._state(object_id)
        for page in self._list(bucket, self._record_key(object_id, upload_id, part_number) + "|"):
            for item in page.get("Contents", []):
                self.store._call("delete_object", bucket, item["Key"])

    def _held_parts(self, object_id: str, upload_id: str, marker: int = 0, most: int = 0) -> list:
        bucket, key = self._target(object_id)
        out: list[dict[str, Any]] = []
        while True:
            args: dict[str, Any] = {"UploadId": upload_id, "PartNumberMarker": marker}
            if most:
                args["MaxParts"] = most
            page = self.store._call("list_parts", bucket, key, **args)
            out.extend(page.get("Parts", []))
            if most or not page.get("IsTruncated"):
                return out
            marker = page["NextPartNumberMarker"]

    def _held_etag(self, object_id: str, upload_id: str, part: Part) -> str | None:
        try:
            found = self._held_parts(object_id, upload_id, part.part_number - 1, 1)
        except Exception as exc:
            if _missing(exc):
                return None
            raise
        if not (found and found[0]["PartNumber"] == part.part_number):
            # S3 answers the parts after the marker; a server that reads the marker as an
            # index (moto) needs the whole list
            found = [
                p
                for p in self._held_parts(object_id, upload_id)
                if p["PartNumber"] == part.part_number
            ]
        return _etag(found[0]) if found else None

    def _in_progress(self) -> list[tuple[str, str]]:
        out = []
        buckets = {self.store.bucket} | {
            f"{self.store.bucket}.{n}" for n in range(self.store.bucket_pool)
        }
        prefix = f"{self.store.data_dir}/" if self.store.data_dir else ""
        for bucket in sorted(buckets):
            page = self.store._call("list_multipart_uploads", bucket, None, Prefix=prefix)
            for upload in page.get("Uploads", []):
                name = upload["Key"][len(prefix) :]
                out.append((name, upload["UploadId"]))
        return out

    def _abort(self, object_id: str, upload_id: str) -> None:
        bucket, key = self._target(object_id)
        try:
            self.store._call("abort_multipart_upload", bucket, key, UploadId=upload_id)
        except Exception as exc:
            if not _missing(exc):
                raise
        state = self._state(object_id)
        for page in self._list(state, self._prefix(object_id, upload_id)):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            for start in range(0, len(keys), 1000):  # one request per thousand keys
                self.store._call(
                    "delete_objects",
                    state,
                    None,
                    Delete={"Objects": keys[start : start + 1000], "Quiet": True},
                )

    def part_url(self, spec: ObjectSpec, part: Part, expires: int) -> str | None:
        bucket, key = self._target(spec.object_id)
        url: str = self.store.s3.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": bucket,
                "Key": key,
                "UploadId": spec.upload_id,
                "PartNumber": part.part_number,
            },
            ExpiresIn=expires,
        )
        return url

    # -- completing ------------------------------------------------------------------------------

    def _assemble(self, spec: ObjectSpec, records: dict[int, PartRecord]) -> ObjectSpec:
        oid = spec.object_id
        upload_id = spec.upload_id or oid
        held = {p["PartNumber"]: p for p in self._held_parts(oid, upload_id)}
        for part in spec.parts:
            got = held.get(part.part_number)
            if got is None or _etag(got) != records[part.part_number].etag:
                raise UploadRefused(
                    f"Part {part.part_number} of objectId {oid} is not in S3 as it was "
                    "finalized; send it again",
                    object_id=oid,
                )
            if got["Size"] != part.part_size:
                raise MismatchingObjectSize(
                    f"Part {part.part_number} of objectId {oid} has {got['Size']} bytes in S3, "
                    f"not {part.part_size}",
                    object_id=oid,
                )
        parts = tuple(
            Part(p.part_number, p.part_size, p.offset, records[p.part_number].md5)
            for p in spec.parts
        )
        stored = ObjectSpec(oid, spec.object_size, spec.object_md5, parts, upload_id)
        bucket, key = self._target(oid)
        self.store._drop_meta(oid)  # the old object turns absent before its bytes change
        self.store._call(
            "complete_multipart_upload",
            bucket,
            key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [
                    {"ETag": f'"{records[p.part_number].etag}"', "PartNumber": p.part_number}
                    for p in spec.parts
                ]
            },
        )
        self.store._final_check(stored, bucket)
        self.store._put_meta(stored)  # last: from now on the object exists
        self._abort(oid, upload_id)
        return stored
