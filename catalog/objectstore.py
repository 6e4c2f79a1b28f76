"""Object storage in Score's layout, and Song's publish-time storage check.

    ObjectStore (abc)                   one interface; backends: local (here), S3 (own module)
      put_file(id, path, *, expected_md5, expected_size) -> ObjectSpec
                                        hash while streaming, verify, idempotent, .meta last
      put_files([PutRequest]) -> [ObjectSpec | error]
                                        many at once (the local store syncs small ones together)
      exists(id) -> bool                Score's rule: data/<id>.meta is present (blob not looked at)
      read_meta(id) -> dict | None      raw .meta JSON (what Score's download endpoint answers)
      spec(id) -> ObjectSpec | None     the parsed .meta
      open_range(id, offset, length)    binary file-like over a byte range of the blob
      delete(id), ping(), describe(), list_object_ids()
    LocalObjectStore(root, part_md5=False)
                                        <root>/data/<id>, <root>/data/<id>.meta, data/heliograph
    verify_for_publish(store, analysis_id, files, *, ignore_undefined_md5)
                                        Song's publish-time storage checks, in Song's order
    ObjectSpec / Part                   Score's ObjectSpecification JSON (to_json / from_json)
    part_plan(size, part_size)          Score's SimplePartCalculator
    md5_file(path) -> (hex, size)       streaming md5

Invariant of every backend: a .meta exists only when the blob beside it is complete and matches it.
"""

from __future__ import annotations

import abc
import hashlib
import io
import itertools
import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from catalog.errors import BadRequest, Internal, NotFound, SonglakeError, StorageCheckFailed
from catalog.newfiles import Folder, NewFile

MIB = 1024 * 1024
MIN_PART_SIZE = 20 * MIB  # Score's floor (20,971,520 bytes)
DEFAULT_PART_SIZE = MIN_PART_SIZE
MAX_PARTS = 10_000
BUFFER_SIZE = MIB
COPY_BUFFER_SIZE = 4 * MIB
COPY_RING = 4  # buffers in flight through the copy pipeline
WRITEBACK_EVERY = 32 * MIB  # a large copy asks the kernel to start writing back this often
GROUP_MAX_BYTES = MIB  # the local store's put_files syncs files up to this size together
DATA_DIR = "data"
SENTINEL = "heliograph"
SENTINEL_CONTENT = b"songlake sentinel\n"

_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# Song's validation of Score's download response (song-api.md §5 step 5)
_SONG_OBJECT_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9\-_]{1,34}[a-zA-Z0-9]")
_MD5_RE = re.compile(r"[a-fA-F0-9]{32}")


def _md5() -> Any:
    return hashlib.md5(usedforsecurity=False)


def is_object_id(value: object) -> bool:
    """True for a canonical UUID string (the only object ids this store accepts)."""
    return isinstance(value, str) and _UUID_RE.fullmatch(value) is not None


def check_object_id(value: object) -> str:
    if not is_object_id(value):
        raise BadRequest(
            f"The objectId '{value}' is not a valid UUID",
            error_id="malformed.parameter",
            object_id=str(value),
        )
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class Part:
    part_number: int  # 1-based
    part_size: int
    offset: int
    source_md5: str | None = None  # hex md5 of this byte range

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "partNumber": self.part_number,
            "partSize": self.part_size,
            "offset": self.offset,
            "url": None,
            "md5": None,
        }
        if self.source_md5 is not None:  # Score omits it when null
            out["sourceMd5"] = self.source_md5
        return out


@dataclass(frozen=True)
class ObjectSpec:
    """Score's ObjectSpecification (the .meta companion)."""

    object_id: str
    object_size: int
    object_md5: str | None
    parts: tuple[Part, ...] = ()
    upload_id: str | None = field(default=None, compare=False)  # None -> object_id

    @property
    def object_key(self) -> str:
        return f"{DATA_DIR}/{self.object_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectKey": self.object_key,
            "objectId": self.object_id,
            "uploadId": self.upload_id or self.object_id,
            "parts": [p.to_dict() for p in self.parts],
            "objectSize": self.object_size,
            "objectMd5": self.object_md5,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> ObjectSpec:
        """Parse a .meta (text or dict); unknown fields such as "relocated" are ignored."""
        obj = json.loads(data) if isinstance(data, str | bytes) else data
        if not isinstance(obj, Mapping):
            raise ValueError("an ObjectSpecification must be a JSON object")
        parts = tuple(
            sorted(
                (
                    Part(
                        int(p["partNumber"]),
                        int(p["partSize"]),
                        int(p["offset"]),
                        p.get("sourceMd5"),
                    )
                    for p in obj.get("parts") or ()
                ),
                key=lambda p: p.part_number,
            )
        )
        return cls(
            object_id=str(obj["objectId"]),
            object_size=int(obj["objectSize"]),
            object_md5=obj.get("objectMd5"),
            parts=parts,
            upload_id=obj.get("uploadId"),
        )


def part_plan(size: int, part_size: int = DEFAULT_PART_SIZE) -> list[Part]:
    """Score's SimplePartCalculator: consecutive parts, >= 20 MiB each, at most 10,000."""
    if size < 0:
        raise ValueError("size must be >= 0")
    min_part = max(part_size, MIN_PART_SIZE)
    step = max(min_part, size // MAX_PARTS + 1)
    return [
        Part(number, min(step, size - offset), offset)
        for number, offset in enumerate(range(0, size, step), start=1)
    ]


def md5_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(lowercase hex md5, size) of a file, streamed with a 1 MiB buffer."""
    with open(path, "rb", buffering=0) as src:
        digest, size = _hash_stream(src)
    return digest, size


def _hash_stream(src: BinaryIO) -> tuple[str, int]:
    h = _md5()
    buf = bytearray(BUFFER_SIZE)
    view = memoryview(buf)
    size = 0
    while n := src.readinto(buf):
        h.update(view[:n])
        size += n
    return h.hexdigest(), size


def copy_with_hashes(
    src: BinaryIO,
    size: int,
    write: Callable[[memoryview], object] | None = None,
    *,
    part_size: int = DEFAULT_PART_SIZE,
    part_md5: bool = True,
) -> tuple[str, list[Part]]:
    """Read ``src`` once: pass each chunk to ``write`` and hash it (whole md5 + per-part sourceMd5).

    ``size`` (from stat) fixes the part plan; a source that turns out longer or shorter raises
    StorageCheckFailed (mismatching.storage.object.sizes). Returns (md5 hex, parts with sourceMd5).
    Without ``part_md5`` the parts of a multi-part plan carry no sourceMd5 (one md5 per byte, not
    two; Score's clients skip the per-part check then, score-storage.md §1.3 and §3.3).
    """
    plan = part_plan(size, part_size)
    whole = _md5()
    parts = PartHasher(plan) if len(plan) > 1 and part_md5 else None
    stages: list[Callable[[memoryview], object]] = [whole.update]
    if parts is not None:
        stages.append(parts.update)
    if write is not None:
        stages.append(write)
    if size <= COPY_BUFFER_SIZE:  # small: one thread, no pipeline to set up
        buf = bytearray(max(size + 1, 64 * 1024))  # not 4 MiB of zeroes for a 1 KiB file
        view = memoryview(buf)
        total = 0
        while n := src.readinto(buf):
            for stage in stages:
                stage(view[:n])
            total += n
    else:
        total = _pipeline(src, stages)
    if total != size:
        raise StorageCheckFailed(
            f"The source changed while it was read: {total} bytes read, {size} expected",
            error_id="mismatching.storage.object.sizes",
        )
    digest = whole.hexdigest()
    if len(plan) <= 1:  # zero or one part: the part's md5 is the file's
        return digest, [replace(p, source_md5=digest) for p in plan]
    return digest, parts.done if parts is not None else plan


def _pipeline(src: BinaryIO, stages: list[Callable[[memoryview], object]]) -> int:
    """Feed ``src`` chunk by chunk to each stage, every stage in its own thread and in order.

    The md5s and the write overlap one another and the next reads (hashlib and file writes release
    the GIL), so hashing twice and writing cost about as much as the slowest of them alone.
    A buffer is read into again only once every stage is done with it. Returns the bytes read.
    """
    ring = [bytearray(COPY_BUFFER_SIZE) for _ in range(COPY_RING)]
    pools = [ThreadPoolExecutor(1, thread_name_prefix="copy-stage") for _ in stages]
    in_flight: deque[list[Future[object]]] = deque()
    total = 0
    try:
        for i in itertools.count():
            if len(in_flight) == COPY_RING:
                for fut in in_flight.popleft():
                    fut.result()
            buf = ring[i % COPY_RING]
            n = src.readinto(buf)
            if not n:
                break
            chunk = memoryview(buf)[:n]
            steps = zip(pools, stages, strict=True)
            in_flight.append([pool.submit(stage, chunk) for pool, stage in steps])
            total += n
        for futures in in_flight:
            for fut in futures:
                fut.result()
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    return total


class PartHasher:
    """Per-part md5s (Score's sourceMd5) of a stream fed in order, chunk by chunk."""

    def __init__(self, plan: list[Part]) -> None:
        self.plan = plan
        self.done: list[Part] = []
        self._hash, self._left = _md5(), (plan[0].part_size if plan else 0)

    def update(self, chunk: memoryview) -> None:
        n, pos = len(chunk), 0
        while pos < n and len(self.done) < len(self.plan):
            take = min(self._left, n - pos)
            self._hash.update(chunk[pos : pos + take])
            pos += take
            self._left -= take
            if self._left == 0:
                digest = self._hash.hexdigest()
                self.done.append(replace(self.plan[len(self.done)], source_md5=digest))
                if len(self.done) < len(self.plan):
                    self._hash, self._left = _md5(), self.plan[len(self.done)].part_size


class _RangeReader(io.RawIOBase):
    """At most ``length`` bytes of an open file, from its current position."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self._f, self._left = f, length

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._left)
        if n <= 0:
            return 0
        got = self._f.readinto(memoryview(b)[:n]) or 0  # type: ignore[attr-defined]
        self._left -= got
        return got

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


@dataclass(frozen=True)
class PutRequest:
    """One file for ``put_files``: what ``put_file`` takes."""

    object_id: str
    path: str
    expected_md5: str | None = None
    expected_size: int | None = None


def _request(
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
        oid, want_md5, ctx = _request(object_id, path, expected_md5)
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
        src: BinaryIO,
        want_md5: str | None,
        expected_size: int | None,
        ctx: dict[str, str],
    ) -> tuple[int, ObjectSpec | None]:
        """The source's size, checked against the expected one, and the stored spec when the
        object is already stored with this content (then nothing needs copying)."""
        size = os.fstat(src.fileno()).st_size
        if expected_size is not None and size != expected_size:
            raise StorageCheckFailed(
                f"The file '{ctx['path']}' has {size} bytes but {expected_size} were expected "
                f"for objectId '{oid}'",
                error_id="mismatching.storage.object.sizes",
                **ctx,
            )
        current = self._complete_spec(oid)
        if current is not None and current.object_size == size:
            # Already stored? With an expected md5 the stored object is what the caller wants
            # (the source is not re-read); without one, hash the source to compare.
            have = want_md5
            if have is None:
                have, _ = _hash_stream(src)
                src.seek(0)
            if current.object_md5 == have:
                return size, current
        return size, None

    @abc.abstractmethod
    def _complete_spec(self, object_id: str) -> ObjectSpec | None:
        """The stored spec when the object is fully present (bytes and .meta agree), else None."""

    @abc.abstractmethod
    def _store(
        self, oid: str, src: BinaryIO, size: int, want_md5: str | None, ctx: dict[str, str]
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
            raise Internal(
                f"The object specification of objectId '{object_id}' is invalid: {exc}",
                error_id="invalid.storage.download.response",
                object_id=object_id,
            ) from exc

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

    def blob_problem(self, object_id: str, spec: ObjectSpec) -> tuple[str, str] | None:
        """(error id, reason) when the blob contradicts its spec (missing, size, checksum)."""
        return None

    def blob_mismatch(self, spec: ObjectSpec, listed: Mapping[str, Any]) -> tuple[str, str] | None:
        """Like blob_problem, from a listing entry ({"Size", "ETag"}) instead of a request."""
        if listed.get("Size") != spec.object_size:
            return (
                "mismatching.storage.object.sizes",
                f"the blob has {listed.get('Size')} bytes, the .meta says {spec.object_size}",
            )
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


def open_store(settings: Any) -> ObjectStore:
    """The object store the settings name: ``local`` (<root>/objects) or ``s3`` (boto3)."""
    kind = settings.object_store
    if kind == "local":
        return LocalObjectStore(settings.objects_dir, part_md5=settings.local_part_md5)
    if kind == "s3":
        from .s3store import S3ObjectStore  # boto3 is imported only when S3 is configured

        return S3ObjectStore.from_settings(settings)
    raise BadRequest(
        f"Setting 'object_store' must be 'local' or 's3', not {kind!r}",
        error_id="malformed.parameter",
    )


def parse_meta(object_id: str, raw: bytes | str) -> dict[str, Any]:
    """A stored .meta as a JSON object; Internal (invalid.storage.download.response) otherwise."""
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise Internal(
            f"The object specification of objectId '{object_id}' is not a JSON object",
            error_id="invalid.storage.download.response",
            object_id=object_id,
        )
    return obj


def range_end(object_id: str, spec: ObjectSpec | None, offset: int, length: int) -> int:
    """Where a ranged read of a stored object ends (length -1 = to the end), or Score's errors."""
    if spec is None:
        raise NotFound(
            f"The object with objectId '{object_id}' does not exist in the storage server",
            error_id="storage.object.not.found",
            object_id=object_id,
        )
    size = spec.object_size
    end = size if length == -1 else offset + length
    if offset < 0 or length < -1 or offset > size or end > size:
        raise BadRequest(
            f"The range offset={offset} length={length} is outside objectId '{object_id}' "
            f"({size} bytes)",
            error_id="malformed.parameter",
            object_id=object_id,
        )
    return end


class _WritebackWriter:
    """Writes a large copy and asks the kernel to write it back as it goes.

    Left alone, the kernel keeps gigabytes dirty in the page cache and the final fsync then writes
    them all while nothing else happens; starting writeback every ``WRITEBACK_EVERY`` bytes
    overlaps the disk with the hashing, so the fsync finds little left to do. (On Linux,
    POSIX_FADV_DONTNEED starts writeback of the dirty range and drops the stored copy's clean
    pages, which nobody reads back soon.) A hint only: the fsync after the copy is what counts.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._fd = out.fileno()
        self._written = self._hinted = 0

    def __call__(self, chunk: memoryview) -> None:
        self._out.write(chunk)
        self._written += len(chunk)
        if self._written - self._hinted >= WRITEBACK_EVERY and hasattr(os, "posix_fadvise"):
            self._out.flush()
            os.posix_fadvise(
                self._fd, self._hinted, self._written - self._hinted, os.POSIX_FADV_DONTNEED
            )
            self._hinted = self._written


@dataclass
class _Staged:
    """A local-store object between its copy and its naming (``put_file`` and ``put_files``)."""

    index: int
    blob: NewFile
    meta: NewFile | None = None
    spec: ObjectSpec = field(default=None)  # type: ignore[assignment]

    def start_writeback(self) -> None:
        assert self.meta is not None
        self.blob.start_writeback()
        self.meta.start_writeback()

    def sync(self) -> None:
        assert self.meta is not None
        self.blob.sync()
        self.meta.sync()

    def place(self, folder: Folder) -> None:
        """Name the blob, then its .meta (an older object turns absent before its bytes change;
        a .meta that cannot be named takes its new blob away again)."""
        assert self.meta is not None
        oid = self.spec.object_id
        try:
            os.unlink(f"{oid}.meta", dir_fd=folder.fd)
        except FileNotFoundError:
            pass
        self.blob.name_as(oid, replace=True)
        try:
            self.meta.name_as(f"{oid}.meta", replace=True)
        except BaseException:
            os.unlink(oid, dir_fd=folder.fd)
            raise

    def discard(self) -> None:
        self.blob.close()
        if self.meta is not None:
            self.meta.close()


class LocalObjectStore(ObjectStore):
    """Score's layout on a local file system: ``<root>/data/<id>`` and ``<root>/data/<id>.meta``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        part_size: int = DEFAULT_PART_SIZE,
        part_md5: bool = False,
    ) -> None:
        self.root = Path(root)
        self.part_size = part_size
        self.part_md5 = part_md5
        self._data = self.root / DATA_DIR
        self._data.mkdir(parents=True, exist_ok=True)
        if not (self._data / SENTINEL).exists():
            self._write_sentinel()

    # -- paths -----------------------------------------------------------------------------------
    def _blob(self, object_id: str) -> Path:
        return self._data / check_object_id(object_id)

    def _meta(self, object_id: str) -> Path:
        return self._data / f"{check_object_id(object_id)}.meta"

    def _write_sentinel(self) -> None:
        with Folder(self._data) as folder:
            new = folder.new()
            try:
                new.file.write(SENTINEL_CONTENT)
                new.sync()
                new.name_as(SENTINEL, replace=True)
                folder.sync()
            finally:
                new.close()

    # -- interface -------------------------------------------------------------------------------
    def exists(self, object_id: str) -> bool:
        return self._meta(object_id).is_file()

    def read_meta(self, object_id: str) -> dict[str, Any] | None:
        try:
            text = self._meta(object_id).read_bytes()
        except FileNotFoundError:
            return None
        return parse_meta(object_id, text)

    def _complete_spec(self, object_id: str) -> ObjectSpec | None:
        """The current spec if its blob is present with the recorded size, else None."""
        try:
            current = self.spec(object_id)
            if current is not None and self._blob(object_id).stat().st_size == current.object_size:
                return current
        except (FileNotFoundError, Internal):
            pass
        return None

    def _copy_in(
        self,
        oid: str,
        src: BinaryIO,
        size: int,
        want_md5: str | None,
        ctx: dict[str, str],
        out: BinaryIO,
    ) -> ObjectSpec:
        """Copy ``src`` into the new file ``out`` while hashing it; verify size and md5."""
        write = _WritebackWriter(out) if size > WRITEBACK_EVERY else out.write
        try:
            md5, parts = copy_with_hashes(
                src, size, write, part_size=self.part_size, part_md5=self.part_md5
            )
        except StorageCheckFailed as exc:
            exc.context.update(ctx)
            raise
        out.flush()
        written = os.fstat(out.fileno()).st_size
        if written != size:
            raise StorageCheckFailed(
                f"Wrote {written} bytes for objectId '{oid}' but the file has {size}",
                error_id="mismatching.storage.object.sizes",
                **ctx,
            )
        if want_md5 is not None and md5 != want_md5:
            raise StorageCheckFailed(
                f"The file '{ctx['path']}' has md5 {md5} but {want_md5} was expected "
                f"for objectId '{oid}'",
                error_id="mismatching.storage.object.checksums",
                **ctx,
            )
        return ObjectSpec(oid, size, md5, tuple(parts))

    def _fill(
        self,
        item: _Staged,
        folder: Folder,
        src: BinaryIO,
        size: int,
        want_md5: str | None,
        ctx: dict[str, str],
    ) -> None:
        """Copy and verify ``src`` into the item's nameless blob, then write its .meta."""
        item.spec = self._copy_in(ctx["object_id"], src, size, want_md5, ctx, item.blob.file)
        item.meta = folder.new()
        item.meta.file.write(item.spec.to_json().encode())

    def _store(
        self, oid: str, src: BinaryIO, size: int, want_md5: str | None, ctx: dict[str, str]
    ) -> ObjectSpec:
        with Folder(self._data) as folder:
            item = _Staged(0, folder.new())
            try:
                self._fill(item, folder, src, size, want_md5, ctx)
                item.start_writeback()
                item.sync()
                item.place(folder)
                folder.sync()
                return item.spec
            finally:
                item.discard()

    groups_puts = True

    def put_files(self, requests: Sequence[PutRequest]) -> list[ObjectSpec | Exception]:
        """Store many files with one pass of syncs: small files (up to ``GROUP_MAX_BYTES``) are
        each copied and hashed into a new, nameless blob and .meta (newfiles), then all of those
        are fsynced, named (each blob before its .meta) and the directory synced once: half the
        CPU and disk work of one ``put_file`` per small file, with the same guarantee (a .meta is
        named only once its blob is complete and durable). Larger files go through ``put_file``."""
        out: list[ObjectSpec | Exception | None] = [None] * len(requests)
        staged: list[_Staged] = []
        with Folder(self._data) as folder:
            try:
                for i, r in enumerate(requests):
                    if r.expected_size is None or r.expected_size > GROUP_MAX_BYTES:
                        out[i] = super().put_files([r])[0]
                        continue
                    try:
                        out[i] = self._stage(i, r, staged, folder)
                    except (SonglakeError, OSError) as exc:
                        out[i] = exc
                        if staged and staged[-1].index == i:
                            staged.pop().discard()
                for item in staged:  # one pass: the disk sees every small write at once
                    item.start_writeback()
                for item in staged:
                    item.sync()
                placed = False
                for item in staged:
                    try:
                        item.place(folder)
                        placed = True
                        out[item.index] = item.spec
                    except OSError as exc:
                        out[item.index] = exc
                if placed:
                    folder.sync()
            finally:
                for item in staged:
                    item.discard()
        assert all(x is not None for x in out)
        return out  # type: ignore[return-value]

    def _stage(
        self, index: int, r: PutRequest, staged: list[_Staged], folder: Folder
    ) -> ObjectSpec | None:
        """Copy one small file into a new blob and .meta (not yet synced, not yet named);
        the stored spec when the object is already there."""
        oid, want_md5, ctx = _request(r.object_id, r.path, r.expected_md5)
        with open(r.path, "rb", buffering=0) as src:
            size, current = self._present(oid, src, want_md5, r.expected_size, ctx)
            if current is not None:
                return current
            item = _Staged(index, folder.new())
            staged.append(item)
            self._fill(item, folder, src, size, want_md5, ctx)
        return None

    def open_range(self, object_id: str, offset: int = 0, length: int = -1) -> BinaryIO:
        end = range_end(object_id, self.spec(object_id), offset, length)
        try:
            f = open(self._blob(object_id), "rb", buffering=0)  # closed by the reader
        except FileNotFoundError:
            raise NotFound(
                f"The data of objectId '{object_id}' is missing from the storage server",
                error_id="storage.object.not.found",
                object_id=object_id,
            ) from None
        f.seek(offset)
        return io.BufferedReader(_RangeReader(f, end - offset), BUFFER_SIZE)  # type: ignore[return-value]

    def delete(self, object_id: str) -> None:
        self._meta(object_id).unlink(missing_ok=True)
        self._blob(object_id).unlink(missing_ok=True)
        with Folder(self._data) as folder:
            folder.sync()

    def ping(self) -> bool:
        return (self._data / SENTINEL).is_file()

    def describe(self) -> str:
        return f"local object store at {self.root}"

    def list_object_ids(self) -> Iterator[str]:
        names = sorted(p.name[: -len(".meta")] for p in self._data.glob("*.meta"))
        return (n for n in names if is_object_id(n))

    def inventory(self, progress: Callable[[int], object] | None = None) -> dict[str, StoredObject]:
        blobs: dict[str, int] = {}
        metas: set[str] = set()
        with os.scandir(self._data) as entries:
            for n, entry in enumerate(entries, start=1):
                name = entry.name
                if name.endswith(".meta") and is_object_id(name[:-5]):
                    metas.add(name[:-5])
                elif is_object_id(name):
                    blobs[name] = entry.stat().st_size
                if progress is not None and n % 1000 == 0:
                    progress(1000)
        return {
            oid: StoredObject(oid, blobs.get(oid), None, oid in metas)
            for oid in blobs.keys() | metas
        }

    def blob_problem(self, object_id: str, spec: ObjectSpec) -> tuple[str, str] | None:
        try:
            size = self._blob(object_id).stat().st_size
        except FileNotFoundError:
            return ("missing.storage.objects", f"the blob {self._blob(object_id)} is missing")
        return self.blob_mismatch(spec, {"Size": size})


# -- Song's publish-time check (song-api.md §5, steps 3-7) ----------------------------------------


def _validate_download_response(raw: Mapping[str, Any]) -> list[str]:
    errors = []
    oid = raw.get("objectId")
    if oid is None:
        errors.append("#: required key [objectId] not found")
    elif not isinstance(oid, str) or not _SONG_OBJECT_ID_RE.fullmatch(oid):
        errors.append(f"#/objectId: string [{oid}] does not match the objectId pattern")
    size = raw.get("objectSize")
    if size is None:
        errors.append("#: required key [objectSize] not found")
    elif not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        errors.append(f"#/objectSize: {size} is not an integer greater than 0")
    md5 = raw.get("objectMd5")
    if md5 is not None and (not isinstance(md5, str) or not _MD5_RE.fullmatch(md5)):
        errors.append(f"#/objectMd5: [{md5}] is neither null nor a 32-character hex string")
    return errors


def verify_for_publish(
    store: ObjectStore,
    analysis_id: str,
    files: Sequence[Mapping[str, Any]],
    *,
    ignore_undefined_md5: bool = False,
) -> None:
    """Song's storage checks before publishing, in Song's order; the first failure raises."""
    if not files:
        raise Internal(
            f"The analysis with analysisId '{analysis_id}' is missing files and is therefore "
            "corrupted. It should contain at least 1 file",
            error_id="analysis.missing.files",
            analysis_id=analysis_id,
            object_ids=[],
        )
    ids = [str(f.get("objectId")) for f in files]

    missing = [oid for oid in ids if not (is_object_id(oid) and store.exists(oid))]
    if missing:
        raise StorageCheckFailed(
            "The following storage objectIds must be uploaded to the storage server before the "
            f"analysisId {analysis_id} can be published: {','.join(missing)}",
            error_id="missing.storage.objects",
            analysis_id=analysis_id,
            object_ids=missing,
        )

    stored: list[tuple[int, str | None]] = []  # (objectSize, objectMd5) per file
    specs: dict[str, ObjectSpec] = {}
    for oid in ids:
        raw = store.read_meta(oid)
        if raw is None:
            raise NotFound(
                f"The object with objectId '{oid}' does not exist in the storage server",
                error_id="storage.object.not.found",
                analysis_id=analysis_id,
                object_ids=[oid],
            )
        problems = _validate_download_response(raw)
        if problems:
            raise Internal(
                f"The validation of the storage download response for objectId '{oid}' failed "
                f"with the following errors: {'; '.join(problems)}",
                error_id="invalid.storage.download.response",
                analysis_id=analysis_id,
                object_ids=[oid],
            )
        stored.append((raw["objectSize"], raw.get("objectMd5")))
        try:
            specs[oid] = ObjectSpec.from_json(raw)
        except (KeyError, TypeError, ValueError):  # Song ignores parts; so does the blob check
            specs[oid] = ObjectSpec(oid, raw["objectSize"], raw.get("objectMd5"))

    bad_sizes = [
        oid
        for oid, f, (size, _) in zip(ids, files, stored, strict=True)
        if f.get("fileSize") != size
    ]
    if bad_sizes:
        raise StorageCheckFailed(
            "The following file objectIds have mismatching object sizes in the storage server: "
            f"[{' , '.join(bad_sizes)}]. The analysisId '{analysis_id}' cannot be published "
            "until they all match.",
            error_id="mismatching.storage.object.sizes",
            analysis_id=analysis_id,
            object_ids=bad_sizes,
        )

    undefined = [oid for oid, (_, md5) in zip(ids, stored, strict=True) if not md5]
    bad_md5 = [
        oid
        for oid, f, (_, md5) in zip(ids, files, stored, strict=True)
        if md5 and f.get("fileMd5sum") != md5
    ]
    if bad_md5 or (undefined and not ignore_undefined_md5):
        msg = ""
        if ignore_undefined_md5:
            msg = "[WARNING]: Ignoring objectIds with an undefined MD5 checksum. "
        msg += "Found files with a mismatching md5 checksum in the storage server. "
        if undefined:
            msg += "IGNORED objectIds " if ignore_undefined_md5 else "ObjectIds "
            msg += f"with an undefined md5 checksum({len(undefined)}): [{' , '.join(undefined)}]. "
        if bad_md5:
            msg += (
                f"ObjectIds with a defined and mismatching md5 checksum({len(bad_md5)}): "
                f"[{' , '.join(bad_md5)}]. "
            )
        msg += (
            f"The analysisId '{analysis_id}' cannot be published until all files with an "
            "undefined checksum are ignored and ones with a defined checksum are matching"
        )
        offending = bad_md5 + ([] if ignore_undefined_md5 else undefined)
        raise StorageCheckFailed(
            msg,
            error_id="mismatching.storage.object.checksums",
            analysis_id=analysis_id,
            object_ids=offending,
            undefined_md5_object_ids=undefined,
            mismatching_md5_object_ids=bad_md5,
        )

    # Beyond Song, which trusts the .meta alone: the blob must be there and agree with it (size;
    # on S3 also md5chksum and ETag), so an object damaged or replaced after upload is refused.
    for oid in ids:
        found = store.blob_problem(oid, specs[oid])
        if found is not None:
            error_id, reason = found
            raise StorageCheckFailed(
                f"The storage object '{oid}' does not match its object specification: {reason}. "
                f"The analysisId '{analysis_id}' cannot be published until it is uploaded again",
                error_id=error_id,
                analysis_id=analysis_id,
                object_ids=[oid],
            )
