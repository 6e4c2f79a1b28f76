"""The rows the read model holds: one named type per entity, and the record of an analysis.

Entity rows are tuples (NamedTuples: no per-row dict, the memory of a plain tuple at millions of
rows) whose fields are the columns of their Delta table that the model keeps.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, Protocol

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
ROW_TYPES: dict[str, Any] = {
    "donors": DonorRow,
    "specimens": SpecimenRow,
    "samples": SampleRow,
    "files": FileRow,
}
#: model table -> the columns of its row type, in order
ENTITY_COLUMNS: dict[str, tuple[str, ...]] = {name: t._fields for name, t in ROW_TYPES.items()}


class AnalysisRecord:
    """The current view of one committed analysis.

    Read from the read model's file (``ReadModel.analyses``) with its state and times; its state
    history, samples and files are read the first time they are asked for. A record built by
    hand (``events/asof.py``, an analysis as of an earlier version) sets ``history``,
    ``sample_ids`` and ``object_ids`` itself, and its state then follows its history."""

    __slots__ = (
        "analysis_id",
        "study_id",
        "type_name",
        "type_version",
        "data",
        "version",
        "created_at",
        "data_updated_at",
        "_state",
        "_state_updated_at",
        "_source",
        "_history",
        "_sample_ids",
        "_object_ids",
    )

    def __init__(
        self,
        source: RecordSource | None,
        analysis_id: str,
        study_id: str,
        state: str | None,
        type_name: str,
        type_version: int,
        version: int,
        data: str,
        created_at: datetime,
        data_updated_at: datetime,
        state_updated_at: datetime | None,
    ) -> None:
        self._source = source
        self.analysis_id = analysis_id
        self.study_id = study_id
        self._state = state
        self.type_name = type_name
        self.type_version = type_version
        self.version = version
        self.data = data
        self.created_at = created_at
        self.data_updated_at = data_updated_at
        self._state_updated_at = state_updated_at
        self._history: list[StateChange] | None = None
        self._sample_ids: list[str] | None = None
        self._object_ids: list[str] | None = None

    def _loaded(self, slot: str, load: str) -> Any:
        value = getattr(self, slot, None)
        if value is None:
            source = getattr(self, "_source", None)
            value = [] if source is None else getattr(source, load)(self.analysis_id)
            setattr(self, slot, value)
        return value

    @property
    def history(self) -> list[StateChange]:
        """State changes, oldest first."""
        return self._loaded("_history", "history_of")

    @history.setter
    def history(self, value: list[StateChange]) -> None:
        self._history = value
        self._state = None
        self._state_updated_at = None

    @property
    def sample_ids(self) -> list[str]:
        return self._loaded("_sample_ids", "sample_ids_of")

    @sample_ids.setter
    def sample_ids(self, value: list[str]) -> None:
        self._sample_ids = value

    @property
    def object_ids(self) -> list[str]:
        return self._loaded("_object_ids", "object_ids_of")

    @object_ids.setter
    def object_ids(self, value: list[str]) -> None:
        self._object_ids = value

    @property
    def state(self) -> str:
        stored = getattr(self, "_state", None)
        if stored is not None:
            return stored
        history = self.history
        return history[-1].updated_state if history else "UNPUBLISHED"

    @property
    def updated_at(self) -> datetime:
        if getattr(self, "_state", None) is not None:
            last = self._state_updated_at
        else:
            history = self.history
            last = history[-1].updated_at if history else None
        if last is not None and last > self.data_updated_at:
            return last
        return self.data_updated_at

    def published_times(self) -> tuple[datetime | None, datetime | None]:
        times = [h.updated_at for h in self.history if h.updated_state == "PUBLISHED"]
        return (min(times), max(times)) if times else (None, None)


class RecordSource(Protocol):
    """Where a record reads what it holds lazily (the read model)."""

    def history_of(self, analysis_id: str) -> list[StateChange]: ...

    def sample_ids_of(self, analysis_id: str) -> list[str]: ...

    def object_ids_of(self, analysis_id: str) -> list[str]: ...
