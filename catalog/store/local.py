"""The embedded object store: Score's layout on a local file system.

    <root>/data/<objectId>          the bytes
    <root>/data/<objectId>.meta     the ObjectSpecification, named only once its blob is durable
    <root>/data/heliograph          the sentinel

New blobs and .meta files are written nameless (newfiles.py), fsynced, then named blob first;
``put_files`` does that for a group of small files with one pass of syncs.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from io import RawIOBase
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import (
    Internal,
    MismatchingObjectChecksum,
    MismatchingObjectSize,
    SonglakeError,
    StorageCheckFailed,
    StorageObjectNotFound,
)
from .base import ObjectStore, PutRequest, RangeReader, StoredObject, request_context
from .hashing import BUFFER_SIZE, copy_with_hashes
from .layout import (
    DATA_DIR,
    DEFAULT_PART_SIZE,
    MIB,
    SENTINEL,
    SENTINEL_CONTENT,
    ObjectSpec,
    check_object_id,
    is_object_id,
    parse_meta,
    part_plan,
    range_end,
)
from .newfiles import Folder, NewFile, write_file

WRITEBACK_EVERY = 32 * MIB  # a large copy asks the kernel to start writing back this often


GROUP_MAX_BYTES = MIB  # the local store's put_files syncs files up to this size together


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
        write_file(self._data / SENTINEL, SENTINEL_CONTENT)

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
        src: RawIOBase,
        size: int,
        want_md5: str | None,
        ctx: dict[str, Any],
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
            raise MismatchingObjectSize(
                f"Wrote {written} bytes for objectId '{oid}' but the file has {size}",
                **ctx,
            )
        if want_md5 is not None and md5 != want_md5:
            raise MismatchingObjectChecksum(
                f"The file '{ctx['path']}' has md5 {md5} but {want_md5} was expected "
                f"for objectId '{oid}'",
                **ctx,
            )
        return ObjectSpec(oid, size, md5, tuple(parts))

    def _fill(
        self,
        item: _Staged,
        folder: Folder,
        src: RawIOBase,
        size: int,
        want_md5: str | None,
        ctx: dict[str, Any],
    ) -> None:
        """Copy and verify ``src`` into the item's nameless blob, then write its .meta."""
        item.spec = self._copy_in(ctx["object_id"], src, size, want_md5, ctx, item.blob.file)
        item.meta = folder.new()
        item.meta.file.write(item.spec.to_json().encode())

    def _store(
        self, oid: str, src: RawIOBase, size: int, want_md5: str | None, ctx: dict[str, Any]
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
        oid, want_md5, ctx = request_context(r.object_id, r.path, r.expected_md5)
        with open(r.path, "rb", buffering=0) as src:
            size, current = self._present(oid, src, want_md5, r.expected_size, ctx)
            if current is not None:
                return current
            item = _Staged(index, folder.new())
            staged.append(item)
            self._fill(item, folder, src, size, want_md5, ctx)
        return None

    def last_modified(self, object_id: str) -> int:
        try:
            return self._blob(object_id).stat().st_mtime_ns // 1_000_000
        except FileNotFoundError:
            return 0

    def blob_spec(self, object_id: str) -> dict[str, Any] | None:
        try:
            size = self._blob(object_id).stat().st_size
        except FileNotFoundError:
            return None
        return ObjectSpec(object_id, size, None, tuple(part_plan(size, self.part_size))).to_dict()

    def open_range(self, object_id: str, offset: int = 0, length: int = -1) -> BinaryIO:
        end = range_end(object_id, self.served_spec(object_id), offset, length)
        try:
            f = open(self._blob(object_id), "rb", buffering=0)  # closed by the reader
        except FileNotFoundError:
            raise StorageObjectNotFound(
                f"The data of objectId '{object_id}' is missing from the storage server",
                object_id=object_id,
            ) from None
        f.seek(offset)
        return io.BufferedReader(RangeReader(f, end - offset), BUFFER_SIZE)

    def open_file(self, object_id: str) -> BinaryIO:
        try:
            return open(self._blob(object_id), "rb")  # closed by its reader
        except FileNotFoundError:
            raise StorageObjectNotFound(
                f"The data of objectId '{object_id}' is missing from the storage server",
                object_id=object_id,
            ) from None

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

    def blob_problem(self, object_id: str, spec: ObjectSpec) -> StorageCheckFailed | None:
        try:
            size = self._blob(object_id).stat().st_size
        except FileNotFoundError:
            return StorageCheckFailed(f"the blob {self._blob(object_id)} is missing")
        return self.blob_mismatch(spec, {"Size": size})
