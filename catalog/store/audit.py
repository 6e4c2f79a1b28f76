"""Object storage checked against the registry: ``storage verify`` and ``storage sync``.

    verify_storage(store, files, *, rehash=False) -> StorageReport
        every registered file: its .meta present and agreeing with the registry (objectId,
        objectSize = fileSize, objectMd5 = fileMd5sum, parts contiguous), its blob present with
        that size (and on S3 the ETag the .meta implies); with ``rehash`` the blob's bytes are
        read and their md5 (and each part's sourceMd5) compared.
    sync_storage(store, files, *, root) -> SyncReport
        uploads, from the path recorded at ingest, every registered file that verify finds
        missing or wrong; put_file re-checks size and md5 before anything is replaced.

Scale: presence, sizes and ETags come from one listing of the store (``ObjectStore.inventory``),
never a request per object. A .meta is read only when the store cannot tell its content from the
listing (on S3 a one-part object's .meta is known by its ETag: the md5 of the exact .meta
songlake writes); those reads run in parallel.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SonglakeError
from .base import ObjectStore, StoredObject
from .hashing import COPY_BUFFER_SIZE, PartHasher
from .layout import ObjectSpec

Progress = Callable[[int], object]
META_READERS = 16  # parallel .meta reads
REHASHERS = 4  # parallel blob reads with --rehash

# what a finding says, and whether sync can repair it by uploading the file again
KINDS = {
    "missing": "neither .meta nor blob in storage",
    "missing.meta": "the blob is there but its .meta is missing",
    "missing.blob": "the .meta is there but the blob is missing",
    "invalid.meta": "the .meta cannot be read as an ObjectSpecification",
    "mismatching.meta": "the .meta disagrees with the registry",
    "mismatching.size": "the blob's size differs from the registry",
    "mismatching.blob": "the blob's checksum (ETag, md5chksum) disagrees with its .meta",
    "mismatching.md5": "the blob's bytes no longer have the registered md5 (rehash)",
    "mismatching.part.md5": "a part's bytes no longer have the .meta's sourceMd5 (rehash)",
    "unreadable": "storage answered with an error",
}


@dataclass(frozen=True)
class RegisteredFile:
    object_id: str
    analysis_id: str
    study_id: str
    state: str
    file_name: str
    file_size: int
    file_md5: str
    source_path: str | None


@dataclass(frozen=True)
class Finding:
    object_id: str
    analysis_id: str
    study_id: str
    state: str
    kind: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {
            "objectId": self.object_id,
            "analysisId": self.analysis_id,
            "studyId": self.study_id,
            "analysisState": self.state,
            "kind": self.kind,
            "message": self.message,
        }


@dataclass
class StorageReport:
    store: str
    checked: int = 0
    meta_read: int = 0  # .meta files that had to be fetched
    rehashed_bytes: int = 0
    findings: list[Finding] = field(default_factory=list)
    unregistered: list[str] = field(default_factory=list)  # objects nobody registered

    @property
    def ok(self) -> bool:
        return not self.findings

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.kind] = out.get(f.kind, 0) + 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "checked": self.checked,
            "ok": self.checked - len({f.object_id for f in self.findings}),
            "problems": self.counts(),
            "metaRead": self.meta_read,
            "rehashedBytes": self.rehashed_bytes,
            "unregistered": len(self.unregistered),
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class SyncReport:
    store: str
    checked: int = 0
    uploaded: list[str] = field(default_factory=list)
    failed: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "checked": self.checked,
            "uploaded": len(self.uploaded),
            "failed": [f.to_dict() for f in self.failed],
        }


def _finding(f: RegisteredFile, kind: str, message: str) -> Finding:
    return Finding(f.object_id, f.analysis_id, f.study_id, f.state, kind, message)


def _meta_problems(f: RegisteredFile, spec: ObjectSpec) -> str | None:
    bad = []
    if spec.object_id != f.object_id:
        bad.append(f"objectId {spec.object_id}")
    if spec.object_size != f.file_size:
        bad.append(f"objectSize {spec.object_size} (registered {f.file_size})")
    if spec.object_md5 != f.file_md5:
        bad.append(f"objectMd5 {spec.object_md5} (registered {f.file_md5})")
    offset = 0
    for n, p in enumerate(spec.parts, start=1):
        if p.part_number != n or p.offset != offset or p.part_size <= 0:
            bad.append(f"part {p.part_number} at offset {p.offset} breaks the sequence")
            break
        offset += p.part_size
    else:
        if spec.parts and offset != spec.object_size:
            bad.append(f"parts cover {offset} bytes, not {spec.object_size}")
    return "; ".join(bad) or None


def verify_storage(
    store: ObjectStore,
    files: list[RegisteredFile],
    *,
    everything: bool = True,
    rehash: bool = False,
    progress: Progress | None = None,
    listing_progress: Progress | None = None,
) -> StorageReport:
    """Compare registered files with object storage (see the module docstring); with
    ``everything`` (``files`` is the whole registry) also list stored objects nobody registered."""
    report = StorageReport(store.describe(), checked=len(files))
    inventory = store.inventory(listing_progress)
    if everything:
        known = {f.object_id for f in files}
        report.unregistered = sorted(oid for oid in inventory if oid not in known)

    to_read: list[tuple[RegisteredFile, StoredObject]] = []
    to_check: list[tuple[RegisteredFile, StoredObject, ObjectSpec]] = []
    for f in files:
        entry = inventory.get(f.object_id)
        needs_read = False
        if entry is None or (not entry.has_meta and entry.blob_size is None):
            report.findings.append(_finding(f, "missing", KINDS["missing"]))
        elif not entry.has_meta:
            report.findings.append(_finding(f, "missing.meta", KINDS["missing.meta"]))
        elif entry.blob_size is None:
            report.findings.append(_finding(f, "missing.blob", KINDS["missing.blob"]))
        else:
            spec = store.listed_spec(entry, f.file_size, f.file_md5)
            needs_read = spec is None
            if spec is None:
                to_read.append((f, entry))
            else:
                to_check.append((f, entry, spec))
        if progress is not None and not needs_read:
            progress(1)

    for f, entry, spec_or_error in _read_metas(store, to_read, progress):
        report.meta_read += 1
        if isinstance(spec_or_error, ObjectSpec):
            to_check.append((f, entry, spec_or_error))
        else:
            report.findings.append(_finding(f, *spec_or_error))

    intact: list[tuple[RegisteredFile, ObjectSpec]] = []
    for f, entry, spec in to_check:
        problem = _meta_problems(f, spec)
        if problem is not None:
            report.findings.append(_finding(f, "mismatching.meta", f"the .meta has {problem}"))
            continue
        if entry.blob_size != f.file_size:
            report.findings.append(
                _finding(
                    f,
                    "mismatching.size",
                    f"the blob has {entry.blob_size} bytes, {f.file_size} are registered",
                )
            )
            continue
        listed = {"Size": entry.blob_size, "ETag": entry.blob_etag}
        mismatch = store.blob_mismatch(spec, listed)
        if mismatch is not None:
            report.findings.append(_finding(f, "mismatching.blob", mismatch.message))
            continue
        intact.append((f, spec))

    if rehash:
        for f, _, found, nbytes in _rehash(store, intact):
            report.rehashed_bytes += nbytes
            if found is not None:
                report.findings.append(_finding(f, *found))
    report.findings.sort(key=lambda x: (x.study_id, x.analysis_id, x.object_id))
    return report


def _read_metas(
    store: ObjectStore,
    items: list[tuple[RegisteredFile, StoredObject]],
    progress: Progress | None,
) -> Iterator[tuple[RegisteredFile, StoredObject, ObjectSpec | tuple[str, str]]]:
    def read(item: tuple[RegisteredFile, StoredObject]) -> ObjectSpec | tuple[str, str]:
        try:
            raw = store.read_meta(item[0].object_id)
            if raw is None:  # deleted since the listing
                return ("missing.meta", KINDS["missing.meta"])
            return ObjectSpec.from_json(raw)
        except SonglakeError as exc:
            if exc.error_id == "invalid.storage.download.response":
                return ("invalid.meta", exc.message)
            return ("unreadable", exc.message)
        except (KeyError, TypeError, ValueError) as exc:
            return ("invalid.meta", f"the .meta is not an ObjectSpecification: {exc!r}")

    if not items:
        return
    with ThreadPoolExecutor(META_READERS, thread_name_prefix="meta-read") as pool:
        for item, result in zip(items, pool.map(read, items), strict=True):
            if progress is not None:
                progress(1)
            yield item[0], item[1], result


def _rehash(
    store: ObjectStore, items: list[tuple[RegisteredFile, ObjectSpec]]
) -> Iterator[tuple[RegisteredFile, ObjectSpec, tuple[str, str] | None, int]]:
    def one(item: tuple[RegisteredFile, ObjectSpec]) -> tuple[tuple[str, str] | None, int]:
        f, spec = item
        try:
            with store.open_range(f.object_id) as blob:
                return _hash_blob(blob, spec, f)
        except SonglakeError as exc:
            return ("unreadable", exc.message), 0

    if not items:
        return
    with ThreadPoolExecutor(REHASHERS, thread_name_prefix="rehash") as pool:
        for item, (found, nbytes) in zip(items, pool.map(one, items), strict=True):
            yield item[0], item[1], found, nbytes


def _hash_blob(
    blob: Any, spec: ObjectSpec, f: RegisteredFile
) -> tuple[tuple[str, str] | None, int]:
    whole = hashlib.md5(usedforsecurity=False)
    parts = PartHasher(list(spec.parts))
    buf = bytearray(COPY_BUFFER_SIZE)
    view = memoryview(buf)
    total = 0
    while n := blob.readinto(buf):
        whole.update(view[:n])
        parts.update(view[:n])
        total += n
    if total != f.file_size:
        return ("mismatching.size", f"read {total} bytes, {f.file_size} are registered"), total
    digest = whole.hexdigest()
    if digest != f.file_md5:
        why = f"the bytes have md5 {digest}, {f.file_md5} is registered"
        return ("mismatching.md5", why), total
    bad = [
        got.part_number
        for got, want in zip(parts.done, spec.parts, strict=False)
        if want.source_md5 is not None and got.source_md5 != want.source_md5
    ]
    if bad:
        return ("mismatching.part.md5", f"parts {bad} differ from the .meta's sourceMd5"), total
    return None, total


def _source(root: Path, f: RegisteredFile) -> Path | None:
    if not f.source_path:
        return None
    path = Path(f.source_path)
    return path if path.is_absolute() else root / path


def sync_storage(
    store: ObjectStore,
    files: list[RegisteredFile],
    *,
    root: Path,
    everything: bool = True,
    progress: Progress | None = None,
    listing_progress: Progress | None = None,
    upload_progress: Progress | None = None,
) -> SyncReport:
    """Upload every registered file that verify finds missing or wrong, from its ingest path."""
    found = verify_storage(
        store, files, everything=everything, progress=progress, listing_progress=listing_progress
    )
    report = SyncReport(found.store, checked=found.checked)
    by_id = {f.object_id: f for f in files}
    for finding in found.findings:
        f = by_id[finding.object_id]
        path = _source(root, f)
        if path is None or not os.path.isfile(path):
            where = f"'{path}' is gone" if path else "no source path was recorded at ingest"
            report.failed.append(
                _finding(f, finding.kind, f"{finding.message}; cannot upload: {where}")
            )
        else:
            try:
                store.put_file(
                    f.object_id, path, expected_md5=f.file_md5, expected_size=f.file_size
                )
                report.uploaded.append(f.object_id)
            except SonglakeError as exc:
                report.failed.append(
                    _finding(f, finding.kind, f"upload of '{path}' failed: {exc.message}")
                )
        if upload_progress is not None:
            upload_progress(1)
    return report
