"""Song's documents from the read model's rows: analyses, composite samples, donors, files.

A mixin of ``ReadModel``: documents are assembled from a few primary-key and index lookups (the
samples of an analysis with their specimen and donor in one join).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import orjson

from ..model import song_time
from .queries import A_COLUMNS, COMPOSITE_SQL, ENTITY_SELECT, HISTORY_COLUMNS, Reads, history_row
from .records import AnalysisRecord, DonorRow, FileRow, SampleRow, SpecimenRow, StateChange


class Documents(Reads):
    """Song's JSON for the rows of the file."""

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
        rows = self.query(COMPOSITE_SQL + " WHERE sa.sample_id = ?", (sample_id,))
        if not rows:
            raise KeyError(sample_id)
        return self._composite_doc(rows[0])

    def _composite_doc(self, row: tuple[Any, ...]) -> dict[str, Any]:
        sample = SampleRow._make(row[:7])
        specimen = SpecimenRow._make(row[7:15])
        donor = DonorRow._make(row[15:20])
        out = self.sample_json(sample)
        out["specimen"] = self.specimen_json(specimen)
        out["donor"] = self.donor_json(donor)
        return out

    def _samples_docs(
        self, rec: AnalysisRecord, memo: dict[str, dict[str, Any]] | None
    ) -> list[dict[str, Any]]:
        """The composite samples of an analysis, sorted by submitterSampleId."""
        if rec._sample_ids is None and getattr(rec, "_source", None) is self:
            rows = self.query(
                COMPOSITE_SQL
                + " JOIN links l ON l.sample_id = sa.sample_id WHERE l.analysis_id = ?"
                " ORDER BY sa.submitter_sample_id",
                (rec.analysis_id,),
            )
            if memo is None:
                return [self._composite_doc(r) for r in rows]
            out = []
            for r in rows:
                found = memo.get(r[0])
                if found is None:
                    found = memo[r[0]] = self._composite_doc(r)
                out.append(found)
            return out
        docs = []
        for sid in rec.sample_ids:
            found = memo.get(sid) if memo is not None else None
            if found is None:
                found = self.composite_sample(sid)
                if memo is not None:
                    memo[sid] = found
            docs.append(found)
        docs.sort(key=lambda d: d["submitterSampleId"])
        return docs

    def analysis_docs(
        self, analysis_ids: Iterable[str], samples: dict[str, dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """The documents of several analyses (those that exist, in the order asked), read with
        four queries per 500 analyses rather than four per analysis (pages, lists, search)."""
        wanted = list(analysis_ids)
        out = []
        for i in range(0, len(wanted), 500):
            chunk = tuple(wanted[i : i + 500])
            where = f"analysis_id IN ({','.join('?' * len(chunk))})"
            records = {
                r[0]: self.make_record(r)
                for r in self.query(f"SELECT {A_COLUMNS} FROM analyses WHERE {where}", chunk)
            }
            history: dict[str, list[StateChange]] = defaultdict(list)
            for row in self.query(
                f"SELECT {HISTORY_COLUMNS} FROM history WHERE {where} "
                "ORDER BY analysis_id, updated_at, event_id",
                chunk,
            ):
                history[row[0]].append(history_row(row))
            sample_docs: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in self.query(
                "SELECT l.analysis_id, "
                + COMPOSITE_SQL.removeprefix("SELECT ")
                + f" JOIN links l ON l.sample_id = sa.sample_id WHERE l.{where}"
                " ORDER BY l.analysis_id, sa.submitter_sample_id",
                chunk,
            ):
                if samples is None:  # documents the caller may change: each its own dicts
                    sample_docs[row[0]].append(self._composite_doc(row[1:]))
                    continue
                found = samples.get(row[1])
                if found is None:
                    found = samples[row[1]] = self._composite_doc(row[1:])
                sample_docs[row[0]].append(found)
            files: dict[str, list[FileRow]] = defaultdict(list)
            for row in self.query(
                f"SELECT {ENTITY_SELECT['files']} FROM files WHERE {where} "
                "ORDER BY analysis_id, file_name",
                chunk,
            ):
                files[row[1]].append(FileRow._make(row))
            for aid in chunk:
                rec = records.get(aid)
                if rec is not None:
                    rec._history = history.get(aid, [])  # keeps the stored state and times
                    out.append(self._document(rec, sample_docs.get(aid, []), files.get(aid, [])))
        return out

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
        return self._document(
            rec, self._samples_docs(rec, samples), self.files_of(rec) if files is None else files
        )

    def _document(
        self, rec: AnalysisRecord, samples: list[dict[str, Any]], files: list[FileRow]
    ) -> dict[str, Any]:
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
            "samples": samples,
            "files": [self.file_json(f) for f in files],
        }
        for key, value in _loads(rec.data).items():
            doc.setdefault(key, value)
        return doc


def _loads(text: str) -> Any:
    """A stored JSON document: orjson (4x faster), the standard library for what it refuses
    (integers beyond 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
