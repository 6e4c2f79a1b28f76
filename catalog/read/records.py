"""The rows the read model holds: one named type per entity, and the record of an analysis.

Entity rows are tuples (NamedTuples: no per-row dict, the memory of a plain tuple at millions of
rows) whose fields are the columns of their Delta table that the model keeps.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

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

# Row tuples held per entity (positions used below).
# donor:    (donor_id, study_id, submitter_donor_id, gender, info)
# specimen: (specimen_id, donor_id, study_id, submitter_specimen_id, tumour_normal_designation,
#            specimen_tissue_source, specimen_type, info)
# sample:   (sample_id, specimen_id, study_id, submitter_sample_id, sample_type,
#            matched_normal_submitter_sample_id, info)
# file:     (object_id, analysis_id, study_id, version, file_name, file_size, file_type,
#            file_md5sum, file_access, data_type, info, source_path)

ENTITY_COLUMNS = {
    "donors": ("donor_id", "study_id", "submitter_donor_id", "gender", "info"),
    "specimens": (
        "specimen_id",
        "donor_id",
        "study_id",
        "submitter_specimen_id",
        "tumour_normal_designation",
        "specimen_tissue_source",
        "specimen_type",
        "info",
    ),
    "samples": (
        "sample_id",
        "specimen_id",
        "study_id",
        "submitter_sample_id",
        "sample_type",
        "matched_normal_submitter_sample_id",
        "info",
    ),
    "files": (
        "object_id",
        "analysis_id",
        "study_id",
        "version",
        "file_name",
        "file_size",
        "file_type",
        "file_md5sum",
        "file_access",
        "data_type",
        "info",
        "source_path",
    ),
}
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
        # (event_id, initial_state, updated_state, updated_at, actor, reason)
        self.history: list[tuple] = []
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
        return self.history[-1][2] if self.history else "UNPUBLISHED"

    @property
    def updated_at(self) -> datetime:
        if self.history and self.history[-1][3] > self.data_updated_at:
            return self.history[-1][3]
        return self.data_updated_at

    def published_times(self) -> tuple[datetime | None, datetime | None]:
        times = [h[3] for h in self.history if h[2] == "PUBLISHED"]
        return (min(times), max(times)) if times else (None, None)
