"""Score's upload protocol on the local store: parts PUT to songlake itself, written in place.

    <root>/upload/<objectId>_<uploadId>/.meta          the upload's spec (no URLs)
    <root>/upload/<objectId>_<uploadId>/data           the object, each part written at its offset
    <root>/upload/<objectId>_<uploadId>/held-%08x      the md5 of the bytes a PUT wrote (its ETag)
    <root>/upload/<objectId>_<uploadId>/part-%08x      the client's record of a completed part

A part streams from the request into ``data`` at its offset (never whole in memory), hashed on
the way; the md5 is the ETag the client compares. At finalize the file is hashed once more,
synced and renamed to ``data/<objectId>`` (the same file system: no copy), its .meta named last.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import IO

from ..errors import MismatchingObjectSize, UploadRefused
from .hashing import hash_stream
from .layout import ObjectSpec, Part, check_object_id, parse_meta
from .local import LocalObjectStore
from .multipart import UPLOAD_DIR, PartRecord, Uploads, part_record_name
from .newfiles import Folder, write_file

_HELD = "held-{:08x}"
_COPY = 4 * 1024 * 1024


class LocalUploads(Uploads):
    """Uploads into a LocalObjectStore (see the module docstring)."""

    store: LocalObjectStore

    def __init__(self, store: LocalObjectStore) -> None:
        super().__init__(store)
        self._root = store.root / UPLOAD_DIR

    def _dir(self, object_id: str, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise UploadRefused(f"The uploadId '{upload_id}' is not valid", object_id=object_id)
        return self._root / f"{check_object_id(object_id)}_{upload_id}"

    # -- state -----------------------------------------------------------------------------------

    def _start(self, object_id: str, size: int, md5: str | None) -> str:
        upload_id = self.new_upload_id()
        folder = self._dir(object_id, upload_id)
        folder.mkdir(parents=True)
        with open(folder / "data", "wb") as out:
            out.truncate(size)  # sparse: parts fill it in any order
        return upload_id

    def _save_spec(self, spec: ObjectSpec) -> None:
        write_file(
            self._dir(spec.object_id, spec.upload_id or "") / ".meta", spec.to_json().encode()
        )

    def _spec(self, object_id: str, upload_id: str) -> ObjectSpec | None:
        try:
            raw = (self._dir(object_id, upload_id) / ".meta").read_bytes()
        except FileNotFoundError:
            return None
        return ObjectSpec.from_json(parse_meta(object_id, raw))

    def _current(self, object_id: str) -> ObjectSpec | None:
        oid = check_object_id(object_id)
        try:
            names = sorted(p.name for p in self._root.glob(f"{oid}_*"))
        except FileNotFoundError:
            return None
        for name in names:
            try:
                raw = (self._root / name / ".meta").read_bytes()
            except FileNotFoundError:
                continue
            return ObjectSpec.from_json(parse_meta(oid, raw))
        return None

    def _records(self, object_id: str, upload_id: str) -> dict[int, PartRecord]:
        out = {}
        for path in self._dir(object_id, upload_id).glob("part-*"):
            record = PartRecord.from_json(path.read_bytes())
            out[record.part_number] = record
        return out

    def _write_record(self, object_id: str, upload_id: str, record: PartRecord) -> None:
        path = self._dir(object_id, upload_id) / part_record_name(record.part_number)
        write_file(path, record.to_json().encode(), durable=False)

    def _drop_record(self, object_id: str, upload_id: str, part_number: int) -> None:
        (self._dir(object_id, upload_id) / part_record_name(part_number)).unlink(missing_ok=True)

    def _held_etag(self, object_id: str, upload_id: str, part: Part) -> str | None:
        try:
            return (self._dir(object_id, upload_id) / _HELD.format(part.part_number)).read_text()
        except FileNotFoundError:
            return None

    def _in_progress(self) -> list[tuple[str, str]]:
        if not self._root.is_dir():
            return []
        out = []
        for path in sorted(self._root.iterdir()):
            oid, _, upload_id = path.name.partition("_")
            out.append((oid, upload_id))
        return out

    def _abort(self, object_id: str, upload_id: str) -> None:
        shutil.rmtree(self._dir(object_id, upload_id), ignore_errors=True)

    def part_url(self, spec: ObjectSpec, part: Part, expires: int) -> str | None:
        return None  # the API signs a URL to its own PUT endpoint

    # -- bytes -----------------------------------------------------------------------------------

    def write_part(
        self, object_id: str, upload_id: str, part_number: int, body: IO[bytes], length: int | None
    ) -> str:
        """Stream one part from ``body`` into its place; the md5 of its bytes (its ETag)."""
        spec = self._upload(object_id, upload_id)
        part = next((p for p in spec.parts if p.part_number == part_number), None)
        if part is None:
            raise UploadRefused(
                f"The upload {upload_id} of objectId {spec.object_id} has no part {part_number}",
                object_id=spec.object_id,
            )
        if length is not None and length != part.part_size:
            raise MismatchingObjectSize(
                f"Part {part_number} of objectId {spec.object_id} has {part.part_size} bytes, "
                f"the request sends {length}",
                object_id=spec.object_id,
            )
        folder = self._dir(spec.object_id, upload_id)
        held = folder / _HELD.format(part_number)
        held.unlink(missing_ok=True)  # a part sent again is not held until it is whole
        h = hashlib.md5(usedforsecurity=False)
        written = 0
        fd = os.open(folder / "data", os.O_WRONLY)
        try:
            while written < part.part_size:
                chunk = body.read(min(_COPY, part.part_size - written))
                if not chunk:
                    break
                h.update(chunk)
                os.pwrite(fd, chunk, part.offset + written)
                written += len(chunk)
            if written == part.part_size and body.read(1):
                written += 1
        finally:
            os.close(fd)
        if written != part.part_size:
            raise MismatchingObjectSize(
                f"Part {part_number} of objectId {spec.object_id} has {part.part_size} bytes, "
                f"the request sent {'more' if written > part.part_size else written}",
                object_id=spec.object_id,
            )
        digest = h.hexdigest()
        write_file(held, digest.encode(), durable=False)
        return digest

    def _assemble(self, spec: ObjectSpec, records: dict[int, PartRecord]) -> ObjectSpec:
        upload_id = spec.upload_id or spec.object_id
        folder = self._dir(spec.object_id, upload_id)
        for part in spec.parts:
            if self._held_etag(spec.object_id, upload_id, part) != records[part.part_number].etag:
                raise UploadRefused(
                    f"Part {part.part_number} of objectId {spec.object_id} changed after it was "
                    "finalized; send it again",
                    object_id=spec.object_id,
                )
        with open(folder / "data", "rb", buffering=0) as blob:
            md5, size = hash_stream(blob)
            self.check_assembled(spec, size, md5)
            os.fsync(blob.fileno())
        parts = tuple(
            Part(p.part_number, p.part_size, p.offset, records[p.part_number].md5)
            for p in spec.parts
        )
        stored = ObjectSpec(spec.object_id, size, md5, parts, upload_id)
        data = self.store.root / "data"
        with Folder(data) as target:
            # the old object turns absent before its bytes change
            (data / f"{spec.object_id}.meta").unlink(missing_ok=True)
            os.rename(folder / "data", data / spec.object_id)
            target.sync()
        write_file(data / f"{spec.object_id}.meta", stored.to_json().encode())
        self._abort(spec.object_id, upload_id)
        return stored
