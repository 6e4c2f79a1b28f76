"""After registration: copy the files into object storage, verify them, optionally archive or
delete the dropped copies, and write the receipt.

Uploads run in their own thread pool: the local store fsyncs every object, so they are bound by
the disk's fsync rate, not the CPU, and several run at once. ``put_file`` hashes while it copies and
refuses a copy whose size or md5 differs from the registered one; an object already stored with
the registered size and md5 is not read again (staged copies, restarts, re-sent sidecars).

A dropped file is moved (``watch_after_upload = "move"``) or deleted (``"delete"``) only when its
object is in storage with the registered size and md5 AND the file itself still has that md5
(hash cache): a file replaced after the upload is left alone. Symbolic links are never touched.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from catalog.errors import BadRequest, SonglakeError
from catalog.objectstore import ObjectStore

from .hashcache import HashCache
from .layout import Folder, is_within
from .receipts import OutcomeWriter, receipt_doc, utc_now

log = logging.getLogger("songlake.watcher")

AFTER_UPLOAD = ("keep", "move", "delete")


@dataclass
class UploadJob:
    path: str  # the sidecar
    folder: Folder
    sha256: str | None
    analysis: dict[str, Any]  # receipts.analysis_summary at registration time
    uploads: dict[str, Any] = field(default_factory=dict)  # earlier upload records by objectId


@dataclass
class UploadResult:
    path: str
    analysis_id: str
    uploads: dict[str, Any]
    complete: bool  # every file verified in storage
    state: str
    version: int
    waits_on: dict[str, tuple[int, int, int] | None]  # files whose fix should retry the upload


class Uploader:
    """Runs upload jobs (thread-safe: each job touches only its own files and objects)."""

    def __init__(
        self,
        store: ObjectStore,
        writer: OutcomeWriter,
        cache: HashCache,
        *,
        after_upload: str = "keep",
        archive_dir: str | None = None,
        current: Callable[[str], tuple[str, int] | None] = lambda aid: None,
    ) -> None:
        if after_upload not in AFTER_UPLOAD:
            raise BadRequest(
                f"Setting 'watch_after_upload' must be one of {', '.join(AFTER_UPLOAD)}, "
                f"not {after_upload!r}"
            )
        if after_upload == "move" and not archive_dir:
            raise BadRequest("Setting watch_after_upload = 'move' needs watch_archive_dir")
        self.store = store
        self.writer = writer
        self.cache = cache
        self.after_upload = after_upload
        self.archive_dir = archive_dir
        self.current = current  # analysisId -> (state, version) now, from the read model

    def run(self, job: UploadJob) -> UploadResult:
        analysis = job.analysis
        aid = analysis["analysisId"]
        uploads: dict[str, Any] = {}
        waits: dict[str, tuple[int, int, int] | None] = {}
        here = os.path.dirname(job.path)
        for f in analysis["files"]:
            src = os.path.join(here, f["fileName"])
            record = self._upload(f, src, analysis["state"], job.uploads.get(f["objectId"]))
            uploads[f["objectId"]] = record
            if record["status"] != "uploaded":
                waits[src] = None
        complete = not waits
        if complete and self.after_upload != "keep":
            for f in analysis["files"]:
                src = os.path.join(here, f["fileName"])
                archived = self._archive(job, f, src)
                if archived is not None:
                    uploads[f["objectId"]]["archived"] = archived
        now = self.current(aid)
        if now is not None:
            analysis = {**analysis, "state": now[0], "analysisVersion": now[1]}
        doc = receipt_doc(sidecar=job.path, sha256=job.sha256, analysis=analysis, uploads=uploads)
        self.writer.write_receipt(job.path, doc)
        return UploadResult(
            job.path, aid, uploads, complete, analysis["state"], analysis["analysisVersion"], waits
        )

    def _stored(self, f: dict[str, Any]) -> bool:
        try:
            spec = self.store.spec(f["objectId"])
        except SonglakeError:
            return False
        return (
            spec is not None
            and spec.object_size == f["fileSize"]
            and (spec.object_md5 or "").lower() == f["fileMd5sum"].lower()
        )

    def _upload(
        self, f: dict[str, Any], src: str, state: str, before: dict[str, Any] | None
    ) -> dict[str, Any]:
        if self._stored(f):
            if before and before.get("status") == "uploaded":
                return before
            return self._record("uploaded", f)
        if state != "UNPUBLISHED":
            return {
                "status": "skipped",
                "message": f"files are taken into storage only while the analysis is UNPUBLISHED, "
                f"not {state}",
                "at": utc_now(),
            }
        try:
            st = os.stat(src)
            spec = self.store.put_file(
                f["objectId"], src, expected_md5=f["fileMd5sum"], expected_size=f["fileSize"]
            )
        except SonglakeError as exc:
            log.warning("upload of %s failed: %s", src, exc.message)
            return {
                "status": "failed",
                "errorId": exc.error_id,
                "message": exc.message,
                "at": utc_now(),
            }
        except OSError as exc:
            log.warning("upload of %s failed: %s", src, exc)
            return {
                "status": "failed",
                "errorId": "file.not.found"
                if isinstance(exc, FileNotFoundError)
                else "unknown.error",
                "message": str(exc),
                "at": utc_now(),
            }
        if spec.object_md5:
            self.cache.put(src, st, spec.object_md5)
        return self._record("uploaded", f)

    def _record(self, status: str, f: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": status,
            "objectSize": f["fileSize"],
            "objectMd5": f["fileMd5sum"].lower(),
            "store": self.store.describe(),
            "at": utc_now(),
        }

    def _archive(self, job: UploadJob, f: dict[str, Any], src: str) -> dict[str, Any] | None:
        """Move or delete one dropped file, only once verified in storage and unchanged."""
        try:
            lst = os.lstat(src)
        except FileNotFoundError:
            return None  # already archived (a restart) or removed by someone else
        if stat.S_ISLNK(lst.st_mode) or not stat.S_ISREG(lst.st_mode):
            return {"action": "kept", "reason": "not a regular file"}
        if not self._stored(f):
            return {"action": "kept", "reason": "not verified in object storage"}
        try:
            digest = self.cache.md5(src, lst)
        except OSError:
            return None
        if digest != f["fileMd5sum"].lower():
            return {"action": "kept", "reason": "the file changed after it was registered"}
        if self.after_upload == "delete":
            os.unlink(src)
            self.cache.forget(src)
            log.info("deleted %s (verified as object %s)", src, f["objectId"])
            return {"action": "deleted", "at": utc_now()}
        assert self.archive_dir is not None
        study = job.analysis["studyId"]
        target = os.path.join(self.archive_dir, study, job.analysis["analysisId"], f["fileName"])
        if not is_within(os.path.normpath(target), os.path.normpath(self.archive_dir)):
            return {"action": "kept", "reason": "unsafe archive path"}
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.stat(os.path.dirname(target)).st_dev == lst.st_dev:
            os.replace(src, target)
        else:
            shutil.move(src, target)
        self.cache.forget(src)
        log.info("moved %s to %s (verified as object %s)", src, target, f["objectId"])
        return {"action": "moved", "to": target, "at": utc_now()}
