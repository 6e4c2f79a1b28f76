"""Object storage on S3 (any S3-compatible endpoint) in Score's layout, through boto3.

The only module that imports boto3. Layout, as a Score server reads it (score-storage.md §1):

    <object bucket>/<data_dir>/<objectId>         the bytes; user metadata md5chksum = base64(md5)
    <state bucket>/<data_dir>/<objectId>.meta     ObjectSpecification JSON, written last
    <object bucket>/<data_dir>/heliograph         the sentinel (base bucket, never partitioned)

With ``bucket_pool > 0`` both buckets are partitioned by Score's rule, ``<base>.<n>`` with
``n = int(objectId[:key_length], 16) % pool``; a .meta missing there is looked up in the base
state bucket (pre-partitioning data, "relocated"), whose blob then lives in the base object bucket.

Uploads read each byte of the source once: the whole-file md5 and each part's md5 (``sourceMd5``)
are computed while the bytes stream out. Files above ``multipart_threshold`` go up in Score's part
plan (so S3's parts are the .meta's parts), several parts in flight, each sent with Content-MD5 and
its ETag checked. An interrupted multipart upload is resumed: parts already in S3 whose ETag equals
the md5 of the same bytes are not sent again. The old .meta is removed only once the new bytes are
known to be right, just before they replace the old blob; the new .meta is written last.

Every call is retried with exponential backoff on connection errors, throttling and 5xx; what
still fails, or is refused (no such bucket, access denied), raises ``Internal`` with error id
``storage.service.error`` naming the operation, bucket and key.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from io import RawIOBase
from typing import Any, BinaryIO

import boto3
import botocore.exceptions as bex
import botocore.session
from botocore.config import Config

from ..errors import (
    Internal,
    InvalidStorageResponse,
    MalformedParameter,
    MismatchingObjectChecksum,
    MismatchingObjectSize,
    StorageCheckFailed,
    StorageObjectNotFound,
    StorageServiceError,
)
from ..settings import Settings
from .base import ObjectStore, RangeReader, StoredObject
from .hashing import copy_with_hashes, hash_stream
from .layout import (
    DATA_DIR,
    DEFAULT_PART_SIZE,
    MIB,
    SENTINEL,
    SENTINEL_CONTENT,
    ObjectSpec,
    Part,
    check_object_id,
    is_object_id,
    parse_meta,
    part_plan,
    range_end,
)

log = logging.getLogger("songlake.s3")

MD5_METADATA = "md5chksum"  # Score's s3.customMd5Property
MAX_COPY_SIZE = 5 * 1024 * MIB  # S3's CopyObject limit
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
# Keys asked for per listing page: AWS and MinIO answer at most 1,000 whatever is asked; servers
# that give more (moto, which also visits the whole bucket for every page) save round trips.
LIST_MAX_KEYS = 1_000_000
_HEX = "0123456789abcdef"  # first characters of (lowercase) objectIds, one listing each


def _raw_timestamp(value: str) -> str:
    return value


_RETRYABLE_CODES = {
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "InternalError",
    "ServiceUnavailable",
    "BadDigest",  # the bytes were damaged on the way: send them again
    "XAmzContentSHA256Mismatch",
}
_CONNECTION_ERRORS = (
    bex.EndpointConnectionError,
    bex.ConnectionClosedError,
    bex.ConnectTimeoutError,
    bex.ReadTimeoutError,
    bex.ProxyConnectionError,
    bex.ResponseStreamingError,
    bex.HTTPClientError,
)


def bucket_for(base: str, object_id: str, pool: int, key_length: int) -> str:
    """Score's bucket partitioning: ``base`` when off, else ``base.<int(id[:k], 16) % pool>``."""
    if pool <= 0:
        return base
    name = object_id.rsplit("/", 1)[-1]
    return f"{base}.{int(name[:key_length], 16) % pool}"


def _b64(hex_md5: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_md5)).decode()


def multipart_etag(parts: tuple[Part, ...] | list[Part]) -> str | None:
    """The ETag S3 gives an object uploaded in exactly these parts, if every part has its md5."""
    if not parts or any(p.source_md5 is None for p in parts):
        return None
    joined = b"".join(bytes.fromhex(p.source_md5) for p in parts)  # type: ignore[arg-type]
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(parts)}"


class S3ObjectStore(ObjectStore):
    """Score's layout in S3 buckets (see the module docstring)."""

    first_page = 1000  # keys asked for before an inventory splits a bucket's listing by prefix

    def __init__(
        self,
        *,
        bucket: str,
        state_bucket: str = "",
        data_dir: str = DATA_DIR,
        endpoint_url: str = "",
        region: str = "",
        profile: str = "",
        path_style: bool = True,
        bucket_pool: int = 0,
        bucket_key_length: int = 2,
        part_size: int = DEFAULT_PART_SIZE,
        multipart_threshold: int = 64 * MIB,
        concurrency: int = 4,
        max_attempts: int = 5,
        retry_backoff: float = 0.5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        url_expiration: int = 86_400,
        verify_etag: bool = True,
    ) -> None:
        if not bucket:
            raise MalformedParameter(
                "object_store is 's3' but no bucket is set (s3_bucket / SONGLAKE_S3_BUCKET)",
            )
        self.bucket = bucket
        self.state_bucket = state_bucket or bucket
        self.data_dir = data_dir.strip("/")
        self.endpoint_url = endpoint_url or None
        self.bucket_pool = bucket_pool
        self.bucket_key_length = bucket_key_length
        self.part_size = part_size
        self.multipart_threshold = max(multipart_threshold, 0)
        self.concurrency = max(concurrency, 1)
        self.max_attempts = max(max_attempts, 1)
        self.retry_backoff = retry_backoff
        self.url_expiration = url_expiration
        self.verify_etag = verify_etag
        config = Config(
            region_name=region or None,
            signature_version="s3v4",
            s3={"addressing_style": "path" if path_style else "auto"},
            retries={"total_max_attempts": 1},  # retried here, with our backoff and messages
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max(10, 2 * self.concurrency + 4),
            # Content-MD5 is sent on every write; no extra CRC pass over the bytes
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        core = botocore.session.get_session()
        # timestamps stay the strings S3 sent: parsing one per listed key with dateutil was half
        # of the client's time in a large listing, and nothing here reads them as dates (ISO
        # strings of one format sort as their dates do)
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_raw_timestamp
        )
        session = boto3.session.Session(profile_name=profile or None, botocore_session=core)
        self.s3 = session.client("s3", endpoint_url=self.endpoint_url, config=config)
        self._sentinel_checked = False

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ObjectStore:
        return cls(
            bucket=settings.s3_bucket,
            state_bucket=settings.s3_state_bucket,
            data_dir=settings.s3_data_dir,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            profile=settings.s3_profile,
            path_style=settings.s3_path_style,
            bucket_pool=settings.s3_bucket_pool,
            bucket_key_length=settings.s3_bucket_key_length,
            part_size=settings.s3_part_size,
            multipart_threshold=settings.s3_multipart_threshold,
            concurrency=settings.s3_concurrency,
            max_attempts=settings.s3_max_attempts,
            retry_backoff=settings.s3_retry_backoff,
            connect_timeout=settings.s3_connect_timeout,
            read_timeout=settings.s3_read_timeout,
            url_expiration=settings.s3_url_expiration,
            verify_etag=settings.s3_verify_etag,
        )

    # -- keys and buckets -------------------------------------------------------------------------

    def data_key(self, object_id: str) -> str:
        oid = check_object_id(object_id)
        return f"{self.data_dir}/{oid}" if self.data_dir else oid

    def meta_key(self, object_id: str) -> str:
        return f"{self.data_key(object_id)}.meta"

    @property
    def sentinel_key(self) -> str:
        return f"{self.data_dir}/{SENTINEL}" if self.data_dir else SENTINEL

    def object_bucket(self, object_id: str) -> str:
        return bucket_for(self.bucket, object_id, self.bucket_pool, self.bucket_key_length)

    def state_bucket_for(self, object_id: str) -> str:
        return bucket_for(self.state_bucket, object_id, self.bucket_pool, self.bucket_key_length)

    # -- calls, retries and errors ----------------------------------------------------------------

    def _call(self, op: str, bucket: str, key: str | None, **kwargs: Any) -> Any:
        """``self.s3.<op>(Bucket=bucket, Key=key, **kwargs)`` with retries; not-found re-raised."""
        if key is not None:
            kwargs["Key"] = key
        fn = getattr(self.s3, op)
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn(Bucket=bucket, **kwargs)
            except bex.ClientError as exc:
                code = _code(exc)
                if code in _NOT_FOUND or code == "NoSuchUpload":
                    raise
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
                if not (code in _RETRYABLE_CODES or status >= 500) or attempt == self.max_attempts:
                    raise self._error(op, bucket, key, exc, attempt) from exc
            except _CONNECTION_ERRORS as exc:
                if attempt == self.max_attempts:
                    raise self._error(op, bucket, key, exc, attempt) from exc
            delay = min(self.retry_backoff * 2 ** (attempt - 1), 30.0)
            log.warning("S3 %s s3://%s/%s failed (attempt %d); retrying", op, bucket, key, attempt)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _error(
        self, op: str, bucket: str, key: str | None, exc: Exception, attempts: int
    ) -> Internal:
        where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
        endpoint = self.endpoint_url or "AWS"
        if isinstance(exc, bex.ClientError):
            code = _code(exc)
            text = exc.response.get("Error", {}).get("Message") or code
            if code == "NoSuchBucket":
                why = f"the bucket '{bucket}' does not exist"
            elif code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                why = f"access to the bucket '{bucket}' was denied ({code}: {text})"
            else:
                why = f"{code}: {text}"
            msg = f"S3 {op} of {where} at {endpoint} failed: {why}"
        else:
            msg = (
                f"S3 {op} of {where} failed after {attempts} attempt(s): the endpoint {endpoint} "
                f"is unreachable ({exc})"
            )
        code = _code(exc) if isinstance(exc, bex.ClientError) else "unreachable"
        return StorageServiceError(msg, bucket=bucket, key=key, code=code)

    # -- reading ----------------------------------------------------------------------------------

    def _meta_location(self, object_id: str) -> tuple[str, str, bool] | None:
        """(state bucket, raw .meta bytes, relocated) of an object, or None when absent."""
        key = self.meta_key(object_id)
        buckets = [self.state_bucket_for(object_id)]
        if buckets[0] != self.state_bucket:
            buckets.append(self.state_bucket)  # Score's fallback to the base bucket
        for i, bucket in enumerate(buckets):
            try:
                body = self._call("get_object", bucket, key)["Body"].read()
            except bex.ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    continue
                raise
            return bucket, body, i > 0
        return None

    def exists(self, object_id: str) -> bool:
        # a GET rather than a HEAD: a HEAD cannot tell a missing key from a missing bucket
        return self._meta_location(object_id) is not None

    def read_meta(self, object_id: str) -> dict[str, Any] | None:
        found = self._meta_location(object_id)
        if found is None:
            return None
        return parse_meta(object_id, found[1])

    def _located_spec(self, object_id: str) -> tuple[ObjectSpec, str] | None:
        """The parsed .meta and the bucket of its blob (the base bucket when relocated)."""
        found = self._meta_location(object_id)
        if found is None:
            return None
        try:
            spec = ObjectSpec.from_json(found[1])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidStorageResponse(
                f"The object specification of objectId '{object_id}' is invalid: {exc}",
                object_id=object_id,
            ) from exc
        return spec, (self.bucket if found[2] else self.object_bucket(object_id))

    def head_blob(self, object_id: str, bucket: str | None = None) -> dict[str, Any] | None:
        """HEAD of the blob (ContentLength, ETag, Metadata), or None when it is missing."""
        bucket = bucket or self.object_bucket(object_id)
        try:
            return self._call("head_object", bucket, self.data_key(object_id))
        except bex.ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise

    def blob_spec(self, object_id: str) -> dict[str, Any] | None:
        head = self.head_blob(object_id)
        if head is None:
            return None
        size = int(head["ContentLength"])
        stored = (head.get("Metadata") or {}).get(MD5_METADATA)
        try:
            md5 = base64.b64decode(stored, validate=True).hex() if stored else None
        except ValueError:
            md5 = None
        plan = tuple(part_plan(size, self.part_size))
        return ObjectSpec(object_id, size, md5 if md5 and len(md5) == 32 else None, plan).to_dict()

    def open_range(self, object_id: str, offset: int = 0, length: int = -1) -> BinaryIO:
        current, bucket = self._located_spec(object_id) or (
            self.served_spec(object_id),
            self.object_bucket(object_id),
        )
        end = range_end(object_id, current, offset, length)  # raises when current is None
        if end == offset:
            return io.BytesIO(b"")
        try:
            body = self._call(
                "get_object", bucket, self.data_key(object_id), Range=f"bytes={offset}-{end - 1}"
            )["Body"]
        except bex.ClientError as exc:
            if _code(exc) not in _NOT_FOUND:
                raise
            raise StorageObjectNotFound(
                f"The data of objectId '{object_id}' is missing from s3://{bucket}",
                object_id=object_id,
            ) from None
        return io.BufferedReader(RangeReader(body), 1024 * 1024)

    # -- writing ----------------------------------------------------------------------------------

    def _meta_bytes(self, spec: ObjectSpec) -> bytes:
        doc = spec.to_dict()
        doc["objectKey"] = self.data_key(spec.object_id)
        return json.dumps(doc, separators=(",", ":")).encode()

    def _put_meta(self, spec: ObjectSpec) -> None:
        body = self._meta_bytes(spec)
        digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
        self._call(
            "put_object",
            self.state_bucket_for(spec.object_id),
            self.meta_key(spec.object_id),
            Body=body,
            ContentType="application/json",
            ContentMD5=_b64(digest),
        )

    def _drop_meta(self, object_id: str) -> None:
        self._call("delete_object", self.state_bucket_for(object_id), self.meta_key(object_id))

    def ensure_sentinel(self) -> None:
        """Put ``data/heliograph`` in the base object bucket if it is not there (once a process)."""
        if self._sentinel_checked:
            return
        try:
            self._call("head_object", self.bucket, self.sentinel_key)
        except bex.ClientError as exc:
            if _code(exc) not in _NOT_FOUND:
                raise
            self._call("put_object", self.bucket, self.sentinel_key, Body=SENTINEL_CONTENT)
        self._sentinel_checked = True

    def _complete_spec(self, object_id: str) -> ObjectSpec | None:
        """The stored spec if its blob is there and agrees with it (size, md5chksum, ETag)."""
        try:
            located = self._located_spec(object_id)
        except Internal as exc:
            if exc.error_id != "invalid.storage.download.response":
                raise
            return None
        if located is None:
            return None
        current, bucket = located
        head = self.head_blob(object_id, bucket)
        if head is None or self.blob_mismatch(current, head) is not None:
            return None
        return current

    def _store(
        self, oid: str, src: RawIOBase, size: int, want: str | None, ctx: dict[str, Any]
    ) -> ObjectSpec:
        self.ensure_sentinel()
        try:
            if size <= self.multipart_threshold:
                spec = self._put_single(oid, src, size, want)
            else:
                if want is None:  # the blob's md5chksum is set when the upload starts
                    want, _ = hash_stream(src)
                    src.seek(0)
                spec = self._put_multipart(oid, src, size, want)
        except StorageCheckFailed as exc:
            exc.context.update(ctx)
            raise
        self._put_meta(spec)  # last: from now on the object exists
        return spec

    def _checksum_error(self, oid: str, md5: str, want: str) -> StorageCheckFailed:
        return MismatchingObjectChecksum(
            f"The file has md5 {md5} but {want} was expected for objectId '{oid}'; "
            "nothing was changed in storage",
        )

    def _put_single(self, oid: str, src: RawIOBase, size: int, want: str | None) -> ObjectSpec:
        body = bytearray()
        md5, parts = copy_with_hashes(src, size, body.extend, part_size=self.part_size)
        if want is not None and md5 != want:
            raise self._checksum_error(oid, md5, want)
        bucket, key = self.object_bucket(oid), self.data_key(oid)
        self._drop_meta(oid)  # the old object turns absent before its bytes change
        response = self._call(
            "put_object",
            bucket,
            key,
            Body=body,
            ContentMD5=_b64(md5),
            Metadata={MD5_METADATA: _b64(md5)},
        )
        spec = ObjectSpec(oid, size, md5, tuple(parts))
        self._final_check(spec, bucket, etag=_etag(response))
        return spec

    def _put_multipart(self, oid: str, src: RawIOBase, size: int, want: str) -> ObjectSpec:
        plan = part_plan(size, self.part_size)
        bucket, key = self.object_bucket(oid), self.data_key(oid)
        upload_id, stored = self._resume_or_start(bucket, key, plan, want)
        whole = hashlib.md5(usedforsecurity=False)
        done: list[tuple[Part, str]] = []
        in_flight: deque[Future[tuple[Part, str]]] = deque()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-part") as pool:
            try:
                for part in plan:
                    buf = bytearray(part.part_size)
                    if _read_fully(src, buf) != part.part_size:
                        raise MismatchingObjectSize(
                            f"The source changed while it was read: it ended before byte "
                            f"{part.offset + part.part_size} of {size}",
                        )
                    whole.update(buf)  # in order here, while the pool hashes and sends parts
                    in_flight.append(
                        pool.submit(self._send_part, bucket, key, upload_id, part, buf, stored)
                    )
                    while len(in_flight) >= self.concurrency:
                        done.append(in_flight.popleft().result())
                if src.read(1):
                    raise MismatchingObjectSize(
                        f"The source changed while it was read: it has more than {size} bytes",
                    )
                while in_flight:
                    done.append(in_flight.popleft().result())
            except BaseException:
                for fut in in_flight:
                    fut.cancel()
                raise
        md5 = whole.hexdigest()
        if md5 != want:  # wrong bytes: the upload can never be completed, drop its parts
            self._abort(bucket, key, upload_id)
            raise self._checksum_error(oid, md5, want)
        parts = tuple(p for p, _ in done)
        spec = ObjectSpec(oid, size, md5, parts)
        self._drop_meta(oid)
        try:
            self._call(
                "complete_multipart_upload",
                bucket,
                key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"ETag": f'"{e}"', "PartNumber": p.part_number} for p, e in done]
                },
            )
        except bex.ClientError as exc:
            # a retry after S3 completed but before its answer arrived finds no upload any more
            if _code(exc) != "NoSuchUpload":
                raise
        self._final_check(spec, bucket)
        return spec

    def _send_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part: Part,
        buf: bytearray,
        stored: dict[int, tuple[str, int]],
    ) -> tuple[Part, str]:
        digest = hashlib.md5(buf, usedforsecurity=False).hexdigest()
        have = stored.get(part.part_number)
        if have == (digest, part.part_size):
            return replace(part, source_md5=digest), digest  # already in S3 (resumed upload)
        response = self._call(
            "upload_part",
            bucket,
            key,
            UploadId=upload_id,
            PartNumber=part.part_number,
            Body=buf,
            ContentMD5=_b64(digest),
        )
        etag = _etag(response)
        if self.verify_etag and etag != digest:
            raise StorageServiceError(
                f"S3 answered ETag {etag} for part {part.part_number} of s3://{bucket}/{key}, "
                f"whose md5 is {digest}",
                bucket=bucket,
                key=key,
            )
        # S3 names each part by its ETag on completion (an answer without one: its md5)
        return replace(part, source_md5=digest), etag or digest

    def _resume_or_start(
        self, bucket: str, key: str, plan: list[Part], md5: str
    ) -> tuple[str, dict[int, tuple[str, int]]]:
        """An unfinished multipart upload of this key with the same part plan, else a new one.

        Returns its UploadId and the parts S3 already holds: part number -> (ETag, size).
        """
        uploads = self._call("list_multipart_uploads", bucket, None, Prefix=key).get("Uploads", [])
        sizes = {p.part_number: p.part_size for p in plan}
        for upload in sorted(uploads, key=lambda u: u["Initiated"], reverse=True):
            if upload["Key"] != key:
                continue
            stored: dict[int, tuple[str, int]] = {}
            marker = 0
            while True:
                page = self._call(
                    "list_parts",
                    bucket,
                    key,
                    UploadId=upload["UploadId"],
                    PartNumberMarker=marker,
                )
                for p in page.get("Parts", []):
                    stored[p["PartNumber"]] = (p["ETag"].strip('"'), p["Size"])
                if not page.get("IsTruncated"):
                    break
                marker = page["NextPartNumberMarker"]
            if all(sizes.get(n) == size for n, (_, size) in stored.items()):
                log.info("resuming upload of s3://%s/%s (%d parts in S3)", bucket, key, len(stored))
                return upload["UploadId"], stored
            self._abort(bucket, key, upload["UploadId"])  # another part plan: start afresh
            break
        started = self._call(
            "create_multipart_upload", bucket, key, Metadata={MD5_METADATA: _b64(md5)}
        )
        return started["UploadId"], {}

    def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        try:
            self._call("abort_multipart_upload", bucket, key, UploadId=upload_id)
        except bex.ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                raise

    def _final_check(self, spec: ObjectSpec, bucket: str, etag: str | None = None) -> None:
        """After the bytes are in: the blob has the size, md5chksum and ETag it must have."""
        head = self.head_blob(spec.object_id, bucket)
        if head is None:
            raise StorageServiceError(
                f"s3://{bucket}/{self.data_key(spec.object_id)} is missing right after its upload",
                object_id=spec.object_id,
            )
        meta = head.get("Metadata") or {}
        assert spec.object_md5 is not None
        if (
            meta.get(MD5_METADATA) != _b64(spec.object_md5)
            and head["ContentLength"] == spec.object_size
            and spec.object_size <= MAX_COPY_SIZE
        ):
            # a resumed upload started for other bytes carries a stale md5chksum: rewrite it
            self._call(
                "copy_object",
                bucket,
                self.data_key(spec.object_id),
                CopySource={"Bucket": bucket, "Key": self.data_key(spec.object_id)},
                Metadata={MD5_METADATA: _b64(spec.object_md5)},
                MetadataDirective="REPLACE",
            )
            head = self.head_blob(spec.object_id, bucket) or head
        problem = self.blob_mismatch(spec, head)
        if problem is not None:
            raise type(problem)(
                f"After upload, s3://{bucket}/{self.data_key(spec.object_id)} does not match: "
                f"{problem.message}",
                object_id=spec.object_id,
            )

    def delete(self, object_id: str) -> None:
        self._drop_meta(object_id)
        self._call("delete_object", self.object_bucket(object_id), self.data_key(object_id))

    # -- checking ---------------------------------------------------------------------------------

    def blob_mismatch(self, spec: ObjectSpec, head: Mapping[str, Any]) -> StorageCheckFailed | None:
        """The error when a blob's HEAD (or listing entry) contradicts its spec, else None."""
        size = head.get("ContentLength", head.get("Size"))
        if size != spec.object_size:
            return MismatchingObjectSize(
                f"the blob has {size} bytes, the .meta says {spec.object_size}"
            )
        stored = (head.get("Metadata") or {}).get(MD5_METADATA)
        if stored is not None and spec.object_md5 and stored != _b64(spec.object_md5):
            return MismatchingObjectChecksum(
                f"the blob's {MD5_METADATA} is {stored}, the .meta's md5 is {spec.object_md5}"
            )
        etag = _etag(head)
        if self.verify_etag and etag and spec.object_md5:
            expected = None
            if "-" not in etag:
                expected = spec.object_md5  # one PUT: the ETag is the md5
            elif etag.endswith(f"-{len(spec.parts)}"):
                expected = multipart_etag(spec.parts)  # uploaded in the .meta's parts
            if expected is not None and etag != expected:
                return MismatchingObjectChecksum(
                    f"the blob's ETag is {etag}, its bytes should give {expected}: it was "
                    "rewritten or damaged after upload"
                )
        return None

    def blob_problem(self, object_id: str, spec: ObjectSpec) -> StorageCheckFailed | None:
        located = self._located_spec(object_id)
        bucket = located[1] if located else self.object_bucket(object_id)
        head = self.head_blob(object_id, bucket)
        if head is None:
            return StorageCheckFailed(
                f"the blob s3://{bucket}/{self.data_key(object_id)} is missing"
            )
        return self.blob_mismatch(spec, head)

    def listed_spec(self, entry: StoredObject, size: int, md5: str) -> ObjectSpec | None:
        """The spec a listed .meta holds, known without reading it: when its ETag is the md5 of
        the .meta songlake writes for (size, md5) and one part; else None (read it)."""
        plan = part_plan(size, self.part_size)
        if not self.verify_etag or entry.meta_etag is None or len(plan) > 1:
            return None
        parts = tuple(replace(p, source_md5=md5) for p in plan)
        spec = ObjectSpec(entry.object_id, size, md5, parts)
        body = self._meta_bytes(spec)
        if hashlib.md5(body, usedforsecurity=False).hexdigest() == entry.meta_etag:
            return spec
        return None

    def inventory(self, progress: Callable[[int], object] | None = None) -> dict[str, StoredObject]:
        """Every object id under the data directory, from listings only (no per-object call).

        A bucket of at most 1,000 keys takes one request; a larger one is listed by the first hex
        digit of objectIds, 16 listings in parallel (one listing is sequential, page by page).
        (256 listings by two digits were slower against moto, which walks every key of the
        bucket for each listing request: 191 s instead of 104 s for 100,000 objects.)
        Partition buckets and, for pre-partitioning data, the base buckets are all listed.
        """
        prefix = f"{self.data_dir}/" if self.data_dir else ""
        object_buckets, state_buckets = {self.bucket}, {self.state_bucket}
        for n in range(self.bucket_pool):
            object_buckets.add(f"{self.bucket}.{n}")
            state_buckets.add(f"{self.state_bucket}.{n}")
        base = {self.bucket, self.state_bucket} if self.bucket_pool > 0 else set()
        buckets = sorted(object_buckets | state_buckets)
        blobs: dict[str, tuple[int, str | None]] = {}
        metas: dict[str, str | None] = {}
        with ThreadPoolExecutor(8, thread_name_prefix="s3-list") as pool:
            # one page per bucket first: a small store is listed with one request
            firsts = list(
                pool.map(
                    lambda b: self._list(b, prefix, None, max_pages=1, page_size=self.first_page),
                    buckets,
                )
            )
            jobs = [
                (b, prefix + h)
                for b, (_, truncated) in zip(buckets, firsts, strict=True)
                if truncated
                for h in _HEX
            ]
            small = [
                (b, keys)
                for b, (keys, truncated) in zip(buckets, firsts, strict=True)
                if not truncated
            ]
            if progress is not None:
                progress(sum(len(keys) for _, keys in small))
            listings = small + list(
                pool.map(lambda job: (job[0], self._list(job[0], job[1], progress)[0]), jobs)
            )
            # base buckets first, so that an object's partition entries win (Score's lookup order)
            for bucket, keys in sorted(listings, key=lambda item: item[0] not in base):
                for key, size, etag in keys:
                    name = key[len(prefix) :]
                    if name.endswith(".meta") and bucket in state_buckets:
                        if is_object_id(name[:-5]):
                            metas[name[:-5]] = etag
                    elif bucket in object_buckets and is_object_id(name):
                        blobs[name] = (size, etag)
        out = {}
        for oid in blobs.keys() | metas.keys():
            blob = blobs.get(oid)
            meta = metas.get(oid)
            out[oid] = StoredObject(
                object_id=oid,
                blob_size=blob[0] if blob else None,
                blob_etag=blob[1] if blob else None,
                has_meta=oid in metas,
                meta_etag=meta,
            )
        return out

    def _list(
        self,
        bucket: str,
        prefix: str,
        progress: Callable[[int], object] | None,
        max_pages: int | None = None,
        page_size: int = 0,
    ) -> tuple[list[tuple[str, int, str | None]], bool]:
        """(key, size, ETag) under a prefix, and whether max_pages stopped before the end."""
        out: list[tuple[str, int, str | None]] = []
        token = None
        for _ in itertools.count() if max_pages is None else range(max_pages):
            # (page_size was once named like the answer below, which then became the next MaxKeys:
            # a listing longer than one page failed on AWS)
            kwargs: dict[str, Any] = {"Prefix": prefix, "MaxKeys": page_size or LIST_MAX_KEYS}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = self._call("list_objects_v2", bucket, None, **kwargs)
            except Internal as exc:
                base = (self.bucket, self.state_bucket)
                if exc.context.get("code") == "NoSuchBucket" and bucket not in base:
                    return out, False  # a partition bucket that was never created holds nothing
                raise
            contents = page.get("Contents", [])
            for item in contents:
                out.append((item["Key"], item["Size"], (item.get("ETag") or "").strip('"') or None))
            if progress is not None and contents:
                progress(len(contents))
            if not page.get("IsTruncated"):
                return out, False
            token = page["NextContinuationToken"]
        return out, True

    def list_object_ids(self) -> Iterator[str]:
        found = self.inventory()
        return iter(sorted(oid for oid, entry in found.items() if entry.has_meta))

    # -- serving ----------------------------------------------------------------------------------

    def presigned_url(self, object_id: str, *, expires: int | None = None) -> str:
        """A presigned GET of the whole blob (clients add a Range header for a part)."""
        located = self._located_spec(object_id)
        bucket = located[1] if located else self.object_bucket(object_id)
        return self._presign(bucket, self.data_key(object_id), expires)

    def sentinel_url(self, *, expires: int | None = None) -> str:
        self.ensure_sentinel()  # score-client GETs it before its first upload
        return self._presign(self.bucket, self.sentinel_key, expires)

    def _presign(self, bucket: str, key: str, expires: int | None) -> str:
        return self.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": bucket, "Key": key},
            ExpiresIn=expires or self.url_expiration,
        )

    def ping(self) -> bool:
        try:
            self._call("head_object", self.bucket, self.sentinel_key)
            return True
        except (bex.ClientError, Internal):
            return False

    def describe(self) -> str:
        where = self.endpoint_url or "AWS S3"
        state = "" if self.state_bucket == self.bucket else f", .meta in s3://{self.state_bucket}"
        pool = f", {self.bucket_pool} partition buckets" if self.bucket_pool else ""
        return f"S3 object store s3://{self.bucket}/{self.data_dir} at {where}{state}{pool}"

    def close(self) -> None:
        self.s3.close()


def _code(exc: bex.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _etag(response: Mapping[str, Any]) -> str | None:
    etag = response.get("ETag")
    return etag.strip('"') if etag else None


def _read_fully(src: RawIOBase, buf: bytearray) -> int:
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = src.readinto(view[got:])
        if not n:
            break
        got += n
    return got
