"""The catalog: one object that opens a root and does everything a Song user does with it.

A facade: each method is one Song operation and hands the work to the wing that owns it.

    writes      write/: registration (submit, group commit), lifecycle (publish, unpublish,
                suppress), updates (PUT/PATCH, files), studies, registry (analysis types), all
                committed through one Committer (write/commit.py)
    reads       read/: the in-process read model, id and portal search, entities, export
    storage     store/: the object store in Score's layout, and its audit against the registry

Reads come from the read model (refreshed from other processes' commits on ``refresh``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from .current import Refresher
from .errors import (
    AnalysisMissingFiles,
    FileNotFound,
    IllegalFileUpdate,
    LegacyEntityNotFound,
    MalformedParameter,
    NotFound,
    SonglakeError,
)
from .model import STATES, check_states, song_time
from .read import entities
from .read.export import group_by_study, manifest_text
from .read.idsearch import search_ids
from .read.readmodel import ReadModel
from .read.search import Filters, SearchIndex
from .settings import Settings
from .store import LocalObjectStore, ObjectStore, open_lease, open_store
from .store.audit import RegisteredFile, StorageReport, SyncReport, sync_storage, verify_storage
from .store.newfiles import write_file
from .tables import TableStore
from .write.commit import Committer
from .write.lifecycle import Lifecycle, Transition
from .write.registration import Registration, SubmitItem, SubmitResult
from .write.registry import AnalysisType, Registry, bundled_types
from .write.studies import create_study
from .write.updates import Updates

#: the last whole-store ``storage verify`` report, in the state folder
STORAGE_REPORT = "storage-verify.json"


class Catalog:
    """A catalog root opened for reading and writing."""

    def __init__(self, settings: Settings, *, store: ObjectStore | None = None) -> None:
        self.settings = settings
        self.tables = TableStore(
            settings.tables_dir,
            compact_after_files=settings.compact_after_files,
            vacuum_retention_hours=settings.vacuum_retention,
        )
        if not self.tables.exists():
            raise NotFound(
                f"{settings.location} is not a songlake catalog: run 'songlake --root "
                f"{settings.location} init' first"
            )
        self.registry = Registry(self.tables)
        self.model = ReadModel(self.tables, settings.state_dir / "readmodel")
        self.model.load()
        self.store = store or open_store(settings)  # local or S3, as the settings say
        self.committer = Committer(self.tables, self.model, self.registry, open_lease(settings))
        self.current = Refresher.of(self.tables, settings)  # current_* tables, in the background
        self.committer.after_write = self.current.after_write
        self._registration = Registration(settings, self.committer)
        self._lifecycle = Lifecycle(settings, self.committer, self.store)
        self._updates = Updates(settings, self.committer)
        self._search_index: SearchIndex | None = None

    # -- creating and opening -------------------------------------------------------------------

    @classmethod
    def init(cls, settings: Settings, *, seed_types: bool = True) -> Catalog:
        """Create a catalog root (idempotent): tables, inbox, state, object store, bundled types.

        A root on S3 is checked first (bucket, credentials, conditional put): nothing is created
        anywhere for a root that cannot hold a catalog safely."""
        if settings.location.is_s3:
            from .store.s3root import check_root  # boto3 loads only for a root on S3

            check_root(settings.location)
        for folder in (settings.root, settings.inbox_dir, settings.state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        TableStore(settings.tables_dir).create_all()
        if settings.object_store == "local":
            LocalObjectStore(settings.objects_dir)
        catalog = cls(settings)
        if seed_types:
            for body in bundled_types():
                if catalog.registry.latest_version(body["name"]) is None:
                    catalog.register_type(body, actor="songlake init")
        return catalog

    def refresh(self) -> bool:
        """Pick up commits made by other processes."""
        return self.committer.refresh()

    # -- studies and analysis types -------------------------------------------------------------

    def create_study(
        self, study: dict[str, Any], *, study_id: str | None = None, actor: str | None = None
    ) -> dict[str, Any]:
        return self.get_study(create_study(self.committer, study, study_id=study_id, actor=actor))

    def get_study(self, study_id: str) -> dict[str, Any]:
        self.model.check_study(study_id)
        row = self.model.studies[study_id]
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

    def register_type(self, body: Any, *, actor: str | None = None) -> AnalysisType:
        """Register version N+1 of a named type from a ``{name, schema, options}`` body."""

        def write() -> AnalysisType:
            atype = self.registry.prepare(body)
            self.committer.commit(
                [("analysis_types", [self.registry.row(atype)])],
                operation="register_analysis_type",
                actor=actor,
            )
            self.registry.refresh()
            return self.registry.get(atype.name, atype.version)

        return self.committer.run(write)

    # -- registration (write/registration.py) ---------------------------------------------------

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
        return self._registration.submit_batch(items, actor=actor)

    def check_payload(
        self,
        payload: bytes | str | dict[str, Any],
        study_id: str,
        *,
        allow_duplicates: bool = False,
    ) -> None:
        """Validate a payload exactly as submit_batch would, committing nothing (a dry run).

        The watcher calls it before copying large files into object storage."""
        self._registration.check_payload(payload, study_id, allow_duplicates=allow_duplicates)

    def orphans(self, *, min_age_seconds: float = 3600.0) -> dict[str, list[str]]:
        """Per child table, analysis ids of rows a crashed batch left behind (``repair``)."""
        return self._registration.orphans(min_age_seconds=min_age_seconds)

    def repair(
        self, *, min_age_seconds: float = 3600.0, actor: str | None = None
    ) -> dict[str, int]:
        """Delete orphan rows left by a crash between the commits of a batch."""
        return self._registration.repair(min_age_seconds=min_age_seconds, actor=actor)

    # -- reading analyses -----------------------------------------------------------------------

    def get_analysis(self, study_id: str, analysis_id: str) -> dict[str, Any]:
        rec = self.model.record(study_id, analysis_id)
        with self.model.lock:
            return self.model.analysis_doc(rec)

    def get_analyses(self, study_id: str, analysis_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Documents of several analyses of a study (e.g. search hits), built under one lock, to
        be serialized as they are (they share their sample dicts)."""
        samples: dict[str, dict[str, Any]] = {}  # hits share donors: build each sample once
        with self.model.lock:
            docs = self.model.analysis_docs(analysis_ids, samples)
        return [d for d in docs if d["studyId"] == study_id]

    def find_analysis(self, analysis_id: str) -> dict[str, Any]:
        """An analysis by id alone (the CLI does not make users repeat the study)."""
        return self.get_analysis(self.study_of(analysis_id), analysis_id)

    def study_of(self, analysis_id: str) -> str:
        return self.model.find(analysis_id).study_id

    def analysis_files(self, study_id: str, analysis_id: str) -> list[dict[str, Any]]:
        rec = self.model.record(study_id, analysis_id)
        with self.model.lock:
            return [self.model.file_json(f) for f in self.model.files_of(rec)]

    def list_analyses(self, study_id: str, states: Iterable[str] = ("PUBLISHED",)) -> list[dict]:
        states = check_states(states)
        self.model.check_study(study_id)
        with self.model.lock:
            return self.model.analysis_docs(self.model.iter_study(study_id, states))

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
        self.model.check_study(study_id)
        ids = self.model.page_ids(study_id, states, offset, limit)
        with self.model.lock:
            docs = self.model.analysis_docs(ids)
        return {
            "analyses": docs,
            "totalAnalyses": self.model.count(study_id, states),
            "currentTotalAnalyses": len(docs),
        }

    def count_analyses(self, study_id: str, states: Iterable[str] = STATES) -> int:
        return self.model.count(study_id, check_states(states))

    def search_ids(self, study_id: str, **params: str | None) -> list[str]:
        """Song's id search (read/idsearch.py): matching analysis ids, sorted."""
        self.model.check_study(study_id)
        return search_ids(self.model, study_id, params)

    def history(self, study_id: str, analysis_id: str) -> list[dict[str, Any]]:
        """The full state history, with actor and reason (Song shows only the first three)."""
        rec = self.model.record(study_id, analysis_id)
        return [
            {
                "initialState": h.initial_state,
                "updatedState": h.updated_state,
                "updatedAt": song_time(h.updated_at),
                "actor": h.actor,
                "reason": h.reason,
            }
            for h in rec.history
        ]

    def versions(self, study_id: str, analysis_id: str) -> list[dict[str, Any]]:
        """Every stored version of an analysis' dynamic data, oldest first.

        An analysis never updated has one version, the read model's (without the actor, which
        only the table keeps); the others are read from the analyses table, filtered while
        scanned (the id column is read whole: about a second at a million analyses)."""
        rec = self.model.record(study_id, analysis_id)
        if rec.version == 1:
            return [
                {
                    "version": 1,
                    "analysisType": {"name": rec.type_name, "version": rec.type_version},
                    "createdAt": song_time(rec.created_at),
                    "actor": None,
                    "data": json.loads(rec.data),
                }
            ]
        wanted = pc.field("analysis_id") == analysis_id
        rows = self.tables.dataset("analyses").to_table(filter=wanted).to_pylist()
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

    # -- lifecycle (write/lifecycle.py) ---------------------------------------------------------

    def publish(
        self,
        study_id: str,
        analysis_id: str,
        *,
        ignore_undefined_md5: bool = False,
        actor: str | None = None,
        reason: str | None = None,
    ) -> str:
        return self._lifecycle.change(
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
        return self._lifecycle.change(Transition(study_id, analysis_id, "unpublish", actor, reason))

    def suppress(
        self,
        study_id: str,
        analysis_id: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> str:
        return self._lifecycle.change(Transition(study_id, analysis_id, "suppress", actor, reason))

    def change_states(
        self, transitions: Sequence[Transition], *, storage_checked: bool = False
    ) -> list[str | SonglakeError]:
        """Apply many transitions with one history commit; each gets its message or its error."""
        return self._lifecycle.change_states(transitions, storage_checked=storage_checked)

    def check_publishable(self, t: Transition) -> None:
        """Song's publish checks (state, type version, files in storage with their size and md5);
        raises the first failure."""
        self._lifecycle.check_publishable(t)

    # -- updates (write/updates.py) -------------------------------------------------------------

    def update_analysis(
        self, study_id: str, analysis_id: str, body: Any, *, actor: str | None = None
    ) -> dict[str, Any]:
        """Replace an analysis' dynamic data (Song's PUT); keeps every earlier version."""
        self._updates.update_analysis(study_id, analysis_id, body, actor=actor)
        return self.get_analysis(study_id, analysis_id)

    def patch_analysis(
        self, study_id: str, analysis_id: str, patch: Any, *, actor: str | None = None
    ) -> dict[str, Any]:
        """Apply an RFC 7386 merge patch to (data + analysisType), validated like a PUT."""
        merged = self._updates.patched(study_id, analysis_id, patch)
        return self.update_analysis(study_id, analysis_id, merged, actor=actor)

    def update_file(
        self, study_id: str, object_id: str, body: Any, *, actor: str | None = None
    ) -> dict[str, Any]:
        """Song's file update: appends the file's next version unless nothing changes."""
        return self._updates.update_file(study_id, object_id, body, actor=actor)

    def delete_files(
        self, study_id: str, object_ids: Sequence[str], *, actor: str | None = None
    ) -> None:
        """Delete files of UNPUBLISHED analyses (tombstone rows); an analysis keeps >= 1 file."""
        self._updates.delete_files(study_id, object_ids, actor=actor)

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
            raise LegacyEntityNotFound(f"The entity with id '{object_id}' does not exist")
        return entities.legacy_entity(row)

    # -- portal search (read/search.py) ---------------------------------------------------------

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
            docs = self.model.analysis_docs(page.ids)
        return _page_answer("Analyses", docs, page.total, limit, offset)

    def overview(self, days: int = 30) -> dict[str, Any]:
        """Analyses per study and state, and registrations and state changes per day."""
        since = datetime.now(UTC) - timedelta(days=days - 1)
        counts, per_day = self.search_index().summary(since)
        return {"studies": counts, "days": per_day}

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
            files = [
                {**self.model.file_json(f), "analysisState": self.model.find(f.analysis_id).state}
                for f in (self.model.files.get(o) for o in page.ids)
                if f is not None
            ]
        return _page_answer("Files", files, page.total, limit, offset)

    # -- storage (store/) -----------------------------------------------------------------------

    def upload(self, analysis_id: str, directory: Path) -> list[dict[str, Any]]:
        """Copy an analysis' files from a folder into object storage, verified by size and md5."""
        rec = self.model.find(analysis_id)
        if rec.state != "UNPUBLISHED":
            raise IllegalFileUpdate(
                f"Files can be uploaded only while the analysis is UNPUBLISHED, not {rec.state}",
                analysis_id=analysis_id,
            )
        out = []
        for f in self._files_in(analysis_id, directory):
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
        """A score-client upload manifest of the analysis' files found in ``directory``."""
        files = self._files_in(analysis_id, directory)
        if not files:
            raise AnalysisMissingFiles(
                f"The analysis '{analysis_id}' has no files", analysis_id=analysis_id
            )
        return manifest_text(analysis_id, files, Path(directory))

    def _files_in(self, analysis_id: str, directory: Path) -> list[dict[str, Any]]:
        """The analysis' files, each checked to be in ``directory`` (FileNotFound otherwise)."""
        files = self.analysis_files(self.study_of(analysis_id), analysis_id)
        missing = [f["fileName"] for f in files if not (Path(directory) / f["fileName"]).is_file()]
        if missing:
            raise FileNotFound(
                f"Files missing in {directory}: {', '.join(missing)}", analysis_id=analysis_id
            )
        return files

    def registered_files(self, study_id: str | None = None) -> list[RegisteredFile]:
        """Every file of every committed analysis (of one study), sorted by objectId."""
        model = self.model
        if study_id is not None:
            model.check_study(study_id)
        out = []
        with model.lock:
            for f, state in model.files_with_state(study_id):
                out.append(
                    RegisteredFile(
                        f.object_id,
                        f.analysis_id,
                        f.study_id,
                        state,
                        f.file_name,
                        f.file_size,
                        f.file_md5sum,
                        f.source_path,
                    )
                )
        out.sort(key=lambda r: r.object_id)
        return out

    def verify_storage(
        self, study_id: str | None = None, *, rehash: bool = False, **progress: Any
    ) -> StorageReport:
        """``storage verify``: every registered file (of a study) against object storage."""
        files = self.registered_files(study_id)
        report = verify_storage(
            self.store, files, everything=study_id is None, rehash=rehash, **progress
        )
        if study_id is None:  # the whole store: the report the console shows until the next one
            saved = {"checkedAt": song_time(datetime.now(UTC)), "rehash": rehash}
            saved.update(report.to_dict())
            self.settings.state_dir.mkdir(parents=True, exist_ok=True)
            write_file(self.settings.state_dir / STORAGE_REPORT, json.dumps(saved).encode())
        return report

    def last_storage_report(self) -> dict[str, Any] | None:
        """The last whole-store ``storage verify`` report, as saved; None before the first."""
        try:
            return json.loads((self.settings.state_dir / STORAGE_REPORT).read_bytes())
        except FileNotFoundError:
            return None

    def sync_storage(self, study_id: str | None = None, **progress: Any) -> SyncReport:
        """``storage sync``: upload what verify finds missing or wrong, from its ingest path."""
        files = self.registered_files(study_id)
        return sync_storage(
            self.store, files, root=self.settings.root, everything=study_id is None, **progress
        )

    # -- export (read/export.py) ----------------------------------------------------------------

    def export_study(self, study_id: str) -> list[dict[str, Any]]:
        docs = self.export_docs(study_id=study_id)
        return group_by_study(docs) or [{"studyId": study_id, "payloads": []}]

    def export_analyses(self, analysis_ids: Iterable[str]) -> list[dict[str, Any]]:
        return group_by_study(self.export_docs(analysis_ids=analysis_ids))

    def export_docs(
        self, *, study_id: str | None = None, analysis_ids: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        if study_id is not None:
            return self.list_analyses(study_id, STATES)
        return [self.find_analysis(a) for a in analysis_ids]


def check_page(limit: int, offset: int) -> None:
    if limit < 0 or offset < 0:
        raise MalformedParameter("limit and offset must be >= 0", name="limit/offset")


def _page_answer(
    noun: str, items: list[dict[str, Any]], total: int, limit: int, offset: int
) -> dict[str, Any]:
    """Portal search's page: ``{analyses|files, totalX, currentTotalX, limit, offset}``."""
    return {
        noun.lower(): items,
        f"total{noun}": total,
        f"currentTotal{noun}": len(items),
        "limit": limit,
        "offset": offset,
    }
