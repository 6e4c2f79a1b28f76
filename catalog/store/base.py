"""The ObjectStore interface every backend implements, in Score's layout.

    ObjectStore (abc)                   one interface; backends: local.py and s3.py
      put_file(id, path, *, expected_md5, expected_size) -> ObjectSpec
                                        hash while streaming, verify, idempotent, .meta last
      put_files([PutRequest]) -> [ObjectSpec | error]
                                        many at once (the local store syncs small ones together)
      exists(id) -> bool                Score's rule: data/<id>.meta is present (blob not looked at)
      read_meta(id) -> dict | None      raw .meta JSON (what Score's download endpoint answers)
      spec(id) -> ObjectSpec | None     the parsed .meta
      blob_spec(id), served_spec(id)    Score's fallback: a spec made from a blob without .meta
      open_range(id, offset, length)    binary file-like over a byte range of the blob
      delete(id), ping(), describe(), list_object_ids()
      inventory(), listed_spec(), blob_problem(), blob_mismatch()
                                        what ``storage verify`` and publish check, from listings
    RangeReader                         a byte range of any readable (a file, an S3 body) as a
                                        raw stream

Invariant of every backend: a .meta exists only when the blob beside it is complete and matches it.
"""

from __future__ import annotations

import abc
import io
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from io import RawIOBase
from typing import Any, BinaryIO

from ..errors import (
    InvalidStorageResponse,
    MismatchingObjectSize,
    SonglakeError,
    StorageCheckFailed,
)
from .hashing import hash_stream
from .layout import DEFAULT_PART_SIZE, ObjectSpec, check_object_id


class RangeReader(io.RawIOBase):
    """At most ``length`` bytes (all of them with None) of a readable, from where it stands: an
    open file (read into the caller's buffer) or a stream with only ``read(n)`` (an S3 body)."""

    def __init__(self, source: Any, length: int | None = None) -> None:
        self._source = source
        self._left = length
        self._readinto = getattr(source, "readinto", None)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = len(b) if self._left is None else min(len(b), self._left)
        if n <= 0:
            return 0
        if self._readinto is not None:
            got = self._readinto(memoryview(b)[:n]) or 0
        else:
            data = self._source.read(n)
            got = len(data)
            memoryview(b)[:got] = data
        if self._left is not None:
            self._left -= got
        return got

    def close(self) -> None:
        try:
            self._source.close()
        finally:
            super().close()


@dataclass(frozen=True)
class PutRequest:
    """One file for ``put_files``: what ``put_file`` takes."""

    object_id: str
    path: str
    expected_md5: str | None = None
    expected_size: int | None = None


def request_context(
    object_id: str, path: str | os.PathLike[str], expected_md5: str | None
) -> tuple[str, str | None, dict[str, str]]:
    oid = check_object_id(object_id)
    want_md5 = expected_md5.lower() if expected_md5 else None
    return oid, want_md5, {"object_id": oid, "path": str(path)}


class ObjectStore(abc.ABC):
    """Score-layout object storage. Object ids are UUID strings (BadRequest otherwise)."""

    part_size: int = DEFAULT_PART_SIZE

    def put_file(
        self,
        object_id: str,
        path: str | os.PathLike[str],
        *,
        expected_md5: str | None = None,
        expected_size: int | None = None,
    ) -> ObjectSpec:
        """Store a file under object_id, verified against the expected size and md5; a no-op
        when the object is already stored with that content."""
        oid, want_md5, ctx = request_context(object_id, path, expected_md5)
        with open(path, "rb", buffering=0) as src:
            size, current = self._present(oid, src, want_md5, expected_size, ctx)
            if current is not None:
                return current
            return self._store(oid, src, size, want_md5, ctx)

    def put_files(self, requests: Sequence[PutRequest]) -> list[ObjectSpec | Exception]:
        """``put_file`` for each request, in order; each gets its spec or the error it raised
        (a SonglakeError, or an OSError reading the source)."""
        out: list[ObjectSpec | Exception] = []
        for r in requests:
            try:
                out.append(
                    self.put_file(
                        r.object_id,
                        r.path,
                        expected_md5=r.expected_md5,
                        expected_size=r.expected_size,
                    )
                )
            except (SonglakeError, OSError) as exc:
                out.append(exc)
        return out

    groups_puts = False  # True when put_files costs less than one put_file per file

    def _present(
        self,
        oid: str,
        src: RawIOBase,
        want_md5: str | None,
        expected_size: int | None,
        ctx: dict[str, Any],
    ) -> tuple[int, ObjectSpec | None]:
        """The source's size, checked against the expected one, and the stored spec when the
        object is already stored with this content (then nothing needs copying)."""
        size = os.fstat(src.fileno()).st_size
        if expected_size is not None and size != expected_size:
            raise MismatchingObjectSize(
                f"The file '{ctx['path']}' has {size} bytes but {expected_size} were expected "
                f"for objectId '{oid}'",
                **ctx,
            )
        current = self._complete_spec(oid)
        if current is not None and current.object_size == size:
            # Already stored? With an expected md5 the stored object is what the caller wants
            # (the source is not re-read); without one, hash the source to compare.
            have = want_md5
            if have is None:
                have, _ = hash_stream(src)
                src.seek(0)
            if current.object_md5 == have:
                return size, current
        return size, None

    @abc.abstractmethod
    def _complete_spec(self, object_id: str) -> ObjectSpec | None:
        """The stored spec when the object is fully present (bytes and .meta agree), else None."""

    @abc.abstractmethod
    def _store(
        self, oid: str, src: RawIOBase, size: int, want_md5: str | None, ctx: dict[str, Any]
    ) -> ObjectSpec:
        """Copy src into storage (hashing while copying), verify it, write the .meta last."""

    @abc.abstractmethod
    def exists(self, object_id: str) -> bool: ...

    @abc.abstractmethod
    def read_meta(self, object_id: str) -> dict[str, Any] | None:
        """The raw .meta JSON object, or None; Internal if it is not a JSON object."""

    def spec(self, object_id: str) -> ObjectSpec | None:
        raw = self.read_meta(object_id)
        if raw is None:
            return None
        try:
            return ObjectSpec.from_json(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidStorageResponse(
                f"The object specification of objectId '{object_id}' is invalid: {exc}",
                object_id=object_id,
            ) from exc

    def blob_spec(self, object_id: str) -> dict[str, Any] | None:
        """Score's fallback (5.10.1) when the .meta is missing: a spec made from the blob itself
        (parts planned over its size, md5 from its md5chksum or None), or None without a blob."""
        return None

    def last_modified(self, object_id: str) -> int:
        """When the blob was last written, in epoch milliseconds (0: unknown)."""
        return 0

    def served_spec(self, object_id: str) -> ObjectSpec | None:
        """The .meta's spec, else the one ``blob_spec`` makes."""
        found = self.spec(object_id)
        if found is None:
            raw = self.blob_spec(object_id)
            found = ObjectSpec.from_json(raw) if raw is not None else None
        return found

    @abc.abstractmethod
    def open_range(self, object_id: str, offset: int = 0, length: int = -1) -> BinaryIO:
        """A readable binary file-like over [offset, offset+length) (length -1: to the end)."""

    @abc.abstractmethod
    def delete(self, object_id: str) -> None:
        """Remove the .meta first (the object is then absent), then the blob. Idempotent."""

    @abc.abstractmethod
    def ping(self) -> bool: ...

    @abc.abstractmethod
    def describe(self) -> str: ...

    @abc.abstractmethod
    def list_object_ids(self) -> Iterator[str]: ...

    # -- checking and serving (used by `storage verify|sync`, publish and downloads) ------------

    def inventory(self, progress: Callable[[int], object] | None = None) -> dict[str, StoredObject]:
        """Every object found in storage, from listings alone (no call per object)."""
        raise NotImplementedError

    def listed_spec(self, entry: StoredObject, size: int, md5: str) -> ObjectSpec | None:
        """The spec a listed .meta is known to hold without reading it, else None."""
        return None

    def blob_problem(self, object_id: str, spec: ObjectSpec) -> StorageCheckFailed | None:
        """When the blob contradicts its spec, the error saying why (missing: StorageCheckFailed,
        size: MismatchingObjectSize, checksum: MismatchingObjectChecksum), its message the reason;
        else None."""
        return None

    def blob_mismatch(
        self, spec: ObjectSpec, listed: Mapping[str, Any]
    ) -> StorageCheckFailed | None:
        """Like blob_problem, from a listing entry ({"Size", "ETag"}) instead of a request."""
        if listed.get("Size") != spec.object_size:
            return MismatchingObjectSize(
                f"the blob has {listed.get('Size')} bytes, the .meta says {spec.object_size}"
            )
        return None

    def open_file(self, object_id: str) -> BinaryIO | None:
        """The blob as a seekable file of this machine, which a server can send by itself without
        a thread per client; None when the backend has no such file."""
        return None

    def presigned_url(self, object_id: str, *, expires: int | None = None) -> str | None:
        """A URL that GETs the blob with no other credential, or None (the API serves it)."""
        return None

    def sentinel_url(self, *, expires: int | None = None) -> str | None:
        return None


@dataclass(frozen=True)
class StoredObject:
    """One object as a listing shows it: its blob (size, ETag) and whether a .meta is beside it."""

    object_id: str
    blob_size: int | None  # None: no blob
    blob_etag: str | None
    has_meta: bool
    meta_etag: str | None = None
