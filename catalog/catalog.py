"""The catalog: one object that opens a root and does everything a Song user does with it.

Writes are group-committed: ``submit_batch`` validates a batch of payloads, then appends every
table once, children first and ``analyses`` last (the commit point), so a crash leaves at most
invisible orphans; ``change_states`` does the same for lifecycle transitions. Reads come from the
in-process read model.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from .errors import (
    BadRequest,
    Internal,
    NotFound,
    SchemaViolation,
    SonglakeError,
    StateTransitionRefused,
    problem,
)
from .lifecycle import Transition, check_allowed, history_row, message, verify_for_publish
from .model import STATES, dumps, new_analysis_id, now, parse_payload
from .read import entities
from .read.export import group_by_study, manifest_text
from .read.readmodel import ReadModel
from .read.records import MODEL_TABLES
from .read.search import Filters, SearchIndex
from .registry import AnalysisType, Registry, bundled_types
from .settings import Settings
from .store import LocalObjectStore, ObjectStore, open_store
from .store.audit import RegisteredFile, StorageReport, SyncReport, sync_storage, verify_storage
from .tables import TableStore
from .validation import Planner, resolve_type, schema_violation

ORPHAN_TABLES = ["donors", "specimens", "samples", "files", "analysis_samples"]
ORDER = ["donors", "specimens", "samples", "files", "analysis_samples", "analyses"]
STUDY_ID_MAX = 36


@dataclass
class SubmitItem:
    """One payload to register, with where it goes and how."""

    payload: bytes | str | dict[str, Any]
    study_id: str
    allow_duplicates: bool = False
    analysis_id: str | None = None  # a caller retrying a crashed batch passes the same id again
    source_paths: dict[str, str] | None = None


@dataclass
class SubmitResult:
    analysis_id: str | None
    error: SonglakeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Catalog:
    """A catalog root opened for reading and writing."""

    def __init__(self, settings: Settings, *, store: ObjectStore | None = None) -> None:
        self.settings = settings
        self.tables = TableStore(
            settings.tables_dir, compact_after_files=settings.compact_after_files
        )
        if not self.tables.exists():
            raise NotFound(
                f"{settings.root} is not a songlake catalog: run 'songlake --root "
                f"{settings.root} init' first",
                error_id="id.not.found",
            )
        self.registry = Registry(self.tables)
        self.model = ReadModel(self.tables)
        self.model.load()
        self.store = store or open_store(settings)  # local or S3, as the settings say
        self._write_lock = threading.Lock()
        self._search_index: SearchIndex | None = None

    # -- creating and opening -------------------------------------------------------------------

    @classmethod
    def init(cls, settings: Settings, *, seed_types: bool = True) -> Catalog:
        """Create a catalog root (idempotent): tables, inbox, state, object store, bundled types."""
        for folder in (settings.root, settings.inbox_dir, settings.state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        TableStore(settings.tables_dir).create_all()
        if settings.object_store == "local":
            LocalObjectStore(settings.objects_dir)
        catalog = cls(settings)
        if seed_types:
            for body in bundled_types():
                if catalog.registry.latest_version(body["name"]) is None:
                    catalog.registry.register(body, actor="songlake init")
        return catalog

    def refresh(self) -> bool:
        """Pick up commits made by other processes."""
        self.registry.refresh()
        return self.model.refresh()

    # -- studies --------------------------------------------------------------------------------

    def create_study(
        self, study: dict[str, Any], *, study_id: str | None = None, actor: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(study, dict):
            raise BadRequest("A study must be a JSON object", error_id="malformed.parameter")
        sid = study.get("studyId") or study_id
        if study_id is not None and study.get("studyId") not in (None, study_id):
            raise BadRequest(
                f"The studyId '{study.get('studyId')}' in the body does not match '{study_id}'",
                error_id="study.id.mismatch",
            )
        if not isinstance(sid, str) or not sid or len(sid) > STUDY_ID_MAX:
            raise BadRequest(
                f"A studyId must be a string of 1 to {STUDY_ID_MAX} characters",
                error_id="malformed.parameter",
            )
        info = study.get("info") or {}
        if not isinstance(info, dict):
            raise BadRequest("A study's info must be an object", error_id="malformed.parameter")
        with self._write_lock:
            self.refresh()
            if sid in self.model.studies:
                raise SonglakeError(
                    f"The studyId '{sid}' already exists",
                    error_id="study.already.exists",
                    study_id=sid,
                )
            row = {
                "study_id": sid,
                "name": study.get("name"),
                "organization": study.get("organization"),
                "description": study.get("description"),
                "info": dumps(info) if info else None,
                "created_at": now(),
            }
            self.tables.group_commit([("studies", [row])], operation="create_study", actor=actor)
            self.model.apply_rows("studies", [row])
        return self.get_study(sid)

    def get_study(self, study_id: str) -> dict[str, Any]:
        row = self.model.studies.get(study_id)
        if row is None:
            raise NotFound(
                f"The studyId '{study_id}' does not exist",
                error_id="study.id.does.not.exist",
                study_id=study_id,
            )
        out = {
            "studyId": row["study_id"],
            "name": row["name"],
            "organization": row["organization"],
            "description": row["description"],
            "info": json.loads(row["info"]) if row["info"] else None,
        }
        return {k: v for k, v in out.items() if v not in (None, {}, "")}

    def list_studies(self) -> list[str]:
        return sorted(self.model.studies)

    # -- analysis types -------------------------------------------------------------------------

    def register_type(self, body: Any, *, actor: str | None = None) -> AnalysisType:
        with self._write_lock:
            return self.registry.register(body, actor=actor)

    # -- registration ---------------------------------------------------------------------------

    def submit(
        self,
        payload: bytes | str | dict[str, Any],
        study_id: str,
        *,
        allow_duplicates: bool = False,
        actor: str | None = None,
    ) -> str:
        """Register one payload; returns its analysisId or raises the Song error."""
        result = self.submit_batch(
            [SubmitItem(payload, study_id, allow_duplicates=allow_duplicates)], actor=actor
        )[0]
        if result.error is not None:
            raise result.error
        assert result.analysis_id is not None
        return result.analysis_id

    def submit_batch(
        self, items: Sequence[SubmitItem], *, actor: str | None = None
    ) -> list[SubmitResult]:
        """Validate every payload, then commit the accepted ones together (one commit per table)."""
        results: list[SubmitResult] = []
        with self._write_lock:
            self.refresh()
            planner = Planner(
                self.model, self.registry, enforce_latest=self.settings.enforce_latest
            )
            created = now()
            plans = []
            for item in items:
                try:
                    if item.study_id not in self.model.studies:
                        raise NotFound(
                            f"The studyId '{item.study_id}' does not exist",
                            error_id="study.id.does.not.exist",
                            study_id=item.study_id,
                        )
                    payload = parse_payload(
                        item.payload,
                        max_bytes=self.settings.max_payload_bytes,
                        max_depth=self.settings.max_payload_depth,
                    )
                    aid = item.analysis_id or new_analysis_id()
                    if aid in self.model.analyses:
                        raise SonglakeError(
                            f"The analysisId '{aid}' already exists",
                            error_id="analysis.id.collision",
                            analysis_id=aid,
                        )
                    plan = planner.plan(
                        payload,
                        item.study_id,
                        aid,
                        allow_duplicates=item.allow_duplicates,
                        created_at=created,
                        actor=actor,
                        source_paths=item.source_paths,
                    )
                    plans.append(plan)
                    results.append(SubmitResult(aid))
                except SonglakeError as exc:
                    results.append(SubmitResult(None, exc))
            if plans:
                self._commit_rows(
                    [(name, [r for p in plans for r in p.rows[name]]) for name in ORDER],
                    operation="submit",
                    actor=actor,
                )
        return results

    def check_payload(
        self,
        payload: bytes | str | dict[str, Any],
        study_id: str,
        *,
        allow_duplicates: bool = False,
    ) -> None:
        """Validate a payload exactly as submit_batch would, committing nothing (a dry run).

        The watcher calls it before copying large files into object storage."""
        with self._write_lock:
            self.refresh()
            if study_id not in self.model.studies:
                raise NotFound(
                    f"The studyId '{study_id}' does not exist",
                    error_id="study.id.does.not.exist",
                    study_id=study_id,
                )
            doc = parse_payload(
                payload,
                max_bytes=self.settings.max_payload_bytes,
                max_depth=self.settings.max_payload_depth,
            )
            planner = Planner(
                self.model, self.registry, enforce_latest=self.settings.enforce_latest
            )
            aid = new_analysis_id()
            planner.plan(doc, study_id, aid, allow_duplicates=allow_duplicates, created_at=now())

    def _commit_rows(
        self, batches: list[tuple[str, list[dict[str, Any]]]], *, operation: str, actor: str | None
    ) -> int:
        """Group-commit rows, then apply them to the read model (analyses first)."""
        versions = {}
        for name, rows in batches:
            versions[name] = self.tables.append(name, rows)
        catalog_version = self.tables._log_commit(operation, actor, sum(len(r) for _, r in batches))
        applied = dict(batches)
        for name in MODEL_TABLES:
            if name in applied:
                self.model.apply_rows(name, applied[name])
                self.model.mark_seen(name, versions[name])
        return catalog_version

    # -- reading analyses -----------------------------------------------------------------------

    def _record(self, study_id: str, analysis_id: str):
        rec = self.model.analyses.get(analysis_id)
        if rec is None:
            if study_id not in self.model.studies:
                raise NotFound(
                    f"The studyId '{study_id}' does not exist",
                    error_id="study.id.does.not.exist",
                    study_id=study_id,
                )
            raise NotFound(
                f"The analysisId '{analysis_id}' was not found",
                error_id="analysis.id.not.found",
                analysis_id=analysis_id,
            )
        if rec.study_id != study_id:
            if study_id not in self.model.studies:
                raise NotFound(
                    f"The studyId '{study_id}' does not exist",
                    error_id="study.id.does.not.exist",
                    study_id=study_id,
                )
            raise BadRequest(
                f"The analysis '{analysis_id}' is not related to the study '{study_id}'",
                error_id="entity.not.related.to.study",
                study_id=study_id,
                analysis_id=analysis_id,
            )
        return rec

    def get_analysis(self, study_id: str, analysis_id: str) -> dict[str, Any]:
        rec = self._record(study_id, analysis_id)
        with self.model.lock:
            return self.model.analysis_doc(rec)

    def get_analyses(self, study_id: str, analysis_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Documents of several analyses of a study (e.g. search hits), built under one lock, to
        be serialized as they are (they share their sample dicts)."""
        samples: dict[str, dict[str, Any]] = {}  # hits share donors: build each sample once
        with self.model.lock:
            return [
                self.model.analysis_doc(rec, samples)
                for rec in (self.model.analyses.get(a) for a in analysis_ids)
                if rec is not None and rec.study_id == study_id
            ]

    def find_analysis(self, analysis_id: str) -> dict[str, Any]:
        """An analysis by id alone (the CLI does not make users repeat the study)."""
        rec = self.model.analyses.get(analysis_id)
        if rec is None:
            raise NotFound(
                f"The analysisId '{analysis_id}' was not found",
                error_id="analysis.id.not.found",
                analysis_id=analysis_id,
            )
        return self.get_analysis(rec.study_id, analysis_id)

    def study_of(self, analysis_id: str) -> str:
        rec = self.model.analyses.get(analysis_id)
        if rec is None:
            raise NotFound(
                f"The analysisId '{analysis_id}' was not found",
                error_id="analysis.id.not.found",
                analysis_id=analysis_id,
            )
        return rec.study_id

    def analysis_files(self, study_id: str, analysis_id: str) -> list[dict[str, Any]]:
        rec = self._record(study_id, analysis_id)
        files = sorted((self.model.files[o] for o in rec.object_ids), key=lambda f: f[4])
        return [self.model.file_json(f) for f in files]

    def list_analyses(self, study_id: str, states: Iterable[str] = ("PUBLISHED",)) -> list[dict]:
        states = check_states(states)
        self.get_study(study_id)
        with self.model.lock:
            return [
                self.model.analysis_doc(self.model.analyses[a])
                for a in self.model.iter_study(study_id, states)
            ]

    def page_analyses(
        self,
        study_id: str,
        states: Iterable[str] = ("PUBLISHED",),
        *,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Song's paginated listing: sorted by analysisId, with totals."""
        states = check_states(states)
        check_page(limit, offset)
        self.get_study(study_id)
        ids = self.model.page_ids(study_id, states, offset, limit)
        with self.model.lock:
            docs = [self.model.analysis_doc(self.model.analyses[a]) for a in ids]
        return {
            "analyses": docs,
            "totalAnalyses": self.model.count(study_id, states),
            "currentTotalAnalyses": len(docs),
        }

    def count_analyses(self, study_id: str, states: Iterable[str] = STATES) -> int:
        return self.model.count(study_id, check_states(states))

    def search_ids(self, study_id: str, **params: str | None) -> list[str]:
        """Song's id search: each parameter a case-insensitive unanchored regex; all must match
        the same (analysis x sample x file) row. Returns matching analysis ids, sorted."""
        self.get_study(study_id)
        m = self.model
        sample_sets: list[set[str]] = []
        if params.get("sampleId"):
            sample_sets.append(m.regex_ids("samples", "sample_id", params["sampleId"], study_id))
        if params.get("submitterSampleId"):
            sample_sets.append(
                m.regex_ids("samples", "submitter_sample_id", params["submitterSampleId"], study_id)
            )
        specimen_sets = []
        if params.get("specimenId"):
            specimen_sets.append(
                m.regex_ids("specimens", "specimen_id", params["specimenId"], study_id)
            )
        if params.get("submitterSpecimenId"):
            specimen_sets.append(
                m.regex_ids(
                    "specimens", "submitter_specimen_id", params["submitterSpecimenId"], study_id
                )
            )
        donor_sets = []
        if params.get("donorId"):
            donor_sets.append(m.regex_ids("donors", "donor_id", params["donorId"], study_id))
        if params.get("submitterDonorId"):
            donor_sets.append(
                m.regex_ids("donors", "submitter_donor_id", params["submitterDonorId"], study_id)
            )
        with m.lock:
            if donor_sets:
                donors = set.intersection(*donor_sets)
                specimen_sets.append({p for d in donors for p in m.donor_specimens.get(d, ())})
            if specimen_sets:
                specimens = set.intersection(*specimen_sets)
                sample_sets.append({s for p in specimens for s in m.specimen_samples.get(p, ())})
            if sample_sets:
                samples = set.intersection(*sample_sets)
                analyses = {a for s in samples for a in m.sample_analyses.get(s, ())}
            else:
                analyses = set(m.by_study.get(study_id, ()))
            if params.get("fileId"):
                files = m.regex_ids("files", "object_id", params["fileId"], study_id)
                analyses &= {m.files[o][1] for o in files if o in m.files}
            return sorted(a for a in analyses if m.analyses[a].study_id == study_id)

    def history(self, study_id: str, analysis_id: str) -> list[dict[str, Any]]:
        """The full state history, with actor and reason (Song shows only the first three)."""
        from .model import song_time

        rec = self._record(study_id, analysis_id)
        return [
            {
                "initialState": h[1],
                "updatedState": h[2],
                "updatedAt": song_time(h[3]),
                "actor": h[4],
                "reason": h[5],
            }
            for h in rec.history
        ]

    # -- lifecycle ------------------------------------------------------------------------------

    def publish(
        self,
        study_id: str,
        analysis_id: str,
        *,
        ignore_undefined_md5: bool = False,
        actor: str | None = None,
        reason: str | None = None,
    ) -> str:
        return self._one(
            Transition(study_id, analysis_id, "publish", actor, reason, ignore_undefined_md5)
        )

    def unpublish(
        self,
        study_id: str,
        analysis_id: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> str:
        return self._one(Transition(study_id, analysis_id, "unpublish", actor, reason))

    def suppress(
        self,
        study_id: str,
        analysis_id: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> str:
        return self._one(Transition(study_id, analysis_id, "suppress", actor, reason))

    def _one(self, t: Transition) -> str:
        outcome = self.change_states([t])[0]
        if isinstance(outcome, SonglakeError):
            raise outcome
        return outcome

    def change_states(
        self, transitions: Sequence[Transition], *, storage_checked: bool = False
    ) -> list[str | SonglakeError]:
        """Apply many transitions with one history commit; each gets its message or its error.

        With storage_checked, the caller ran ``check_publishable`` on each publish already (the
        API does, in each request's own thread, so the checks of concurrent requests overlap).
        """
        outcomes: list[str | SonglakeError] = [""] * len(transitions)
        # storage checks read object storage: run them before taking the write lock
        verified: dict[int, SonglakeError | None] = {}
        latest: dict[str, int | None] = {}  # one registry look-up per type for the batch
        for i, t in enumerate(transitions):
            if t.action == "publish" and not storage_checked:
                try:
                    self._check_publishable(t, latest)
                    verified[i] = None
                except SonglakeError as exc:
                    verified[i] = exc
        with self._write_lock:
            self.refresh()
            rows = []
            at = now()
            states: dict[str, str] = {}
            for i, t in enumerate(transitions):
                try:
                    if verified.get(i) is not None:
                        raise verified[i]  # type: ignore[misc]
                    rec = self._record(t.study_id, t.analysis_id)
                    current = states.get(t.analysis_id, rec.state)
                    target = check_allowed(t.analysis_id, current, t.action)
                    # distinct times keep several transitions of one analysis in order
                    rows.append(
                        history_row(t, current, target, at + timedelta(microseconds=len(rows)))
                    )
                    states[t.analysis_id] = target
                    outcomes[i] = message(t.action, t.analysis_id)
                except SonglakeError as exc:
                    outcomes[i] = exc
            if rows:
                self._commit_rows(
                    [("analysis_state_history", rows)],
                    operation="change_states",
                    actor=transitions[0].actor if transitions else None,
                )
        return outcomes

    def check_publishable(self, t: Transition) -> None:
        """Song's publish checks (state, type version, files in storage with their size and md5);
        raises the first failure."""
        self._check_publishable(t, {})

    def _check_publishable(self, t: Transition, latest_of: dict[str, int | None]) -> None:
        rec = self._record(t.study_id, t.analysis_id)
        if rec.state == "SUPPRESSED":
            check_allowed(t.analysis_id, rec.state, "publish")
        if self.settings.enforce_latest:
            if rec.type_name not in latest_of:
                latest_of[rec.type_name] = self.registry.latest_version(rec.type_name)
            latest = latest_of[rec.type_name]
            if latest is not None and rec.type_version != latest:
                raise SonglakeError(
                    f"Must use the latest version '{latest}' while enforceLatest=true, but using "
                    f"version '{rec.type_version}' of analysisType '{rec.type_name}' instead",
                    error_id="analysis.type.incorrect.version",
                    analysis_id=t.analysis_id,
                )
        files = self.analysis_files(t.study_id, t.analysis_id)
        if not files:
            raise Internal(
                f"The analysis '{t.analysis_id}' has no files",
                error_id="analysis.missing.files",
                analysis_id=t.analysis_id,
            )
        verify_for_publish(
            self.store, t.analysis_id, files, ignore_undefined_md5=t.ignore_undefined_md5
        )

    # -- updates (PUT and PATCH of dynamic data) ------------------------------------------------

    def update_analysis(
        self, study_id: str, analysis_id: str, body: Any, *, actor: str | None = None
    ) -> dict[str, Any]:
        """Replace an analysis' dynamic data (Song's PUT); keeps every earlier version."""
        if not isinstance(body, dict):
            raise BadRequest("The update must be a JSON object", error_id="malformed.parameter")
        with self._write_lock:
            self.refresh()
            rec = self._record(study_id, analysis_id)
            if rec.state == "SUPPRESSED":
                raise StateTransitionRefused(
                    f"Cannot update the analysis '{analysis_id}': it is SUPPRESSED",
                    error_id="suppressed.state.transition",
                    analysis_id=analysis_id,
                )
            compiled = resolve_type(
                body, self.registry, enforce_latest=self.settings.enforce_latest
            )
            found = compiled.update_problems(body)
            if found:
                raise schema_violation(found)
            data = {k: v for k, v in body.items() if k != "analysisType"}
            row = {
                "analysis_id": analysis_id,
                "study_id": study_id,
                "version": rec.version + 1,
                "analysis_type_name": compiled.type.name,
                "analysis_type_version": compiled.type.version,
                "data": dumps(data),
                "created_at": now(),
                "actor": actor,
                "reason": "update",
            }
            self._commit_rows([("analyses", [row])], operation="update_analysis", actor=actor)
        return self.get_analysis(study_id, analysis_id)

    def patch_analysis(
        self, study_id: str, analysis_id: str, patch: Any, *, actor: str | None = None
    ) -> dict[str, Any]:
        """Apply an RFC 7386 merge patch to (data + analysisType), validated like a PUT."""
        rec = self._record(study_id, analysis_id)
        current = json.loads(rec.data)
        current["analysisType"] = {"name": rec.type_name, "version": rec.type_version}
        merged = merge_patch(current, patch)
        if not isinstance(merged, dict):
            raise SchemaViolation(
                "The patched analysis is not an object",
                problems=[problem("", "type", "expected an object")],
            )
        return self.update_analysis(study_id, analysis_id, merged, actor=actor)

    def versions(self, study_id: str, analysis_id: str) -> list[dict[str, Any]]:
        """Every stored version of an analysis' dynamic data, oldest first."""
        from .model import song_time

        self._record(study_id, analysis_id)
        table = self.tables.read("analyses")
        rows = table.filter(pc.equal(table.column("analysis_id"), analysis_id)).to_pylist()
        return [
            {
                "version": r["version"],
                "analysisType": {
                    "name": r["analysis_type_name"],
                    "version": r["analysis_type_version"],
                },
                "createdAt": song_time(r["created_at"]),
                "actor": r["actor"],
                "data": json.loads(r["data"]),
            }
            for r in sorted(rows, key=lambda r: r["version"])
        ]

    # -- storage --------------------------------------------------------------------------------

    def upload(self, analysis_id: str, directory: Path) -> list[dict[str, Any]]:
        """Copy an analysis' files from a folder into object storage, verified by size and md5."""
        study_id = self.study_of(analysis_id)
        rec = self._record(study_id, analysis_id)
        if rec.state != "UNPUBLISHED":
            raise BadRequest(
                f"Files can be uploaded only while the analysis is UNPUBLISHED, not {rec.state}",
                error_id="illegal.file.update.request",
                analysis_id=analysis_id,
            )
        files = self.analysis_files(study_id, analysis_id)
        missing = [f["fileName"] for f in files if not (Path(directory) / f["fileName"]).is_file()]
        if missing:
            raise NotFound(
                f"Files missing in {directory}: {', '.join(missing)}",
                error_id="file.not.found",
                analysis_id=analysis_id,
            )
        out = []
        for f in files:
            spec = self.store.put_file(
                f["objectId"],
                Path(directory) / f["fileName"],
                expected_md5=f["fileMd5sum"],
                expected_size=f["fileSize"],
            )
            out.append(
                {
                    "objectId": f["objectId"],
                    "fileName": f["fileName"],
                    "objectSize": spec.object_size,
                    "objectMd5": spec.object_md5,
                }
            )
        return out

    def manifest(self, analysis_id: str, directory: Path) -> str:
        study_id = self.study_of(analysis_id)
        files = self.analysis_files(study_id, analysis_id)
        if not files:
            raise Internal(
                f"The analysis '{analysis_id}' has no files",
                error_id="analysis.missing.files",
                analysis_id=analysis_id,
            )
        missing = [f["fileName"] for f in files if not (Path(directory) / f["fileName"]).is_file()]
        if missing:
            raise NotFound(
                f"Files missing in {directory}: {', '.join(missing)}",
                error_id="file.not.found",
                analysis_id=analysis_id,
            )
        return manifest_text(analysis_id, files, Path(directory))

    def registered_files(self, study_id: str | None = None) -> list[RegisteredFile]:
        """Every file of every committed analysis (of one study), sorted by objectId."""
        model = self.model
        if study_id is not None:
            self.get_study(study_id)
        out = []
        with model.lock:
            records: Iterable[Any] = (
                (model.analyses[a] for a in model.by_study.get(study_id, ()))
                if study_id is not None
                else model.analyses.values()
            )
            for rec in records:
                state = rec.state
                for oid in rec.object_ids:
                    f = model.files[oid]
                    out.append(
                        RegisteredFile(
                            oid, rec.analysis_id, rec.study_id, state, f[4], f[5], f[7], f[11]
                        )
                    )
        out.sort(key=lambda r: r.object_id)
        return out

    def verify_storage(
        self, study_id: str | None = None, *, rehash: bool = False, **progress: Any
    ) -> StorageReport:
        """``storage verify``: every registered file (of a study) against object storage."""
        files = self.registered_files(study_id)
        return verify_storage(
            self.store, files, everything=study_id is None, rehash=rehash, **progress
        )

    def sync_storage(self, study_id: str | None = None, **progress: Any) -> SyncReport:
        """``storage sync``: upload what verify finds missing or wrong, from its ingest path."""
        files = self.registered_files(study_id)
        return sync_storage(
            self.store, files, root=self.settings.root, everything=study_id is None, **progress
        )

    # -- maintenance ----------------------------------------------------------------------------

    def orphans(self, *, min_age_seconds: float = 3600.0) -> dict[str, list[str]]:
        """Per child table, analysis ids of rows whose analysis never committed, older than
        min_age_seconds (younger ones may belong to a batch still committing elsewhere)."""
        committed = set(
            self.tables.read("analyses")
            .filter(pc.equal(pc.field("version"), 1))
            .column("analysis_id")
            .to_pylist()
        )
        cutoff = now() - timedelta(seconds=min_age_seconds)
        out: dict[str, list[str]] = {}
        for name in ORPHAN_TABLES:
            table = self.tables.read(name).select(["analysis_id", "created_at"])
            ids = {
                aid
                for aid, at in zip(
                    table.column("analysis_id").to_pylist(),
                    table.column("created_at").to_pylist(),
                    strict=True,
                )
                if aid not in committed and at <= cutoff
            }
            if ids:
                out[name] = sorted(ids)
        return out

    def repair(
        self, *, min_age_seconds: float = 3600.0, actor: str | None = None
    ) -> dict[str, int]:
        """Delete orphan rows left by a crash between the commits of a batch."""
        with self._write_lock:
            found = self.orphans(min_age_seconds=min_age_seconds)
            deleted = {
                name: self.tables.delete_where_in(name, "analysis_id", ids)
                for name, ids in found.items()
            }
            if deleted:
                self.tables._log_commit("repair", actor, sum(deleted.values()))
                self.model.forget_pending({a for ids in found.values() for a in ids})
        return deleted

    # -- single entities: donors, specimens, samples, files (song-api.md §1.2 #17-26) -----------

    def get_entity(self, kind: str, study_id: str, entity_id: str) -> dict[str, Any]:
        """A donor, specimen, sample or file of a study, as Song serves it."""
        with self.model.lock:
            row = entities.entity_row(self.model, kind, study_id, entity_id)
            return entities.entity_json(self.model, kind, row)

    def study_tree(self, study_id: str) -> dict[str, Any]:
        """The study with its donors -> specimens -> samples (Song's GET /studies/{s}/all)."""
        return entities.study_tree(self.model, self.get_study(study_id))

    def legacy_entity(self, object_id: str) -> dict[str, Any]:
        """Score's view of one file: ``{id, gnosId, fileName, projectCode, access}``."""
        row = self.model.files.get(object_id)
        if row is None:
            raise NotFound(
                f"The entity with id '{object_id}' does not exist",
                error_id="legacy.entity.not.found",
            )
        return entities.legacy_entity(row)

    def update_file(
        self, study_id: str, object_id: str, body: Any, *, actor: str | None = None
    ) -> dict[str, Any]:
        """Song's file update: appends the file's next version unless nothing changes."""
        given = entities.check_file_update_request(body)
        with self._write_lock:
            self.refresh()
            row = entities.entity_row(self.model, "file", study_id, object_id)
            original = self.model.file_json(row)
            entities.check_file_update_request(body, original)
            state = self.model.analyses[row[1]].state
            if state == "SUPPRESSED":
                raise BadRequest(
                    f"The file '{object_id}' cannot be updated: its analysis '{row[1]}' is "
                    "SUPPRESSED",
                    error_id="illegal.file.update.request",
                    analysis_id=row[1],
                )
            kind = entities.classify_file_update(original, given)
            if kind == "CONTENT_UPDATE" and state != "UNPUBLISHED":
                raise BadRequest(
                    f"The content (size or md5) of file '{object_id}' can change only while its "
                    f"analysis '{row[1]}' is UNPUBLISHED, not {state}: unpublish it first",
                    error_id="illegal.file.update.request",
                    analysis_id=row[1],
                )
            if kind != "NO_UPDATE":
                info = {**original["info"], **given.get("info", {})}
                info = {k: v for k, v in info.items() if v is not None}
                new_row = {
                    "object_id": object_id,
                    "analysis_id": row[1],
                    "study_id": study_id,
                    "version": row[3] + 1,
                    "file_name": row[4],
                    "file_size": given.get("fileSize", row[5]),
                    "file_type": row[6],
                    "file_md5sum": given.get("fileMd5sum", row[7]),
                    "file_access": given.get("fileAccess", row[8]),
                    "data_type": given.get("dataType", row[9]),
                    "info": dumps(info) if info else None,
                    "source_path": row[11],
                    "created_at": now(),
                }
                self._commit_rows([("files", [new_row])], operation="update_file", actor=actor)
        verb = "No update for" if kind == "NO_UPDATE" else "Updated"
        return {
            "fileUpdateType": kind,
            "originalAnalysisState": state,
            "unpublishedAnalysis": False,
            "message": f"{verb} file with objectId '{object_id}' and analysisId '{row[1]}'",
            "originalFile": original,
        }

    def delete_files(
        self, study_id: str, object_ids: Sequence[str], *, actor: str | None = None
    ) -> None:
        """Delete files of UNPUBLISHED analyses (tombstone rows); an analysis keeps >= 1 file."""
        with self._write_lock:
            self.refresh()
            wanted = list(dict.fromkeys(object_ids))
            rows = [entities.entity_row(self.model, "file", study_id, o) for o in wanted]
            per_analysis: dict[str, int] = {}
            for row in rows:
                per_analysis[row[1]] = per_analysis.get(row[1], 0) + 1
            for aid, count in per_analysis.items():
                rec = self.model.analyses[aid]
                if rec.state != "UNPUBLISHED":
                    raise BadRequest(
                        f"Files of analysis '{aid}' can be deleted only while it is UNPUBLISHED, "
                        f"not {rec.state}",
                        error_id="illegal.file.update.request",
                        analysis_id=aid,
                    )
                if count >= len(rec.object_ids):
                    raise BadRequest(
                        f"Deleting these files would leave analysis '{aid}' without files",
                        error_id="illegal.file.update.request",
                        analysis_id=aid,
                    )
            at = now()
            tombstones = [
                {
                    "object_id": row[0],
                    "analysis_id": row[1],
                    "study_id": study_id,
                    "version": row[3] + 1,
                    "file_name": None,
                    "created_at": at,
                }
                for row in rows
            ]
            self._commit_rows([("files", tombstones)], operation="delete_files", actor=actor)

    def delete_entities(
        self, kind: str, study_id: str, ids: Sequence[str], *, actor: str | None = None
    ) -> None:
        """Song's DELETE of donors, specimens or samples (files: ``delete_files``).

        Every donor, specimen and sample is used by the analysis that created it, and analyses
        are never deleted, so this checks the ids (404 / 400 as Song) and then refuses with
        ``<kind>.repository.delete.record``, as Song's foreign keys refuse it."""
        if kind == "file":
            self.delete_files(study_id, ids, actor=actor)
            return
        wanted = list(dict.fromkeys(ids))
        with self.model.lock:
            for entity_id in wanted:
                entities.entity_row(self.model, kind, study_id, entity_id)
        used_by = entities.referencing_analyses(self.model, kind, wanted[0])
        raise entities.refuse_delete(kind, wanted[0], used_by)

    # -- portal search (read/search.py) -------------------------------------------------------

    def search_index(self) -> SearchIndex:
        """The columnar index behind portal search, made on first use."""
        with self.model.lock:
            if self._search_index is None:
                self._search_index = SearchIndex(self.model)
            return self._search_index

    def search_analyses(
        self,
        filters: Filters,
        *,
        sort: str = "analysisId",
        descending: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Analyses matching `filters`, one page of full documents, with the total."""
        check_page(limit, offset)
        page = self.search_index().analyses(
            filters, sort=sort, descending=descending, limit=limit, offset=offset
        )
        with self.model.lock:
            docs = [
                self.model.analysis_doc(self.model.analyses[a])
                for a in page.ids
                if a in self.model.analyses
            ]
        return {
            "analyses": docs,
            "totalAnalyses": page.total,
            "currentTotalAnalyses": len(docs),
            "limit": limit,
            "offset": offset,
        }

    def search_files(
        self,
        filters: Filters,
        *,
        sort: str = "objectId",
        descending: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Files matching `filters` (analysis filters apply to each file's analysis), paged."""
        check_page(limit, offset)
        page = self.search_index().files(
            filters, sort=sort, descending=descending, limit=limit, offset=offset
        )
        with self.model.lock:
            files = []
            for o in page.ids:
                row = self.model.files.get(o)
                if row is not None:
                    doc = self.model.file_json(row)
                    doc["analysisState"] = self.model.analyses[row[1]].state
                    files.append(doc)
        return {
            "files": files,
            "totalFiles": page.total,
            "currentTotalFiles": len(files),
            "limit": limit,
            "offset": offset,
        }

    # -- export ---------------------------------------------------------------------------------

    def export_study(self, study_id: str) -> list[dict[str, Any]]:
        self.get_study(study_id)
        docs = self.list_analyses(study_id, STATES)
        return group_by_study(docs) or [{"studyId": study_id, "payloads": []}]

    def export_analyses(self, analysis_ids: Iterable[str]) -> list[dict[str, Any]]:
        docs = [self.find_analysis(a) for a in analysis_ids]
        return group_by_study(docs)

    def export_docs(
        self, *, study_id: str | None = None, analysis_ids: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        if study_id is not None:
            self.get_study(study_id)
            return self.list_analyses(study_id, STATES)
        return [self.find_analysis(a) for a in analysis_ids]


def check_page(limit: int, offset: int) -> None:
    if limit < 0 or offset < 0:
        raise BadRequest("limit and offset must be >= 0", error_id="malformed.parameter")


def check_states(states: Iterable[str]) -> list[str]:
    states = [s for s in states]
    bad = [s for s in states if s not in STATES]
    if bad:
        raise BadRequest(
            f"The following are not AnalysisStates: '{','.join(bad)}'",
            error_id="malformed.parameter",
        )
    return states


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
