"""The in-process read model: Song's documents served from indexes, kept in step with Delta.

Point reads (an analysis, a file, a donor by id) are dictionary lookups, never table scans
(reference/limits.md B7: a Parquet query per request is ~300x slower than PostgreSQL). Pages sorted
by analysisId come from sorted lists per study and state; counts by state are counters; regex id
search runs RE2 over Arrow columns. The model is fed two ways: rows this process commits are applied
directly after their commit; rows other processes commit are read from the Delta log since the last
version seen (only the files a commit added with ``dataChange``, so compaction is not re-read).
Applying is idempotent, so reading a commit twice is harmless.

Visibility (DESIGN invariant 1): donors, specimens, samples, files and sample links become visible
only once the analysis that wrote them is committed; until then they wait in ``_pending``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from sortedcontainers import SortedList

from ..errors import AnalysisNotFound, NotRelatedToStudy, StudyNotFound
from ..model import STATES, song_time
from ..tables import TableStore
from .bulkload import bulk_load
from .indexes import Indexes
from .records import (
    ENTITY_COLUMNS,
    INTERNED,
    MODEL_TABLES,
    ROW_TYPES,
    AnalysisRecord,
    DonorRow,
    FileRow,
    SampleRow,
    SpecimenRow,
    StateChange,
    intern,
)


class ReadModel(Indexes):
    """Indexes over the committed catalog, for one process."""

    def __init__(self, tables: TableStore) -> None:
        super().__init__()
        self.tables = tables
        self._pending: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self._seen: dict[str, int] = {}
        self.loaded_at_versions: dict[str, int] = {}
        # called with (table, row) for every row applied after load (search.py's index)
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    # -- loading and refreshing -----------------------------------------------------------------

    def load(self) -> None:
        """Read every table once (the analyses table first, so its children are complete)."""
        with self.lock:
            tables = {}
            for name in MODEL_TABLES:
                version = self.tables.latest(name).version()
                tables[name] = self.tables.dataset(name, version).to_table()
                self._seen[name] = version
            bulk_load(self, tables, self.apply_table)
            for name in self._SEARCH_COLUMNS:
                self.search_table(name)  # concatenate now, not on the first search
            self.loaded_at_versions = dict(self._seen)

    def refresh(self) -> bool:
        """Apply what other processes committed since the last version seen; True if anything."""
        changed = False
        with self.lock:
            for name in MODEL_TABLES:
                current = self.tables.latest(name).version()
                seen = self._seen.get(name, -1)
                if current == seen:
                    continue
                changed = True
                paths = self._added_files(name, seen, current)
                if paths is None:
                    self.apply_table(name, self.tables.dataset(name, current).to_table())
                else:
                    fs, base = self.tables.dir.filesystem()
                    for path in paths:
                        self.apply_table(name, pq.read_table(f"{base}/{path}", filesystem=fs))
                self._seen[name] = current
        return changed

    def _added_files(self, name: str, after: int, upto: int) -> list[str] | None:
        """Data files added (dataChange) by commits after..upto, as paths under the tables'
        location; None when the log was cleaned."""
        out = []
        for version in range(after + 1, upto + 1):
            try:
                log = self.tables.dir.read_bytes(name, "_delta_log", f"{version:020d}.json")
            except FileNotFoundError:
                return None
            for line in filter(None, log.split(b"\n")):  # not str.splitlines(): U+2028
                action = json.loads(line)
                add = action.get("add")
                if add and add.get("dataChange", True):
                    out.append(f"{name}/{add['path']}")
        return out

    def mark_seen(self, name: str, version: int | None) -> None:
        """Our own commit of `version` was applied directly; skip re-reading it if contiguous."""
        if version is not None and self._seen.get(name) == version - 1:
            self._seen[name] = version

    # -- applying rows --------------------------------------------------------------------------

    def apply_table(self, name: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        columns = table.column_names
        values = [table.column(c).to_pylist() for c in columns]
        self.apply_rows(
            name, (dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True))
        )

    def apply_rows(self, name: str, rows: Iterable[dict[str, Any]]) -> None:
        with self.lock:
            handler = getattr(self, f"_apply_{name}")
            new_search: list[dict[str, Any]] = []
            listeners = self.listeners
            for row in rows:
                if handler(row) and name in ("donors", "specimens", "samples", "files"):
                    new_search.append(row)
                for listener in listeners:
                    listener(name, row)
            if new_search:
                self.add_search_rows(name, new_search)
            if name == "analyses":
                self._release_pending()

    def _apply_studies(self, row: dict[str, Any]) -> bool:
        self.studies.setdefault(row["study_id"], row)
        return True

    def _apply_analyses(self, row: dict[str, Any]) -> bool:
        rec = self.analyses.get(row["analysis_id"])
        if rec is None:
            if row["version"] != 1:
                self._pending[row["analysis_id"]].append(("analyses", row))
                return False
            rec = AnalysisRecord(row)
            self.analyses[rec.analysis_id] = rec
            self.by_study[rec.study_id].add(rec.analysis_id)
            self.by_study_state[(rec.study_id, "UNPUBLISHED")].add(rec.analysis_id)
            return True
        if row["version"] > rec.version:
            rec.version = row["version"]
            rec.data = row["data"]
            rec.type_name = intern(row["analysis_type_name"])
            rec.type_version = row["analysis_type_version"]
            rec.data_updated_at = row["created_at"]
        return True

    def _entity(self, name: str, row: dict[str, Any]) -> Any:
        return ROW_TYPES[name]._make(
            intern(row[c]) if c in INTERNED and row[c] is not None else row[c]
            for c in ENTITY_COLUMNS[name]
        )

    def _visible(self, name: str, row: dict[str, Any]) -> bool:
        if row["analysis_id"] in self.analyses:
            return True
        self._pending[row["analysis_id"]].append((name, row))
        return False

    def _apply_donors(self, row: dict[str, Any]) -> bool:
        if row["donor_id"] in self.donors or not self._visible("donors", row):
            return False
        self.donors[row["donor_id"]] = self._entity("donors", row)
        return True

    def _apply_specimens(self, row: dict[str, Any]) -> bool:
        if row["specimen_id"] in self.specimens or not self._visible("specimens", row):
            return False
        self.specimens[row["specimen_id"]] = self._entity("specimens", row)
        self.donor_specimens[row["donor_id"]].append(row["specimen_id"])
        return True

    def _apply_samples(self, row: dict[str, Any]) -> bool:
        if row["sample_id"] in self.samples or not self._visible("samples", row):
            return False
        self.samples[row["sample_id"]] = self._entity("samples", row)
        self.specimen_samples[row["specimen_id"]].append(row["sample_id"])
        return True

    def _apply_files(self, row: dict[str, Any]) -> bool:
        if not self._visible("files", row):
            return False
        old = self.files.get(row["object_id"])
        if old is not None and old.version >= row["version"]:
            return False
        if self.deleted_files.get(row["object_id"], 0) >= row["version"]:
            return False
        if row["file_name"] is None:  # a tombstone: DELETE /studies/{s}/files/{id}
            self.deleted_files[row["object_id"]] = row["version"]
            if old is not None:
                del self.files[row["object_id"]]
                self.md5s[old.file_md5sum] -= 1
                ids = self.analyses[row["analysis_id"]].object_ids
                if row["object_id"] in ids:
                    ids.remove(row["object_id"])
            return False
        entry = self._entity("files", row)
        self.files[row["object_id"]] = entry
        if old is None:
            self.analyses[row["analysis_id"]].object_ids.append(row["object_id"])
        else:
            self.md5s[old.file_md5sum] -= 1
        self.md5s[entry.file_md5sum] += 1
        return old is None

    def _apply_analysis_samples(self, row: dict[str, Any]) -> bool:
        if not self._visible("analysis_samples", row):
            return False
        rec = self.analyses[row["analysis_id"]]
        if row["sample_id"] not in rec.sample_ids:
            rec.sample_ids.append(row["sample_id"])
            self.sample_analyses[row["sample_id"]].append(rec.analysis_id)
        return True

    def _apply_analysis_state_history(self, row: dict[str, Any]) -> bool:
        if not self._visible("analysis_state_history", row):
            return False
        rec = self.analyses[row["analysis_id"]]
        if any(h.event_id == row["event_id"] for h in rec.history):
            return False
        before = rec.state
        entry = StateChange(
            row["event_id"],
            row["initial_state"],
            row["updated_state"],
            row["updated_at"],
            row["actor"],
            row["reason"],
        )
        rec.history.append(entry)
        if len(rec.history) > 1 and rec.history[-2].updated_at > entry.updated_at:
            rec.history.sort(key=lambda h: h.updated_at)
        after = rec.state
        if before != after:
            self.by_study_state[(rec.study_id, before)].discard(rec.analysis_id)
            self.by_study_state[(rec.study_id, after)].add(rec.analysis_id)
        return True

    def _release_pending(self) -> None:
        # applying a pending analyses row re-enters here, so pop defensively
        ready = [aid for aid in self._pending if aid in self.analyses]
        for aid in ready:
            for name, row in self._pending.pop(aid, ()):
                self.apply_rows(name, [row])

    def forget_pending(self, analysis_ids: set[str]) -> None:
        with self.lock:
            for aid in analysis_ids:
                self._pending.pop(aid, None)

    @property
    def pending_rows(self) -> int:
        return sum(len(v) for v in self._pending.values())

    # -- lookups that answer with Song's errors ------------------------------------------------

    def check_study(self, study_id: str) -> None:
        """StudyNotFound unless the study exists."""
        if study_id not in self.studies:
            raise StudyNotFound(study_id=study_id)

    def find(self, analysis_id: str) -> AnalysisRecord:
        """An analysis by id alone, or AnalysisNotFound."""
        rec = self.analyses.get(analysis_id)
        if rec is None:
            raise AnalysisNotFound(analysis_id=analysis_id)
        return rec

    def record(self, study_id: str, analysis_id: str) -> AnalysisRecord:
        """An analysis of a study, checked in Song's order: the analysis exists (else the study
        must, then AnalysisNotFound), then it belongs to the study (NotRelatedToStudy)."""
        rec = self.analyses.get(analysis_id)
        if rec is None or rec.study_id != study_id:
            self.check_study(study_id)
        if rec is None:
            raise AnalysisNotFound(analysis_id=analysis_id)
        if rec.study_id != study_id:
            raise NotRelatedToStudy(
                f"The analysis '{analysis_id}' is not related to the study '{study_id}'",
                study_id=study_id,
                analysis_id=analysis_id,
            )
        return rec

    def files_of(self, rec: AnalysisRecord) -> list[FileRow]:
        """The current file rows of an analysis, sorted by file name (Song's order)."""
        return sorted((self.files[o] for o in rec.object_ids), key=lambda f: f.file_name)

    # -- documents ------------------------------------------------------------------------------

    def donor_json(self, d: DonorRow) -> dict[str, Any]:
        return {
            "donorId": d.donor_id,
            "studyId": d.study_id,
            "submitterDonorId": d.submitter_donor_id,
            "gender": d.gender,
            "info": _loads(d.info) if d.info else {},
        }

    def specimen_json(self, s: SpecimenRow) -> dict[str, Any]:
        return {
            "specimenId": s.specimen_id,
            "donorId": s.donor_id,
            "submitterSpecimenId": s.submitter_specimen_id,
            "tumourNormalDesignation": s.tumour_normal_designation,
            "specimenTissueSource": s.specimen_tissue_source,
            "specimenType": s.specimen_type,
            "info": _loads(s.info) if s.info else {},
        }

    def sample_json(self, s: SampleRow) -> dict[str, Any]:
        return {
            "sampleId": s.sample_id,
            "specimenId": s.specimen_id,
            "submitterSampleId": s.submitter_sample_id,
            "sampleType": s.sample_type,
            "matchedNormalSubmitterSampleId": s.matched_normal_submitter_sample_id,
            "info": _loads(s.info) if s.info else {},
        }

    def file_json(self, f: FileRow) -> dict[str, Any]:
        return {
            "objectId": f.object_id,
            "studyId": f.study_id,
            "analysisId": f.analysis_id,
            "fileName": f.file_name,
            "fileSize": f.file_size,
            "fileType": f.file_type,
            "fileMd5sum": f.file_md5sum,
            "fileAccess": f.file_access,
            "dataType": f.data_type,
            "info": _loads(f.info) if f.info else {},
        }

    def composite_sample(self, sample_id: str) -> dict[str, Any]:
        sample = self.samples[sample_id]
        specimen = self.specimens[sample.specimen_id]
        donor = self.donors[specimen.donor_id]
        out = self.sample_json(sample)
        out["specimen"] = self.specimen_json(specimen)
        out["donor"] = self.donor_json(donor)
        return out

    def _composite(self, sample_id: str, memo: dict[str, dict[str, Any]] | None) -> dict:
        if memo is None:
            return self.composite_sample(sample_id)
        found = memo.get(sample_id)
        if found is None:
            found = memo[sample_id] = self.composite_sample(sample_id)
        return found

    def analysis_doc(
        self,
        rec: AnalysisRecord,
        samples: dict[str, dict[str, Any]] | None = None,
        files: list[FileRow] | None = None,
    ) -> dict[str, Any]:
        """The analysis exactly as Song's GET /studies/{s}/analysis/{id} returns it.

        `samples` memoizes composite samples across the documents of one answer (search hits
        share donors); the documents then share those dicts, so only pass it for output that is
        serialized as is. `files` replaces the current file rows (an earlier version of the
        analysis, as the events send it)."""
        first, last = rec.published_times()
        doc: dict[str, Any] = {
            "analysisId": rec.analysis_id,
            "studyId": rec.study_id,
            "analysisState": rec.state,
            "analysisType": {"name": rec.type_name, "version": rec.type_version},
            "createdAt": song_time(rec.created_at),
            "updatedAt": song_time(rec.updated_at),
            "firstPublishedAt": song_time(first),
            "publishedAt": song_time(last),
            "analysisStateHistory": [
                {
                    "initialState": h.initial_state,
                    "updatedState": h.updated_state,
                    "updatedAt": song_time(h.updated_at),
                }
                for h in rec.history
            ],
            # a stable order whatever order the rows were read in (live, reopened, compacted)
            "samples": [
                self._composite(s, samples)
                for s in sorted(rec.sample_ids, key=lambda s: self.samples[s].submitter_sample_id)
            ],
            "files": [self.file_json(f) for f in (self.files_of(rec) if files is None else files)],
        }
        for key, value in _loads(rec.data).items():
            doc.setdefault(key, value)
        return doc

    # -- pages and counts -----------------------------------------------------------------------

    def count(self, study_id: str, states: Iterable[str] = STATES) -> int:
        with self.lock:
            return sum(len(self.by_study_state.get((study_id, s), ())) for s in set(states))

    def page_ids(self, study_id: str, states: Iterable[str], offset: int, limit: int) -> list[str]:
        """Analysis ids of a study in the given states, sorted ascending, sliced without a scan."""
        wanted = set(states)
        with self.lock:
            if wanted >= set(STATES):
                return list(
                    self.by_study.get(study_id, SortedList()).islice(offset, offset + limit)
                )
            if len(wanted) == 1:
                lst = self.by_study_state.get((study_id, next(iter(wanted))), SortedList())
                return list(lst.islice(offset, offset + limit))
            return self._page_subset(study_id, wanted, offset, limit)

    def _page_subset(self, study_id: str, wanted: set[str], offset: int, limit: int) -> list[str]:
        # rank among wanted states = rank among all - rank among the excluded states; binary search
        every = self.by_study.get(study_id, SortedList())
        excluded = [
            self.by_study_state.get((study_id, s), SortedList()) for s in STATES if s not in wanted
        ]
        lo, hi = 0, len(every)
        while lo < hi:
            mid = (lo + hi) // 2
            key = every[mid]
            rank = mid - sum(lst.bisect_left(key) for lst in excluded)
            if rank < offset:
                lo = mid + 1
            else:
                hi = mid
        out = []
        for aid in every.islice(lo):
            if self.analyses[aid].state in wanted:
                out.append(aid)
                if len(out) >= limit:
                    break
        return out

    def iter_study(self, study_id: str, states: Iterable[str] = STATES) -> Iterator[str]:
        wanted = set(states)
        with self.lock:
            ids = list(self.by_study.get(study_id, ()))
        for aid in ids:
            if self.analyses[aid].state in wanted:
                yield aid


def _loads(text: str) -> Any:
    """A stored JSON document: orjson (4x faster), the standard library for what it refuses
    (integers beyond 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
