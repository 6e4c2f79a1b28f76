"""The rows the read model holds: one named type per entity, and the record of an analysis.

Entity rows are tuples (NamedTuples: no per-row dict, the memory of a plain tuple at millions of
rows) whose fields are the columns of their Delta table that the model keeps.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

intern = sys.intern
#: the tables the model is built from, in the order they are read (analyses before children)
MODEL_TABLES = (
    "studies",
    "analyses",
    "donors",
    "specimens",
    "samples",
    "files",
    "analysis_samples",
    "analysis_state_history",
)


class DonorRow(NamedTuple):
    donor_id: str
    study_id: str
    submitter_donor_id: str
    gender: str | None
    info: str | None  # JSON text of the info map, or None


class SpecimenRow(NamedTuple):
    specimen_id: str
    donor_id: str
    study_id: str
    submitter_specimen_id: str
    tumour_normal_designation: str | None
    specimen_tissue_source: str | None
    specimen_type: str | None
    info: str | None


class SampleRow(NamedTuple):
    sample_id: str
    specimen_id: str
    study_id: str
    submitter_sample_id: str
    sample_type: str | None
    matched_normal_submitter_sample_id: str | None
    info: str | None


class FileRow(NamedTuple):
    object_id: str
    analysis_id: str
    study_id: str
    version: int
    file_name: str
    file_size: int
    file_type: str | None
    file_md5sum: str
    file_access: str
    data_type: str | None
    info: str | None
    source_path: str | None  # where the watcher or ingest found the file (storage sync)


class StateChange(NamedTuple):
    """One row of an analysis' state history."""

    event_id: str
    initial_state: str
    updated_state: str
    updated_at: datetime
    actor: str | None
    reason: str | None


EntityRow = DonorRow | SpecimenRow | SampleRow | FileRow

#: model table -> the row type it holds
ROW_TYPES: dict[str, type[DonorRow] | type[SpecimenRow] | type[SampleRow] | type[FileRow]] = {
    "donors": DonorRow,
    "specimens": SpecimenRow,
    "samples": SampleRow,
    "files": FileRow,
}
#: model table -> the columns of its row type, in order
ENTITY_COLUMNS: dict[str, tuple[str, ...]] = {name: t._fields for name, t in ROW_TYPES.items()}


def row_maker(name: str) -> Callable[[Iterable[Any]], Any]:
    """Builds rows of a table's type from iterables of values, at C speed (bulk loads make
    millions: ``RowType(*values)`` runs Python code for each)."""
    return partial(tuple.__new__, ROW_TYPES[name])


# Columns whose values repeat a lot: interned to save memory at millions of rows.
INTERNED = {
    "study_id",
    "gender",
    "tumour_normal_designation",
    "specimen_tissue_source",
    "specimen_type",
    "sample_type",
    "file_type",
    "file_access",
    "data_type",
    "info",
}


class AnalysisRecord:
    """The current view of one committed analysis."""

    __slots__ = (
        "analysis_id",
        "study_id",
        "type_name",
        "type_version",
        "data",
        "version",
        "created_at",
        "data_updated_at",
        "history",
        "sample_ids",
        "object_ids",
    )

    def __init__(self, row: dict[str, Any]) -> None:
        self.analysis_id: str = row["analysis_id"]
        self.study_id: str = intern(row["study_id"])
        self.type_name: str = intern(row["analysis_type_name"])
        self.type_version: int = row["analysis_type_version"]
        self.data: str = row["data"]
        self.version: int = row["version"]
        self.created_at: datetime = row["created_at"]
        self.data_updated_at: datetime = row["created_at"]
        self.history: list[StateChange] = []
        self.sample_ids: list[str] = []
        self.object_ids: list[str] = []

    @classmethod
    def from_values(
        cls,
        analysis_id: str,
        study_id: str,
        type_name: str,
        type_version: int,
        data: str,
        created_at: datetime,
    ) -> AnalysisRecord:
        rec = cls.__new__(cls)
        rec.analysis_id = analysis_id
        rec.study_id = study_id
        rec.type_name = type_name
        rec.type_version = type_version
        rec.data = data
        rec.version = 1
        rec.created_at = created_at
        rec.data_updated_at = created_at
        rec.history = []
        rec.sample_ids = []
        rec.object_ids = []
        return rec

    @property
    def state(self) -> str:
        return self.history[-1].updated_state if self.history else "UNPUBLISHED"

    @property
    def updated_at(self) -> datetime:
        if self.history and self.history[-1].updated_at > self.data_updated_at:
            return self.history[-1].updated_at
        return self.data_updated_at

    def published_times(self) -> tuple[datetime | None, datetime | None]:
        times = [h.updated_at for h in self.history if h.updated_state == "PUBLISHED"]
        return (min(times), max(times)) if times else (None, None)
