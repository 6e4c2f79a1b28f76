"""The read model's queries: records, pages, counts and id search, as SQL over its file.

A mixin of ``ReadModel`` (which supplies ``con()``, the connection of the calling thread, and the
mapping views): everything here reads; nothing here writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import AnalysisNotFound, NotRelatedToStudy, SearchTermSyntax, StudyNotFound
from ..model import STATES
from .index import STATE_CODE, SUBMITTER_COLUMNS, from_micros
from .records import ENTITY_COLUMNS, ROW_TYPES, AnalysisRecord, FileRow, StateChange

#: SQLite error codes of a damaged file (as opposed to a busy one, or a bad query)
_BROKEN = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_LITERAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-: ")
A_COLUMNS = (
    "analysis_id, study, state, type_name, type_version, version, data, created_at, "
    "data_updated_at, state_updated_at"
)
#: entity table -> the columns of its row type, as a SELECT list
ENTITY_SELECT = {name: ", ".join(cols) for name, cols in ENTITY_COLUMNS.items()}
#: (table, column) -> the id column returned by regex_ids
SEARCH_COLUMNS = {
    "donors": ("donor_id", "submitter_donor_id", "study_id"),
    "specimens": ("specimen_id", "submitter_specimen_id", "study_id"),
    "samples": ("sample_id", "submitter_sample_id", "study_id"),
    "files": ("object_id", "analysis_id", "study_id"),
}


COMPOSITE_SQL = (
    "SELECT sa.sample_id, sa.specimen_id, sa.study_id, sa.submitter_sample_id, sa.sample_type, "
    "sa.matched_normal_submitter_sample_id, sa.info, "
    "sp.specimen_id, sp.donor_id, sp.study_id, sp.submitter_specimen_id, "
    "sp.tumour_normal_designation, sp.specimen_tissue_source, sp.specimen_type, sp.info, "
    "d.donor_id, d.study_id, d.submitter_donor_id, d.gender, d.info "
    "FROM samples sa JOIN specimens sp ON sp.specimen_id = sa.specimen_id "
    "JOIN donors d ON d.donor_id = sp.donor_id"
)
HISTORY_COLUMNS = "analysis_id, event_id, initial_state, updated_state, updated_at, actor, reason"


def history_row(row: tuple[Any, ...]) -> StateChange:
    """A history row (``HISTORY_COLUMNS``) as a StateChange."""
    _, event, initial, updated, at, actor, reason = row
    return StateChange(event, initial, updated, from_micros(at), actor, reason)  # type: ignore[arg-type]


SAMPLES_OF_SQL = "SELECT sample_id FROM links WHERE analysis_id = ?"


class Reads:
    """Reading the file: records by id, their history, samples and files; pages and counts."""

    analyses: Any  # views.Analyses, views.Studies, views.Entities (set by ReadModel)
    studies: Any
    files: Any
    _codes: dict[int, str]
    _known_studies: set[str]

    def con(self) -> Any:
        raise NotImplementedError

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self.con().execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _BROKEN:
                raise
            self.corrupt(exc)  # rebuilt from the history tables: ask again
            return self.con().execute(sql, args).fetchall()

    def corrupt(self, exc: Exception) -> None:
        raise NotImplementedError

    def study_of_code(self, code: int) -> str:
        found = self._codes.get(code)
        if found is None:
            self._codes = dict(self.query("SELECT code, study_id FROM studies"))
            found = self._codes[code]
        return found

    def study_code(self, study_id: str) -> int | None:
        row = self.query("SELECT code FROM studies WHERE study_id = ?", (study_id,))
        return row[0][0] if row else None

    def make_record(self, row: tuple[Any, ...]) -> AnalysisRecord:
        aid, study, state, tname, tversion, version, data, created, data_at, state_at = row
        return AnalysisRecord(
            self,
            aid,
            self.study_of_code(study),
            STATES[state],
            tname,
            tversion,
            version,
            data,
            from_micros(created),  # type: ignore[arg-type]
            from_micros(data_at),  # type: ignore[arg-type]
            from_micros(state_at),
        )

    def history_of(self, analysis_id: str) -> list[StateChange]:
        return [
            history_row(row)
            for row in self.query(
                f"SELECT {HISTORY_COLUMNS} FROM history WHERE analysis_id = ? "
                "ORDER BY updated_at, event_id",
                (analysis_id,),
            )
        ]

    def sample_ids_of(self, analysis_id: str) -> list[str]:
        return [r[0] for r in self.query(SAMPLES_OF_SQL, (analysis_id,))]

    def object_ids_of(self, analysis_id: str) -> list[str]:
        return [
            r[0]
            for r in self.query(
                "SELECT object_id FROM files WHERE analysis_id = ? ORDER BY file_name",
                (analysis_id,),
            )
        ]

    def check_study(self, study_id: str) -> None:
        """StudyNotFound unless the study exists (a study, once created, always exists: those
        found are remembered)."""
        if study_id in self._known_studies:
            return
        if study_id not in self.studies:
            raise StudyNotFound(study_id=study_id)
        self._known_studies.add(study_id)

    def rows_by_ids(self, name: str, ids: Iterable[str]) -> dict[str, Any]:
        """Donors, specimens, samples or files by id, a query per 500 ids."""
        key = SEARCH_COLUMNS[name][0]
        make = ROW_TYPES[name]._make
        wanted = list(ids)
        out = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.query(
                f"SELECT {ENTITY_SELECT[name]} FROM {name} WHERE {key} IN ({marks})", tuple(chunk)
            ):
                out[row[0]] = make(row)
        return out

    def of_study(self, analysis_ids: Iterable[str], study_id: str) -> list[str]:
        """Those of the analyses that belong to the study, sorted."""
        code = self.study_code(study_id)
        wanted = list(analysis_ids)
        out: list[str] = []
        for i in range(0, len(wanted), 500):
            chunk = tuple(wanted[i : i + 500])
            marks = ",".join("?" * len(chunk))
            out.extend(
                r[0]
                for r in self.query(
                    "SELECT analysis_id FROM analyses WHERE study = ? "
                    f"AND analysis_id IN ({marks})",
                    (code, *chunk),
                )
            )
        return sorted(out)

    def registered_md5s(self, md5s: Iterable[str]) -> set[str]:
        """Which of these md5s a current file has."""
        wanted = list(md5s)
        out: set[str] = set()
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out.update(
                r[0]
                for r in self.query(
                    f"SELECT DISTINCT file_md5sum FROM files WHERE file_md5sum IN ({marks})",
                    tuple(chunk),
                )
            )
        return out

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
        if rec._object_ids is None and getattr(rec, "_source", None) is self:
            rows = self.query(
                f"SELECT {ENTITY_SELECT['files']} FROM files WHERE analysis_id = ? "
                "ORDER BY file_name",
                (rec.analysis_id,),
            )
            return [FileRow._make(r) for r in rows]
        files = (self.files.get(o) for o in rec.object_ids)
        return sorted((f for f in files if f is not None), key=lambda f: f.file_name)

    # -- pages and counts -----------------------------------------------------------------------

    def count(self, study_id: str, states: Iterable[str] = STATES) -> int:
        code = self.study_code(study_id)
        if code is None:
            return 0
        wanted = sorted({STATE_CODE[s] for s in states})
        marks = ",".join("?" * len(wanted))
        row = self.query(
            f"SELECT coalesce(sum(n), 0) FROM counts WHERE study = ? AND state IN ({marks})",
            (code, *wanted),
        )
        return int(row[0][0])

    def page_ids(self, study_id: str, states: Iterable[str], offset: int, limit: int) -> list[str]:
        """Analysis ids of a study in the given states, sorted ascending: the bucket counts say
        in which id prefix the page starts, an index range gives the rest."""
        code = self.study_code(study_id)
        if code is None:
            return []
        wanted = sorted({STATE_CODE[s] for s in states})
        marks = ",".join("?" * len(wanted))
        passed = 0
        start = ""
        for bucket, n in self.query(
            f"SELECT bucket, sum(n) FROM buckets WHERE study = ? AND state IN ({marks}) "
            "GROUP BY bucket ORDER BY bucket",
            (code, *wanted),
        ):
            if passed + n > offset:
                start = bucket
                break
            passed += n
        else:
            return []
        skip = offset - passed
        if len(wanted) == len(STATES):  # the study's index range
            sql = (
                "SELECT analysis_id FROM by_study WHERE study = ? AND analysis_id >= ? "
                "ORDER BY analysis_id LIMIT ? OFFSET ?"
            )
            args: tuple[Any, ...] = (code, start, limit, skip)
        elif len(wanted) == 1:  # the range of one (study, state)
            sql = (
                "SELECT analysis_id FROM ord WHERE study = ? AND state = ? AND analysis_id >= ? "
                "ORDER BY analysis_id LIMIT ? OFFSET ?"
            )
            args = (code, wanted[0], start, limit, skip)
        else:  # the study's range, in order, skipping the other state (no sort)
            sql = (
                f"SELECT analysis_id FROM by_study WHERE study = ? AND state IN ({marks}) "
                "AND analysis_id >= ? ORDER BY analysis_id LIMIT ? OFFSET ?"
            )
            args = (code, *wanted, start, limit, skip)
        return [r[0] for r in self.query(sql, args)]

    def iter_study(self, study_id: str, states: Iterable[str] = STATES) -> Iterator[str]:
        code = self.study_code(study_id)
        if code is None:
            return
        wanted = sorted({STATE_CODE[s] for s in states})
        marks = ",".join("?" * len(wanted))
        rows = self.query(
            f"SELECT analysis_id FROM by_study WHERE study = ? AND state IN ({marks}) "
            "ORDER BY analysis_id",
            (code, *wanted),
        )
        for (aid,) in rows:
            yield aid

    # -- id search --------------------------------------------------------------------------------

    def regex_ids(self, name: str, column: str, pattern: str, study_id: str) -> set[str]:
        """Ids in the study whose `column` matches pattern (case-insensitive, unanchored)."""
        id_col = SEARCH_COLUMNS[name][0]
        literal = set(pattern) <= _LITERAL_CHARS
        if literal and len(pattern) >= 3 and SUBMITTER_COLUMNS.get(name) == column:
            # a trigram index lookup, then the exact test on its (few) candidates
            rows = self.query(
                f"SELECT {id_col}, {column} FROM {name} WHERE rowid IN "
                f"(SELECT rowid FROM {name}_fts WHERE {column} LIKE ?) AND study_id = ?",
                (f"%{pattern}%", study_id),
            )
            wanted = pattern.lower()
            return {i for i, v in rows if v is not None and wanted in v.lower()}
        if literal and column == id_col and len(pattern) == 36:
            rows = self.query(
                f"SELECT {id_col} FROM {name} WHERE {id_col} = ? AND study_id = ?",
                (pattern.lower(), study_id),
            )
            if rows:
                return {rows[0][0]}
        rows = self.query(f"SELECT {id_col}, {column} FROM {name} WHERE study_id = ?", (study_id,))
        if not rows:
            return set()
        ids = pa.array([r[0] for r in rows], pa.string())
        values = pa.array([r[1] for r in rows], pa.string())
        try:
            if literal:
                mask = pc.match_substring(pc.utf8_lower(values), pattern.lower())
            else:
                mask = pc.match_substring_regex(values, pattern, ignore_case=True)
        except pa.ArrowInvalid as exc:
            raise SearchTermSyntax(
                f"The search term '{pattern}' is not a valid regular expression: {exc}"
            ) from exc
        return set(ids.filter(mask).to_pylist())

    # -- whole scans (export, storage checks, the portal index's first build) --------------------

    def files_with_state(self, study_id: str | None) -> list[tuple[FileRow, str]]:
        """Every current file (of one study) with its analysis' state."""
        sql = (
            f"SELECT {', '.join('f.' + c for c in ENTITY_COLUMNS['files'])}, "
            "a.state FROM files f JOIN analyses a USING (analysis_id)"
        )
        args: tuple[Any, ...] = ()
        if study_id is not None:
            sql += " WHERE f.study_id = ?"
            args = (study_id,)
        return [(FileRow._make(r[:12]), STATES[r[12]]) for r in self.query(sql, args)]
