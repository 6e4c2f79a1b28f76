"""An analysis as it was at one change of the outbox: what Song's message carries.

Song re-reads the analysis right after each change and sends that document; an indexer that
reads the topic later, or a replay, must see the same. The read model only knows the analysis as
it is now, so the :class:`Timeline` remembers, per analysis, which rows of ``analyses`` (its
dynamic data), ``analysis_state_history`` and ``files`` were committed, and where each one falls
in commit order. The document as of a change is then built from the rows at or before that
change: the data version in effect, the history up to it, each file's version in effect.

Order is the outbox's (see outbox.py): commits are ranked by their Delta commit time, then
analyses, then history; a ``files`` commit ranks before both on the same millisecond, since a
logical write appends files before its commit point. Rows within a commit keep their order.

Memory stays small: the timeline keeps keys and version numbers, not rows. A row's content comes
from the read model when the model holds that same version (nearly always), and otherwise from
the Parquet file of the commit that added it, read once and cached.
"""

from __future__ import annotations

import threading
from bisect import insort
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from typing import Any

from ..errors import OutboxGap
from ..read.readmodel import ReadModel
from ..read.records import ENTITY_COLUMNS, AnalysisRecord, FileRow
from .outbox import ANALYSES, FILES, HISTORY, Change, Outbox

#: (commit time in ms, table rank, table version, row index in the commit)
Key = tuple[int, int, int, int]
_DATA_COLUMNS = [
    "analysis_id",
    "version",
    "analysis_type_name",
    "analysis_type_version",
    "data",
    "created_at",
]
_FILE_COLUMNS = list(ENTITY_COLUMNS["files"])
_CACHED_COMMITS = 64


class Timeline:
    """Per analysis, the commit-order keys of its data, history and file rows; thread-safe."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._read = {ANALYSES: 0, HISTORY: 0, FILES: 0}
        self._data: dict[str, list[tuple[Key, int]]] = defaultdict(list)
        self._history: dict[str, list[tuple[Key, str]]] = defaultdict(list)
        self._files: dict[str, list[tuple[Key, str, int]]] = defaultdict(list)
        self._own: dict[str, Key] = {}  # event id -> key of its row (outbox changes only)
        self._rows: OrderedDict[tuple[str, int], dict[tuple[str, int], dict[str, Any]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    # -- reading the logs -----------------------------------------------------------------------

    def advance(self) -> None:
        """Read every commit of the three tables made since the last call."""
        with self._lock:
            for table in (FILES, ANALYSES, HISTORY):
                latest = self.outbox.latest(table)
                for version in range(self._read[table] + 1, latest + 1):
                    self._add_commit(table, version)
                    self._read[table] = version

    def _add_commit(self, table: str, version: int) -> None:
        commit = self.outbox.commit(table, version)
        base = commit.key
        if table == FILES:
            for i, (oid, aid, file_version) in enumerate(self._file_ids(commit.files)):
                _append(self._files[aid], ((*base, i), oid, file_version))
            return
        for i, ch in enumerate(self.outbox.commit_changes(commit)):
            key: Key = (*base, i)
            self._own[ch.event_id] = key
            if table == ANALYSES:
                assert ch.data_version is not None
                _append(self._data[ch.analysis_id], (key, ch.data_version))
            else:
                _append(self._history[ch.analysis_id], (key, ch.event_id))

    def _file_ids(self, paths: tuple[Any, ...]) -> Iterator[tuple[str, str, int]]:
        for path in paths:
            try:
                cols = self.outbox.read_file(path, ["object_id", "analysis_id", "version"])
            except FileNotFoundError:
                raise OutboxGap(
                    f"{path} is gone (vacuumed?): file versions cannot be read"
                ) from None
            yield from zip(
                cols.column(0).to_pylist(),
                cols.column(1).to_pylist(),
                cols.column(2).to_pylist(),
                strict=True,
            )

    # -- an analysis as of a change -------------------------------------------------------------

    def record_at(
        self, model: ReadModel, rec: AnalysisRecord, change: Change
    ) -> tuple[AnalysisRecord, list[FileRow] | None]:
        """The analysis (and its files) with only the rows committed up to `change`.

        When nothing of the analysis committed after the change (the live case), that is the
        model's record itself, and None for the files (the model's). The caller holds the
        model's lock, has brought the model up to the change and then advanced the timeline."""
        aid = rec.analysis_id
        with self._lock:
            bound = self._own.get(change.event_id)
            if bound is None:  # not read yet (cannot happen after advance): its commit, whole
                rank = 0 if change.table == ANALYSES else 1
                bound = (change.committed_ms, rank, change.table_version, 1 << 30)
            rows = self._data.get(aid, ())
            history = self._history.get(aid, ())
            file_rows = self._files.get(aid, ())
            if (
                (not rows or (rows[-1][0] <= bound and rows[-1][1] == rec.version))
                and (not history or history[-1][0] <= bound)
                and (not file_rows or file_rows[-1][0] <= bound)
                and len(history) == len(rec.history)
            ):
                return rec, None
            data = [(k, v) for k, v in rows if k <= bound]
            events = {e for k, e in history if k <= bound}
            newest: dict[str, tuple[Key, int]] = {}
            for k, oid, file_version in file_rows:
                if k <= bound and (oid not in newest or newest[oid][0] < k):
                    newest[oid] = (k, file_version)
        version = max(data)[1] if data else 1
        out = AnalysisRecord.__new__(AnalysisRecord)
        out.analysis_id, out.study_id, out.created_at = aid, rec.study_id, rec.created_at
        out.version = version
        if version == rec.version:
            out.type_name, out.type_version = rec.type_name, rec.type_version
            out.data, out.data_updated_at = rec.data, rec.data_updated_at
        else:
            key = next(k for k, v in data if v == version)
            row = self._old_row(ANALYSES, key[2], (aid, version))
            out.type_name = row["analysis_type_name"]
            out.type_version = row["analysis_type_version"]
            out.data, out.data_updated_at = row["data"], row["created_at"]
        out.history = [h for h in rec.history if h.event_id in events]
        out.sample_ids = rec.sample_ids
        files: list[FileRow] = []
        for oid, (key, file_version) in newest.items():
            current = model.files.get(oid)
            if current is not None and current.version == file_version:
                files.append(current)
                continue
            row = self._old_row(FILES, key[2], (oid, file_version))
            if row["file_name"] is not None:  # None: a tombstone, the file was deleted
                files.append(FileRow(*(row[c] for c in _FILE_COLUMNS)))
        files.sort(key=lambda f: f.file_name)
        out.object_ids = [f.object_id for f in files]
        return out, files

    def _old_row(self, table: str, version: int, ident: tuple[str, int]) -> dict[str, Any]:
        """A row an older commit added, by (analysis id, version) or (object id, version)."""
        with self._lock:
            rows = self._rows.get((table, version))
            if rows is not None:
                self._rows.move_to_end((table, version))
        if rows is None:
            rows = {}
            columns = _DATA_COLUMNS if table == ANALYSES else _FILE_COLUMNS
            for path in self.outbox.commit(table, version).files:
                try:
                    for row in self.outbox.read_file(path, columns).to_pylist():
                        ident_of = row["analysis_id"] if table == ANALYSES else row["object_id"]
                        rows[(ident_of, row["version"])] = row
                except FileNotFoundError:
                    raise OutboxGap(
                        f"{path} is gone (vacuumed?): {table} version {version} cannot be read"
                    ) from None
            with self._lock:
                self._rows[(table, version)] = rows
                while len(self._rows) > _CACHED_COMMITS:
                    self._rows.popitem(last=False)
        found = rows.get(ident)
        if found is None:
            raise OutboxGap(f"{table} version {version} has no row for {ident}")
        return found


def _append(entries: list[Any], entry: tuple[Any, ...]) -> None:
    """Keep an analysis' entries in key order (commit times follow versions but for clock skew)."""
    if entries and entries[-1][0] > entry[0]:
        insort(entries, entry)
    else:
        entries.append(entry)
