"""The registrar: the watcher's only thread that calls into the catalog.

It takes verified sidecars from its queue and group-commits them: everything that arrives within
``watch_linger`` seconds of the first, up to ``batch_size``, goes into one ``submit_batch`` (one
Delta commit per table, limits.md B4/B6). While a batch commits, the next one fills, so batches
grow with the load and an idle watcher answers a single sidecar at once.

For each sidecar it decides, from the ledger row and the catalog:

    the path has an analysis (registered earlier)  -> an update (same content: nothing to do)
    the same content is registered at another path -> that analysis (a copied folder)
    an intent row for this very content            -> retry with the intended analysisId
    otherwise                                      -> a new analysisId, recorded BEFORE submitting

and then hands registered analyses to the upload pool. Between batches it refreshes the catalog
and rewrites receipts whose analysis changed state or version (publish, unpublish, suppress,
updates through the API), and re-triggers sidecars that waited for a study that now exists.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from catalog import Catalog, SubmitItem
from catalog.errors import (
    AnalysisIdCollision,
    Busy,
    IllegalAnalysisUpdate,
    Internal,
    SonglakeError,
    StorageServiceError,
    StudyAlreadyExists,
    StudyNotFound,
    Unavailable,
    problem,
)
from catalog.model import (
    FILE_FIELDS,
    dumps,
    dynamic_data,
    new_analysis_id,
    object_id,
    split_entity,
)
from catalog.settings import Settings

from .layout import receipt_path
from .ledger import Ledger, Row
from .readiness import Verdict
from .receipts import OutcomeWriter, analysis_summary, problems_of, receipt_doc
from .uploader import UploadJob

log = logging.getLogger("songlake.watcher")

ACTOR = "songlake watcher"
STOP = object()
Post = Callable[[tuple[Any, ...]], None]
#: failures a wait may cure (a full disk, a lock held elsewhere, storage away): retried
TRANSIENT = (OSError, Busy, Unavailable, StorageServiceError)


def sidecar_analysis_id(v: Verdict) -> str:
    """The analysisId a sidecar is registered under: a name-based UUID of its path in its watched
    folder, its content and its mtime, so every watcher that sees the same file (several machines
    on one network inbox) proposes the same id, and the catalog registers it once. A file dropped
    again (a new mtime) is a new submission, as Song would see it. Shaped as Song's analysisIds
    (a version-4 UUID: the hash's bits where uuid4 has random ones)."""
    if v.sha256 is None:
        return new_analysis_id()
    rel = os.path.relpath(v.path, v.folder.path)
    mtime_ns = v.fingerprint[1] if v.fingerprint else 0
    named = uuid.uuid5(uuid.NAMESPACE_URL, f"songlake:sidecar:{rel}:{v.sha256}:{mtime_ns}")
    return str(uuid.UUID(bytes=named.bytes, version=4))


@dataclass
class _Plan:
    """What a batch does with its sidecars (besides those staged, updated or looked at afresh)."""

    submit: list[tuple[Verdict, SubmitItem]] = field(default_factory=list)
    settled: list[tuple[Verdict, str]] = field(default_factory=list)  # registered, no submission
    aliases: list[tuple[Verdict, Verdict]] = field(default_factory=list)  # a twin in the batch


class Registrar(threading.Thread):
    def __init__(
        self,
        catalog: Catalog,
        ledger: Ledger,
        settings: Settings,
        writer: OutcomeWriter,
        *,
        post: Post,
        upload: Callable[[list[UploadJob]], None],
        stage: Callable[[Verdict], None],
    ) -> None:
        super().__init__(name="songlake-registrar", daemon=True)
        self.catalog = catalog
        self.ledger = ledger
        self.settings = settings
        self.writer = writer
        self.post = post
        self.upload = upload  # called once per batch with the batch's upload jobs
        self._jobs: list[UploadJob] = []
        self.stage = stage
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.batches = 0
        # sidecar path -> (analysisId, state, version) its receipt shows
        self._written: dict[str, tuple[str, str | None, int | None]] = {}
        self._paths_of: dict[str, set[str]] = {}  # analysisId -> its sidecars in _written
        self._ledger_seen = 0.0
        self._shared_lock = threading.Lock()  # _waiting_for_study, _stale, _changed (any thread)
        self._changed: set[str] = set()  # analyses the read model saw change since the last pass
        self._stale: set[str] = set()  # receipts written with a state that is no longer current
        self._waiting_for_study: dict[str, set[str]] = {}
        self._next_refresh = 0.0
        self._last_refresh = 0.0  # the last receipt refresh pass
        self._refreshed_at = 0.0  # the last catalog refresh before a batch

    # -- the loop -------------------------------------------------------------------------------

    def stop(self) -> None:
        self.queue.put(STOP)

    def wait_for_study(self, study_id: str, path: str) -> None:
        with self._shared_lock:
            self._waiting_for_study.setdefault(study_id, set()).add(path)

    def run(self) -> None:
        self.catalog.model.listeners.append(self._on_row)
        try:
            self._loop()
        finally:
            self.catalog.model.listeners.remove(self._on_row)

    def _on_row(self, table: str, row: dict[str, Any]) -> None:
        """Read-model listener (any thread): note analyses whose receipts may need rewriting."""
        if table in ("analyses", "analysis_state_history"):
            with self._shared_lock:
                self._changed.add(row["analysis_id"])

    def _loop(self) -> None:
        try:
            self._recover()
        except Exception:  # noqa: BLE001 - a broken catalog must not kill the thread silently
            log.exception("watcher recovery failed")
        linger = self.settings.watch_linger
        size = max(1, self.settings.batch_size)
        while True:
            timeout = max(0.0, self._next_refresh - time.monotonic())
            try:
                first = self.queue.get(timeout=timeout)
            except queue.Empty:
                first = None
            stop = first is STOP
            if first is not None and not stop:
                batch = [first]
                deadline = time.monotonic() + linger
                while len(batch) < size:
                    left = deadline - time.monotonic()
                    try:
                        item = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is STOP:
                        stop = True
                        break
                    batch.append(item)
                self._guarded(batch)
            if stop:
                return
            now = time.monotonic()
            # under load registrations come first: refresh receipts at most every few seconds
            if now >= self._next_refresh and (self.queue.empty() or now >= self._last_refresh + 5):
                try:
                    self._refresh_pass()
                except Exception:  # noqa: BLE001
                    log.exception("receipt refresh failed")
                self._last_refresh = time.monotonic()
                self._next_refresh = self._last_refresh + self.settings.refresh_interval

    def _guarded(self, batch: list[Verdict]) -> None:
        try:
            self._isolated(batch)
        finally:
            jobs, self._jobs = self._jobs, []
            if jobs:
                self.upload(jobs)

    def _isolated(self, batch: list[Verdict]) -> None:
        """Register a batch; when it fails, each sidecar alone, so that the one that fails gets
        an errors file (or, for a failure a wait may cure, a retry) and the others commit."""
        try:
            self._process(batch)
            return
        except Exception as exc:  # noqa: BLE001 - one sidecar's fault, or the disk's
            failure = exc
        done = {job.path for job in self._jobs}
        left = [v for v in batch if v.path not in done]
        if len(batch) > 1:
            log.warning(
                "registration batch of %d failed (%r); registering its sidecars one by one",
                len(batch),
                failure,
            )
            for v in left:
                self._isolated([v])
            return
        for v in left:
            if isinstance(failure, TRANSIENT):
                log.exception("registration of %s failed; retrying", v.path, exc_info=failure)
                self.post(("retry", v.path, 2.0, repr(failure)))
            else:
                self._failed(v, failure)

    def _failed(self, v: Verdict, exc: Exception) -> None:
        """An unexpected error of this sidecar alone: its errors file says so; it is looked at
        again when it changes."""
        incident = uuid.uuid4().hex[:12]
        log.error("registration of %s failed (incident %s)", v.path, incident, exc_info=exc)
        if v.analysis_id not in self.catalog.model.analyses:
            self._drop_staged(v)
            v.analysis_id = None
        self._reject(
            v,
            Internal(
                f"The sidecar could not be registered: {type(exc).__name__} (incident "
                f"{incident}; the watcher's log has the details)"
            ),
        )

    # -- registration ---------------------------------------------------------------------------

    def _process(self, batch: list[Verdict]) -> None:
        """Register a batch: plan it, record the intents, submit them as one commit, then settle
        every sidecar that is now registered (its upload and receipt follow)."""
        self._refresh_catalog()
        plan = self._plan(batch)
        if plan.submit:
            self._record_intents([v for v, _ in plan.submit])
            self._submit(plan)
        self._settle_aliases(plan)
        for v, aid in plan.settled:
            self._registered(v, aid)

    def _refresh_catalog(self) -> None:
        """Decide with other processes' commits seen (submit_batch refreshes again itself)."""
        if time.monotonic() - self._refreshed_at > 1.0:
            self.catalog.refresh()
            self._refreshed_at = time.monotonic()

    def _plan(self, batch: list[Verdict]) -> _Plan:
        """What to do with each sidecar (see the module's table); staging, updates and stale
        ledger rows are handed on here, in the batch's order."""
        analyses = self.catalog.model.analyses
        plan = _Plan()
        by_sha: dict[tuple[str | None, str | None], Verdict] = {}
        elsewhere = self.ledger.registered_with_any(v.sha256 for v in batch if v.sha256)
        for v in batch:
            row = v.row
            own = row.analysis_id if row and row.analysis_id in analyses else None
            if v.kind == "stage" and own is None:
                self._stage(v)
                continue
            if own is not None:
                if v.kind == "unchanged" or (row and row.sha256 == v.sha256):
                    plan.settled.append((v, own))
                else:
                    self._update(v, own)
                continue
            alias = self._registered_elsewhere(v, elsewhere.get(v.sha256 or "", ()))
            if alias is not None:
                plan.settled.append((v, alias))
                continue
            twin = by_sha.get((v.sha256, v.study_id))
            if twin is not None:
                plan.aliases.append((v, twin))
                continue
            by_sha[(v.sha256, v.study_id)] = v
            if v.payload is None or not v.files_checked:
                # the ledger names an analysis the catalog does not have: look at it afresh
                self.post(("stale", v.path))
                continue
            plan.submit.append((v, self._submission(v)))
        return plan

    def _submission(self, v: Verdict) -> SubmitItem:
        """The sidecar as a new registration, under the analysisId it has, its intent's (a retry
        after a crash) or a new one."""
        assert v.payload is not None
        row = v.row
        aid = v.analysis_id
        if aid is None and row and row.status == "registering" and row.sha256 == v.sha256:
            aid = row.analysis_id
        v.analysis_id = aid or sidecar_analysis_id(v)
        self._ensure_study(v.study_id)
        sources = {fc.name: fc.path for fc in v.files if fc.path}
        return SubmitItem(
            v.payload,  # parsed by the readiness check: not parsed again
            v.study_id or "",
            analysis_id=v.analysis_id,
            source_paths=sources,
        )

    def _submit(self, plan: _Plan) -> None:
        """Commit the new registrations together; those refused are rejected."""
        t0 = time.perf_counter()
        results = self.catalog.submit_batch([item for _, item in plan.submit], actor=ACTOR)
        self.batches += 1
        ms = (time.perf_counter() - t0) * 1000
        ok = 0
        for (v, _item), res in zip(plan.submit, results, strict=True):
            if res.ok and res.analysis_id:
                plan.settled.append((v, res.analysis_id))
                ok += 1
            elif self._registered_by_another_watcher(v, res.error):
                plan.settled.append((v, _item.analysis_id or ""))
            else:
                assert res.error is not None
                self._drop_staged(v)
                v.analysis_id = None
                self._reject(v, res.error)
        log.info(
            "committed batch",
            extra={
                "event": "batch",
                "size": len(plan.submit),
                "registered": ok,
                "ms": round(ms, 1),
            },
        )

    def _registered_by_another_watcher(self, v: Verdict, err: SonglakeError | None) -> bool:
        """Another watcher (another machine on the same network inbox) registered this very
        sidecar first: the analysisId is the sidecar's own, so the collision says so."""
        if not isinstance(err, AnalysisIdCollision) or v.analysis_id != sidecar_analysis_id(v):
            return False
        rec = self.catalog.model.analyses.get(v.analysis_id or "")
        return rec is not None and rec.study_id == v.study_id

    def _settle_aliases(self, plan: _Plan) -> None:
        """A sidecar with the same content as an earlier one of the batch gets its analysis (or
        is retried when that one was refused)."""
        registered = {v.path: aid for v, aid in plan.settled}
        for v, twin in plan.aliases:
            aid = registered.get(twin.path)
            if aid is not None:
                plan.settled.append((v, aid))
            else:
                self.post(("retry", v.path, 0.0, "twin was refused"))

    def _record_intents(self, verdicts: list[Verdict]) -> None:
        """Each sidecar is being registered as its ``analysis_id``: durable before the commit, so
        a retry after a crash re-uses that analysisId."""
        with self.ledger.transaction() as tx:
            for v in verdicts:
                tx.upsert(v.path, **v.marked("registering", analysis_id=v.analysis_id))

    def _registered(self, v: Verdict, aid: str) -> None:
        summary = analysis_summary(self.catalog.model, aid)
        self.post(("registered", v, aid))
        row = v.row
        uploads = {}
        if row is not None and row.analysis_id == aid and row.uploads:
            uploads = json.loads(row.uploads) if isinstance(row.uploads, str) else row.uploads
        self._note_written(v.path, aid, summary["state"], summary["analysisVersion"])
        log.info(
            "registered",
            extra={
                "event": "registered",
                "path": v.path,
                "analysisId": aid,
                "studyId": summary["studyId"],
            },
        )
        self._jobs.append(UploadJob(v.path, v.folder, v.sha256, summary, uploads))

    def _reject(self, v: Verdict, err: SonglakeError) -> None:
        message = err.message
        if err.error_id == StudyNotFound.error_id and v.study_id:
            message += (
                f". Create it with 'songlake study create {v.study_id}' (or set "
                "auto_create_studies = true); the watcher then retries this sidecar by itself"
            )
            self.wait_for_study(v.study_id, v.path)
            err = SonglakeError(message, error_id=err.error_id, problems=err.problems)
        v.reject(err.error_id, message, problems_of(err))
        self.post(("verdict", v))

    def _ensure_study(self, study_id: str | None) -> None:
        if not self.settings.auto_create_studies or not study_id:
            return
        if study_id in self.catalog.model.studies:
            return
        try:
            self.catalog.create_study({"studyId": study_id}, actor=ACTOR)
            log.info("created study", extra={"event": "study", "studyId": study_id})
        except SonglakeError as exc:
            if exc.error_id != StudyAlreadyExists.error_id:
                log.warning("could not create study %s: %s", study_id, exc.message)

    def _registered_elsewhere(self, v: Verdict, rows: Iterable[Row]) -> str | None:
        """The analysis this exact content is registered as at another path, if any (``rows``:
        the ledger's registered rows with the sidecar's sha256)."""
        for row in rows:
            rec = self.catalog.model.analyses.get(row.analysis_id or "")
            if rec is not None and rec.study_id == v.study_id and row.path != v.path:
                return rec.analysis_id
        return None

    # -- big files: verified while copied into storage ------------------------------------------

    def _stage(self, v: Verdict) -> None:
        """Validate the payload (dry run), record the intent, then let the pool copy the big files
        into storage under their final objectIds while hashing them (one read per byte)."""
        try:
            self._ensure_study(v.study_id)
            self.catalog.check_payload(v.payload or {}, v.study_id or "")
        except SonglakeError as exc:
            v.analysis_id = None
            self._reject(v, exc)
            return
        row = v.row
        aid = None
        if row and row.status == "registering" and row.sha256 == v.sha256:
            aid = row.analysis_id
        v.analysis_id = aid or sidecar_analysis_id(v)
        self._record_intents([v])
        self.stage(v)

    def _drop_staged(self, v: Verdict) -> None:
        """Objects copied in for an analysis that was then refused are removed again."""
        if not v.staged or v.analysis_id in self.catalog.model.analyses:
            return
        for oid in v.staged:
            try:
                self.catalog.store.delete(oid)
            except (OSError, SonglakeError):
                log.warning("could not remove staged object %s", oid)

    # -- updates --------------------------------------------------------------------------------

    def _update(self, v: Verdict, aid: str) -> None:
        """A changed sidecar of a registered analysis: a new version of its dynamic data."""
        cat = self.catalog
        rec = cat.model.analyses[aid]
        payload = v.payload or {}
        changed = self._fixed_parts_changed(payload, aid)
        if changed:
            return self._refuse(v, aid, changed[0], changed[1])
        atype = payload.get("analysisType") or {}
        same = (
            dumps(dynamic_data(payload)) == rec.data
            and atype.get("name") == rec.type_name
            and atype.get("version") in (None, rec.type_version)
        )
        if same:
            self._registered(v, aid)
            return
        if rec.state != "UNPUBLISHED":
            hint = (
                f"unpublish it first ('songlake analysis unpublish {aid}'), then touch the sidecar"
                if rec.state == "PUBLISHED"
                else "a suppressed analysis never changes"
            )
            return self._refuse(
                v,
                aid,
                "",
                f"Analysis {aid} is {rec.state}: a changed sidecar updates only UNPUBLISHED "
                f"analyses; {hint}",
                rule="analysisState",
            )
        body = {"analysisType": atype, **dynamic_data(payload)}
        try:
            cat.update_analysis(rec.study_id, aid, body, actor=ACTOR)
        except SonglakeError as exc:
            v.analysis_id = aid
            self._reject(v, exc)
            return
        log.info("updated", extra={"event": "updated", "path": v.path, "analysisId": aid})
        self._registered(v, aid)

    def _fixed_parts_changed(self, payload: dict[str, Any], aid: str) -> tuple[str, str] | None:
        """(pointer, message) when the sidecar changes what an update cannot: files, samples."""
        doc = self.catalog.find_analysis(aid)
        have = {f["fileName"]: _file_key(f, f.get("info") or {}) for f in doc["files"]}
        want: dict[str, tuple] = {}
        for f in payload.get("files") or []:
            if isinstance(f, dict) and isinstance(f.get("fileName"), str):
                cols, info = split_entity(f, "file", FILE_FIELDS)
                want.setdefault(f["fileName"], _file_key(f, info))
        if have != want:
            return "/files", (
                f"The sidecar changes the files of analysis {aid}; a watcher update changes only "
                "the dynamic data (everything but studyId, samples and files). Suppress the "
                "analysis and drop the new sidecar under a new name to register other files"
            )
        had = {_sample_key(s) for s in doc["samples"]}
        wanted = {_sample_key(s) for s in payload.get("samples") or [] if isinstance(s, dict)}
        if had != wanted:
            return "/samples", (
                f"The sidecar changes the samples of analysis {aid}; a watcher update changes only "
                "the dynamic data (everything but studyId, samples and files)"
            )
        return None

    def _refuse(
        self, v: Verdict, aid: str, pointer: str, message: str, rule: str = "immutable"
    ) -> None:
        error_id = IllegalAnalysisUpdate.error_id
        v.analysis_id = aid
        v.reject(error_id, message, [{"errorId": error_id, **problem(pointer, rule, message)}])
        log.info("update refused", extra={"event": "refused", "path": v.path, "analysisId": aid})
        self.post(("verdict", v))

    # -- recovery and receipt refresh -----------------------------------------------------------

    def _recover(self) -> None:
        self.catalog.refresh()
        for row in self.ledger.all():
            self._remember(row)

    def _remember(self, row: Any) -> None:
        """A receipt another writer (an earlier run, ``songlake ingest``) wrote: follow it."""
        self._ledger_seen = max(self._ledger_seen, row.updated_at)
        if row.analysis_id and row.status in ("registered", "rejected") and row.receipt_state:
            if row.path not in self._written:
                self._note_written(
                    row.path, row.analysis_id, row.receipt_state, row.receipt_version
                )
                with self._shared_lock:
                    self._changed.add(row.analysis_id)  # compared on the next pass

    def _note_written(self, path: str, aid: str, state: str | None, version: int | None) -> None:
        old = self._written.get(path)
        if old is not None and old[0] != aid:
            self._forget_written(path)
        self._written[path] = (aid, state, version)
        self._paths_of.setdefault(aid, set()).add(path)

    def _forget_written(self, path: str) -> None:
        aid = self._written.pop(path)[0]
        paths = self._paths_of.get(aid)
        if paths is not None:
            paths.discard(path)
            if not paths:
                del self._paths_of[aid]

    def receipt_stale(self, path: str) -> None:
        """An upload wrote this receipt with an older state (any thread): rewrite it soon."""
        with self._shared_lock:
            self._stale.add(path)

    def _refresh_pass(self) -> None:
        """Rewrite receipts whose analysis changed; retry sidecars whose study now exists."""
        self.catalog.refresh()
        for row in self.ledger.receipts_since(self._ledger_seen):
            self._remember(row)
        analyses = self.catalog.model.analyses
        with self._shared_lock:
            marked, self._stale = self._stale, set()
            changed, self._changed = self._changed, set()
        stale = [(path, self._written[path][0]) for path in marked if path in self._written]
        for aid in changed:  # only analyses that changed: a pass costs the changes, not the catalog
            rec = analyses.get(aid)
            if rec is None:
                continue
            for path in self._paths_of.get(aid, ()):
                _, state, version = self._written[path]
                if (rec.state != state or rec.version != version) and path not in marked:
                    stale.append((path, aid))
        for path, aid in stale:
            self._rewrite_receipt(path, aid)
        with self._shared_lock:
            ready = [s for s in self._waiting_for_study if s in self.catalog.model.studies]
            paths = [p for s in ready for p in self._waiting_for_study.pop(s)]
        if paths:
            self.post(("trigger", paths, "study"))

    def _rewrite_receipt(self, path: str, aid: str) -> None:
        summary = analysis_summary(self.catalog.model, aid)
        self._note_written(path, aid, summary["state"], summary["analysisVersion"])
        if not os.path.exists(path):
            self._forget_written(path)
            return
        try:
            with open(receipt_path(path), "rb") as f:
                old = json.load(f)
            uploads = {e["objectId"]: e.get("upload") for e in old.get("files", [])}
            sha = old.get("sidecarSha256")
        except (OSError, ValueError, KeyError, TypeError):
            row = self.ledger.get(path)
            uploads = row.uploads_doc() if row else {}
            sha = row.sha256 if row else None
        doc = receipt_doc(sidecar=path, sha256=sha, analysis=summary, uploads=uploads)
        self.writer.write_json(receipt_path(path), doc)
        self.post(("receipt", path, summary["state"], summary["analysisVersion"]))
        log.info(
            "receipt refreshed",
            extra={"event": "receipt", "path": path, "analysisId": aid, "state": summary["state"]},
        )


def _file_key(f: dict[str, Any], info: dict[str, Any]) -> tuple:
    return (
        f.get("fileSize"),
        str(f.get("fileMd5sum") or "").lower(),
        f.get("fileType"),
        f.get("fileAccess"),
        f.get("dataType"),
        dumps(info or {}),
    )


def _sample_key(s: dict[str, Any]) -> tuple:
    specimen = s.get("specimen") or {}
    donor = s.get("donor") or {}
    return (
        s.get("submitterSampleId"),
        specimen.get("submitterSpecimenId") if isinstance(specimen, dict) else None,
        donor.get("submitterDonorId") if isinstance(donor, dict) else None,
    )


def staged_object_ids(v: Verdict) -> list[tuple[str, Any]]:
    """(objectId, file check) of the files a staging job copies in."""
    assert v.analysis_id is not None
    return [(object_id(v.analysis_id, fc.name), fc) for fc in v.files if fc.status == "stage"]


__all__ = ["Registrar", "staged_object_ids"]
