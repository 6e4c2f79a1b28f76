"""After registration: copy the files into object storage, verify them, optionally archive or
delete the dropped copies, and write the receipt.

Uploads run in worker processes (uploadpool). ``put_file`` hashes while it copies and refuses a
copy whose size or md5 differs from the registered one; an object already stored with the
registered size and md5 is not read again (staged copies, restarts, re-sent sidecars). A chunk of
jobs with small files runs as one ``run_many``: the local store then syncs all their objects in
one pass (half the cost of a sync per object, which bounds a burst of small sidecars).

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

from catalog.errors import BadRequest, FileNotFound, Internal, SonglakeError, problem
from catalog.model import now_iso
from catalog.store import ObjectSpec, ObjectStore, PutRequest

from .hashcache import HashCache
from .layout import Folder, is_within, receipt_path
from .receipts import OutcomeWriter, errors_doc, receipt_doc

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
        result = self.run_many([job])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def run_many(self, jobs: list[UploadJob]) -> list[UploadResult | Exception]:
        """Run several jobs, their files stored with one ``put_files`` (the local store syncs
        small files together); each job gets its result or the error that ended it."""
        uploads: list[dict[str, dict[str, Any]]] = []
        requests: list[PutRequest] = []
        sent: list[tuple[int, dict[str, Any], str, os.stat_result]] = []
        for j, job in enumerate(jobs):
            here = os.path.dirname(job.path)
            records: dict[str, dict[str, Any]] = {}
            for f in job.analysis["files"]:
                src = os.path.join(here, f["fileName"])
                record = self._settled(f, job)
                if record is None:
                    try:
                        st = os.stat(src)
                    except OSError as exc:
                        record = self._failed(src, exc)
                    else:
                        requests.append(
                            PutRequest(f["objectId"], src, f["fileMd5sum"], f["fileSize"])
                        )
                        sent.append((j, f, src, st))
                        record = {}  # filled in below, in the files' order
                records[f["objectId"]] = record
            uploads.append(records)
        for (j, f, src, st), stored in zip(sent, self.store.put_files(requests), strict=True):
            uploads[j][f["objectId"]] = self._outcome(f, src, st, stored)
        out: list[UploadResult | Exception] = []
        for job, records in zip(jobs, uploads, strict=True):
            try:
                out.append(self._finish(job, records))
            except Exception as exc:  # noqa: BLE001 - reported for this job alone
                log.exception("upload job for %s failed", job.path)
                out.append(exc)
        return out

    def _finish(self, job: UploadJob, uploads: dict[str, dict[str, Any]]) -> UploadResult:
        """Archive or delete the dropped files once all are stored; write the receipt."""
        analysis = job.analysis
        aid = analysis["analysisId"]
        here = os.path.dirname(job.path)
        waits: dict[str, tuple[int, int, int] | None] = {}
        for f in analysis["files"]:
            if uploads[f["objectId"]]["status"] != "uploaded":
                waits[os.path.join(here, f["fileName"])] = None
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
        try:
            self.writer.write_receipt(job.path, doc)
        except IsADirectoryError:
            # something else holds the receipt's name: say so once; a retry cannot help (the
            # rescan looks again when the name is freed)
            self._receipt_blocked(job, aid, analysis.get("studyId"))
        return UploadResult(
            job.path, aid, uploads, complete, analysis["state"], analysis["analysisVersion"], waits
        )

    def _receipt_blocked(self, job: UploadJob, aid: str, study_id: str | None) -> None:
        name = os.path.basename(receipt_path(job.path))
        message = (
            f"Analysis {aid} is registered, but its receipt cannot be written: '{name}' is a "
            "folder; remove it and the receipt follows"
        )
        problems = [{"errorId": "receipt.not.written", **problem("", "receipt", message)}]
        self.writer.write_errors(
            job.path,
            errors_doc(
                sidecar=job.path,
                sha256=job.sha256,
                study_id=study_id,
                error_id="receipt.not.written",
                message=message,
                problems=problems,
                analysis_id=aid,
            ),
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

    def _settled(self, f: dict[str, Any], job: UploadJob) -> dict[str, Any] | None:
        """The file's record when nothing is to be copied (stored already, or not UNPUBLISHED)."""
        if self._stored(f):
            before = job.uploads.get(f["objectId"])
            if before and before.get("status") == "uploaded":
                return before
            return self._record("uploaded", f)
        state = job.analysis["state"]
        if state != "UNPUBLISHED":
            return {
                "status": "skipped",
                "message": f"files are taken into storage only while the analysis is UNPUBLISHED, "
                f"not {state}",
                "at": now_iso(),
            }
        return None

    def _outcome(
        self, f: dict[str, Any], src: str, st: os.stat_result, stored: ObjectSpec | Exception
    ) -> dict[str, Any]:
        if isinstance(stored, SonglakeError):
            log.warning("upload of %s failed: %s", src, stored.message)
            return {
                "status": "failed",
                "errorId": stored.error_id,
                "message": stored.message,
                "at": now_iso(),
            }
        if isinstance(stored, Exception):
            return self._failed(src, stored)
        if stored.object_md5:
            self.cache.put(src, st, stored.object_md5)
        return self._record("uploaded", f)

    def _failed(self, src: str, exc: Exception) -> dict[str, Any]:
        log.warning("upload of %s failed: %s", src, exc)
        missing = isinstance(exc, FileNotFoundError)
        return {
            "status": "failed",
            "errorId": FileNotFound.error_id if missing else Internal.error_id,
            "message": str(exc),
            "at": now_iso(),
        }

    def _record(self, status: str, f: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": status,
            "objectSize": f["fileSize"],
            "objectMd5": f["fileMd5sum"].lower(),
            "store": self.store.describe(),
            "at": now_iso(),
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
            return {"action": "deleted", "at": now_iso()}
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
        return {"action": "moved", "to": target, "at": now_iso()}
