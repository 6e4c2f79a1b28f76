"""Score's upload protocol on any store: the part plan, the state of an upload in progress, and
the checks at each step (score-storage.md §1.6, §2).

    Uploads (abc)                        one per store; backends: localparts.py, s3parts.py
      initiate(id, size, md5, overwrite) -> ObjectSpec    the plan, one part URL per part
      progress(id, size) -> ObjectSpec  the upload in progress, completed parts with sourceMd5
      finalize_part(id, upload, n, md5, etag)             record a part the store holds
      delete_part(id, upload, n)        forget a part's record (not its bytes)
      finalize(id, upload) -> ObjectSpec                  every part there, sizes and md5s
                                        checked, the object assembled, its .meta written last
      recover(id, size), cancel(id), cancel_all()

The state of an upload lives beside the objects, as Score keeps it: ``upload/<id>_<uploadId>/``
holds the spec (``.meta``) and one record per completed part. A backend stores that state, hands
out part URLs, checks that a part is really held with the ETag the client names, and assembles.

The whole object's md5 is checked wherever the bytes pass through songlake (the local store);
on S3 the bytes go straight to the bucket, so each part's md5 is checked against the ETag S3
computed from what it received, and the size against the parts S3 lists.
"""

from __future__ import annotations

import abc
import json
import re
import uuid
from dataclasses import dataclass, replace

from ..errors import (
    MismatchingObjectChecksum,
    MismatchingObjectSize,
    ObjectOverwriteRefused,
    UploadNotFound,
    UploadRefused,
)
from .base import ObjectStore
from .layout import ObjectSpec, Part, check_object_id, part_plan

UPLOAD_DIR = "upload"
SPEC_CACHE = 1024  # upload specs kept in memory at most
_HEX32 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class PartRecord:
    """A completed part as the client finalized it: its md5 and the ETag the store answered."""

    part_number: int
    md5: str
    etag: str

    def to_json(self) -> str:
        return json.dumps({"partNumber": self.part_number, "md5": self.md5, "etag": self.etag})

    @classmethod
    def from_json(cls, text: str | bytes) -> PartRecord:
        obj = json.loads(text)
        return cls(int(obj["partNumber"]), str(obj["md5"]), str(obj["etag"]))


def part_record_name(part_number: int) -> str:
    """Score's name of a part record: the number in 8 hex digits sorts as the number does."""
    return f"part-{part_number:08x}"


class Uploads(abc.ABC):
    """Score's upload protocol over one store (see the module docstring)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        # an upload's spec never changes under its uploadId: each part's calls need not read it
        # again (a replica that cancels it makes the next call here fail at the store instead)
        self._specs: dict[tuple[str, str], ObjectSpec] = {}

    # -- what a backend provides -----------------------------------------------------------------

    @abc.abstractmethod
    def _start(self, object_id: str, size: int, md5: str | None) -> str:
        """Begin storing a new upload of ``size`` bytes; its uploadId."""

    @abc.abstractmethod
    def _save_spec(self, spec: ObjectSpec) -> None:
        """Keep the upload's spec (no URLs) as upload/<id>_<uploadId>/.meta."""

    @abc.abstractmethod
    def _current(self, object_id: str) -> ObjectSpec | None:
        """The spec of the object's upload in progress, or None."""

    @abc.abstractmethod
    def _spec(self, object_id: str, upload_id: str) -> ObjectSpec | None:
        """The spec of that upload of the object, or None when it is not in progress."""

    @abc.abstractmethod
    def _records(self, object_id: str, upload_id: str) -> dict[int, PartRecord]:
        """The completed-part records of an upload, by part number."""

    @abc.abstractmethod
    def _write_record(self, object_id: str, upload_id: str, record: PartRecord) -> None: ...

    @abc.abstractmethod
    def _drop_record(self, object_id: str, upload_id: str, part_number: int) -> None: ...

    @abc.abstractmethod
    def _held_etag(self, object_id: str, upload_id: str, part: Part) -> str | None:
        """The ETag of the part the store holds (None: not held)."""

    @abc.abstractmethod
    def _assemble(self, spec: ObjectSpec, records: dict[int, PartRecord]) -> ObjectSpec:
        """Make the blob whole from its parts, verify it, write the .meta last, drop the state;
        returns the stored spec."""

    @abc.abstractmethod
    def _abort(self, object_id: str, upload_id: str) -> None:
        """Forget an upload: its stored parts and its state."""

    @abc.abstractmethod
    def _in_progress(self) -> list[tuple[str, str]]:
        """(objectId, uploadId) of every upload in progress."""

    @abc.abstractmethod
    def part_url(self, spec: ObjectSpec, part: Part, expires: int) -> str | None:
        """Where the client PUTs the part (None: the API signs a URL to itself)."""

    # -- the protocol ----------------------------------------------------------------------------

    def initiate(self, object_id: str, size: int, md5: str | None, overwrite: bool) -> ObjectSpec:
        """Score's initiate: refuses an existing object unless overwrite, drops an earlier upload
        in progress, plans the parts. The spec returned has no URLs yet (see ``part_url``)."""
        oid = check_object_id(object_id)
        if size <= 0:
            raise UploadRefused(
                f"Uploads of empty files are not permitted (objectId '{oid}', fileSize {size})",
                object_id=oid,
            )
        if not overwrite and self.store.exists(oid):
            raise ObjectOverwriteRefused(f"Attempted to overwrite object id {oid}", object_id=oid)
        earlier = self._current(oid)
        if earlier is not None:
            self._forget(oid, earlier.upload_id or oid)
        upload_id = self._start(oid, size, md5)
        spec = ObjectSpec(oid, size, md5, tuple(part_plan(size, self.store.part_size)), upload_id)
        self._save_spec(spec)
        return spec

    def current(self, object_id: str) -> ObjectSpec:
        """The upload in progress; UploadNotFound (404) when there is none."""
        oid = check_object_id(object_id)
        spec = self._current(oid)
        if spec is None:
            raise UploadNotFound(f"Upload ID not found for object ID: {oid}", object_id=oid)
        return spec

    def progress(self, object_id: str, size: int) -> ObjectSpec:
        """Score's status: the upload's parts, each completed one with its ``sourceMd5``."""
        spec = self.current(object_id)
        self._same_size(spec, size, "getting upload status")
        records = self._records(spec.object_id, self._upload_id(spec))
        parts = tuple(
            replace(p, source_md5=records[p.part_number].md5) if p.part_number in records else p
            for p in spec.parts
        )
        return replace(spec, parts=parts)

    def finalize_part(
        self, object_id: str, upload_id: str, part_number: int, md5: str, etag: str
    ) -> None:
        """Record a part the client sent, once the store is seen holding it with that ETag."""
        spec = self._upload(object_id, upload_id)
        where = f"part {part_number} of objectId {spec.object_id}, uploadId {upload_id}"
        if not md5 or not etag:
            raise UploadRefused(f"Invalid etag or md5 for {where}", object_id=spec.object_id)
        part = next((p for p in spec.parts if p.part_number == part_number), None)
        held = None if part is None else self._held_etag(spec.object_id, upload_id, part)
        if held != etag.strip('"'):
            raise UploadRefused(
                f"Part does not exist with number {part_number} for objectId {spec.object_id} "
                f"and uploadId {upload_id}",
                object_id=spec.object_id,
            )
        self._write_record(
            spec.object_id, upload_id, PartRecord(part_number, md5.lower(), held or "")
        )

    def delete_part(self, object_id: str, upload_id: str, part_number: int) -> None:
        spec = self._upload(object_id, upload_id)
        self._drop_record(spec.object_id, upload_id, part_number)

    def finalize(self, object_id: str, upload_id: str) -> ObjectSpec:
        """Every part recorded, each record's md5 the md5 of the bytes held, then assembled."""
        spec = self._upload(object_id, upload_id)
        records = self._records(spec.object_id, upload_id)
        missing = [p.part_number for p in spec.parts if p.part_number not in records]
        if missing:
            raise UploadRefused(
                f"Object {spec.object_id} cannot be finalized: parts {missing} of uploadId "
                f"{upload_id} are not completed",
                object_id=spec.object_id,
            )
        # an ETag of 32 hex digits is the md5 of the part's bytes (not so with SSE-KMS)
        wrong = [
            n for n, r in sorted(records.items()) if _HEX32.fullmatch(r.etag) and r.md5 != r.etag
        ]
        if wrong:
            raise MismatchingObjectChecksum(
                f"Object {spec.object_id} cannot be finalized: the md5 the client gave for parts "
                f"{wrong} is not the md5 of the bytes stored",
                object_id=spec.object_id,
            )
        stored = self._assemble(spec, records)
        self._specs.pop((spec.object_id, upload_id), None)
        return stored

    def recover(self, object_id: str, size: int) -> None:
        """Score's recovery check: the upload in progress is for a file of this size."""
        self._same_size(self.current(object_id), size, "recovering")

    def cancel(self, object_id: str) -> None:
        spec = self.current(object_id)
        self._forget(spec.object_id, self._upload_id(spec))

    def cancel_all(self) -> int:
        """Abort every upload in progress; how many there were."""
        found = self._in_progress()
        for oid, upload_id in found:
            self._forget(oid, upload_id)
        return len(found)

    # -- helpers for backends --------------------------------------------------------------------

    def _forget(self, object_id: str, upload_id: str) -> None:
        self._specs.pop((object_id, upload_id), None)
        self._abort(object_id, upload_id)

    @staticmethod
    def new_upload_id() -> str:
        return uuid.uuid4().hex

    def _upload(self, object_id: str, upload_id: str) -> ObjectSpec:
        oid = check_object_id(object_id)
        spec = self._specs.get((oid, upload_id))
        if spec is None and upload_id:
            spec = self._spec(oid, upload_id)
            if spec is not None:
                if len(self._specs) >= SPEC_CACHE:
                    self._specs.clear()
                self._specs[(oid, upload_id)] = spec
        if spec is None:
            raise UploadNotFound(
                f"The upload {upload_id} of objectId {oid} is not in progress", object_id=oid
            )
        return spec

    @staticmethod
    def _upload_id(spec: ObjectSpec) -> str:
        return spec.upload_id or spec.object_id

    @staticmethod
    def _same_size(spec: ObjectSpec, size: int, doing: str) -> None:
        if spec.object_size != size:
            raise UploadRefused(
                f"Error {doing} for objectId {spec.object_id} with uploadId {spec.upload_id}: "
                f"fileSize {size} does not match registered object size {spec.object_size}",
                object_id=spec.object_id,
            )

    @staticmethod
    def check_assembled(spec: ObjectSpec, size: int, md5: str | None) -> None:
        """The assembled blob has the planned size and, when known, the declared md5."""
        if size != spec.object_size:
            raise MismatchingObjectSize(
                f"The parts of objectId {spec.object_id} hold {size} bytes, not {spec.object_size}",
                object_id=spec.object_id,
            )
        if md5 is not None and spec.object_md5 and md5 != spec.object_md5.lower():
            raise MismatchingObjectChecksum(
                f"The parts of objectId {spec.object_id} have md5 {md5}, not the declared "
                f"{spec.object_md5}",
                object_id=spec.object_id,
            )
