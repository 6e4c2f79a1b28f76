"""The read model's indexes: plain dictionaries and sorted lists, and Arrow columns for id search.

Filled in bulk by ``bulkload`` when a catalog opens and row by row by ``ReadModel`` afterwards;
neither knows the other, both know these containers.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sortedcontainers import SortedList

from ..errors import SearchTermSyntax
from .records import AnalysisRecord, DonorRow, FileRow, SampleRow, SpecimenRow

_LITERAL = re.compile(r"[A-Za-z0-9_\-: ]*")  # no regex syntax at all


class Indexes:
    """Indexes over the committed catalog, for one process (see ReadModel for how they fill)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.studies: dict[str, dict[str, Any]] = {}
        self.analyses: dict[str, AnalysisRecord] = {}
        self.donors: dict[str, DonorRow] = {}
        self.specimens: dict[str, SpecimenRow] = {}
        self.samples: dict[str, SampleRow] = {}
        self.files: dict[str, FileRow] = {}
        self.md5s: Counter[str] = Counter()
        self.sample_analyses: dict[str, list[str]] = defaultdict(list)
        # reverse links for id search: donor -> specimens, specimen -> samples
        self.donor_specimens: dict[str, list[str]] = defaultdict(list)
        self.specimen_samples: dict[str, list[str]] = defaultdict(list)
        self.by_study: dict[str, SortedList] = defaultdict(SortedList)
        self.by_study_state: dict[tuple[str, str], SortedList] = defaultdict(SortedList)
        # objectId -> version of the files row that deleted it (a tombstone: file_name NULL)
        self.deleted_files: dict[str, int] = {}
        # Arrow columns for regex id search, appended per batch and concatenated lazily.
        self._search_chunks: dict[str, list[pa.Table]] = defaultdict(list)
        self._search_tables: dict[str, pa.Table] = {}
        self._search_cache: dict[tuple[str, str], tuple[pa.Table, pa.Table, dict]] = {}

    # -- regex search over Arrow columns ----------------------------------------------------------

    _SEARCH_COLUMNS = {
        "donors": ("donor_id", "submitter_donor_id", "study_id"),
        "specimens": ("specimen_id", "submitter_specimen_id", "study_id"),
        "samples": ("sample_id", "submitter_sample_id", "study_id"),
        "files": ("object_id", "analysis_id", "study_id"),
    }

    def add_search_table(self, name: str, table: pa.Table) -> None:
        cols = self._SEARCH_COLUMNS[name]
        self._search_chunks[name].append(
            table.select(list(cols)).cast(pa.schema([(c, pa.string()) for c in cols]))
        )

    def add_search_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        cols = self._SEARCH_COLUMNS[name]
        self._search_chunks[name].append(
            pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in cols})
        )

    def search_table(self, name: str) -> pa.Table:
        chunks = self._search_chunks[name]
        if len(chunks) != 1 or name not in self._search_tables:
            table = (
                pa.concat_tables(chunks)
                if chunks
                else pa.table({c: pa.array([], pa.string()) for c in self._SEARCH_COLUMNS[name]})
            )
            table = table.combine_chunks()
            self._search_chunks[name] = [table]
            self._search_tables[name] = table
        return self._search_tables[name]

    def regex_ids(self, name: str, column: str, pattern: str, study_id: str) -> set[str]:
        """Ids in the study whose `column` matches pattern (case-insensitive, unanchored)."""
        with self.lock:
            table = self.search_table(name)
        if table.num_rows == 0:
            return set()
        study, lowered = self._study_search(name, table, study_id)
        try:
            if _LITERAL.fullmatch(pattern):
                # no regex syntax: a plain substring test on a lower-cased copy, ~3x faster
                if column not in lowered:
                    lowered[column] = pc.utf8_lower(study.column(column))
                mask = pc.match_substring(lowered[column], pattern.lower())
            else:
                mask = pc.match_substring_regex(study.column(column), pattern, ignore_case=True)
        except pa.ArrowInvalid as exc:
            raise SearchTermSyntax(
                f"The search term '{pattern}' is not a valid regular expression: {exc}"
            ) from exc
        id_col = self._SEARCH_COLUMNS[name][0]
        return set(study.column(id_col).filter(mask).to_pylist())

    def _study_search(self, name: str, table: pa.Table, study_id: str) -> tuple[pa.Table, dict]:
        """The search rows of one study (and their lower-cased columns), cached until a write."""
        key = (name, study_id)
        cached = self._search_cache.get(key)
        if cached is None or cached[0] is not table:
            study = table.filter(pc.equal(table.column("study_id"), study_id))
            cached = self._search_cache[key] = (table, study, {})
        return cached[1], cached[2]
