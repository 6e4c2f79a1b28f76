"""The outbox: the committed history of two tables, read by Delta version as a stream of changes.

Nothing extra is written for events. A registration's ``analyses`` row (version 1) is its CREATE,
a metadata update's row (version > 1) its UPDATE, and each ``analysis_state_history`` row a
PUBLISH, UNPUBLISH or SUPPRESS. Those rows are the commit points of their writes, so a change is in
the outbox exactly when it committed, and never before.

Order. Each table's commits are ordered by version; across the two tables, commits are merged by
their commit timestamp (``commitInfo.timestamp``), analyses first on a tie. A *cut*
``(analyses version, history version)`` is a prefix of that merged order. The live head is read as
a consistent cut: history head, then analyses head, then history head again; when both history
reads agree, no history commit landed in between, so nothing left out of the cut precedes anything
taken into it (an UPDATE is never overtaken by a later state change of the same analysis).

A *batch* is the changes between two cuts, in merged order; its two cuts plus an offset into it
form a resumable :class:`Position`, also written as the token ``a.h.A.H.offset`` (the ids of the
server-sent events). Re-reading a batch gives the same changes in the same order, since commits
are immutable. Like the read model, this reads the ``_delta_log`` JSON files directly and only the
files a commit added with ``dataChange`` (compaction is not new data).
"""

from __future__ import annotations

import heapq
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import BadRequest, Internal, MalformedParameter, OutboxGap
from ..root import Location
from ..settings import Settings
from ..tables import TableStore

ANALYSES = "analyses"
HISTORY = "analysis_state_history"
FILES = "files"  # not an outbox table, but the documents of its changes read it (asof.py)
# the order of commits made in the same millisecond: a logical write appends files first
_RANK = {FILES: -1, ANALYSES: 0, HISTORY: 1}
_COLUMNS = {
    ANALYSES: ["analysis_id", "study_id", "version", "created_at"],
    HISTORY: [
        "event_id",
        "analysis_id",
        "study_id",
        "initial_state",
        "updated_state",
        "updated_at",
    ],
}


@dataclass(frozen=True)
class Cut:
    """A version of each outbox table: everything committed up to there."""

    analyses: int
    history: int

    def of(self, table: str) -> int:
        return self.analyses if table == ANALYSES else self.history

    def covers(self, other: Cut) -> bool:
        return self.analyses >= other.analyses and self.history >= other.history

    def meet(self, other: Cut) -> Cut:
        """The earlier of two cuts, table by table (both are prefixes of one order)."""
        return Cut(min(self.analyses, other.analyses), min(self.history, other.history))

    def to_json(self) -> dict[str, int]:
        return {ANALYSES: self.analyses, HISTORY: self.history}

    @classmethod
    def from_json(cls, data: dict[str, int]) -> Cut:
        return cls(int(data[ANALYSES]), int(data[HISTORY]))


BEGINNING = Cut(0, 0)  # version 0 of each table is its creation, with no rows


@dataclass(frozen=True)
class Position:
    """Where a reader stands: in the batch start..end, after `offset` of its changes."""

    start: Cut
    end: Cut | None = None
    offset: int = 0

    def token(self) -> str:
        end = self.end or self.start
        return (
            f"{self.start.analyses}.{self.start.history}.{end.analyses}.{end.history}.{self.offset}"
        )

    @classmethod
    def parse(cls, token: str) -> Position:
        """A token as ``token()`` writes it, or BadRequest."""
        try:
            a, h, ea, eh, offset = (int(p) for p in token.strip().split("."))
        except ValueError:
            raise MalformedParameter(f"'{token}' is not an event id of this server") from None
        if min(a, h, ea, eh, offset) < 0 or ea < a or eh < h or ((ea, eh) == (a, h) and offset):
            raise MalformedParameter(f"'{token}' is not an event id of this server")
        start, end = Cut(a, h), Cut(ea, eh)
        return cls(start, None if end == start else end, offset)

    def to_json(self) -> dict:
        return {
            "start": self.start.to_json(),
            "end": self.end.to_json() if self.end else None,
            "offset": self.offset,
        }

    @classmethod
    def from_json(cls, data: dict) -> Position:
        end = data.get("end")
        return cls(
            Cut.from_json(data["start"]),
            Cut.from_json(end) if end else None,
            int(data.get("offset", 0)),
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change of one analysis: an analyses row or a state-history row."""

    event_id: str
    analysis_id: str
    study_id: str
    at: datetime  # the row's own time
    data_version: int | None  # analyses rows: 1 = registration, > 1 = metadata update
    initial_state: str | None  # state-history rows
    updated_state: str | None
    table: str
    table_version: int
    committed_ms: int


@dataclass(frozen=True)
class Commit:
    """What one Delta commit of an outbox table added."""

    table: str
    version: int
    committed_ms: int
    files: tuple[str, ...]  # paths in the tables' filesystem
    rows: int

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.committed_ms, _RANK[self.table], self.version)


class Outbox:
    """Reads the outbox tables of one catalog root; safe to share between threads."""

    def __init__(self, tables_dir: Location | Path | str, *, cache_changes: int = 200_000) -> None:
        self.dir = tables_dir if isinstance(tables_dir, Location) else Location.parse(tables_dir)
        self._fs, self._base = self.dir.filesystem()
        self._lock = threading.Lock()
        self._known: dict[str, int] = {}
        self._commits: dict[tuple[str, int], Commit] = {}
        self._changes: OrderedDict[tuple[str, int], list[Change]] = OrderedDict()
        self._rows: dict[tuple[str, int], list[dict]] = {}
        self._cached = 0
        self._cache_limit = cache_changes

    # -- versions -------------------------------------------------------------------------------

    def latest(self, table: str) -> int:
        """The newest committed version: a listing once, then probing for the next file."""
        version = self._known.get(table)
        if version is None:
            names = self.dir.list(table, "_delta_log")
            numbers = [int(n[:20]) for n in names if n.endswith(".json") and n[:20].isdigit()]
            if not numbers:
                raise Internal(f"No Delta table at {self.dir.uri(table)}")
            version = max(numbers)
        while self.dir.exists(table, "_delta_log", f"{version + 1:020d}.json"):
            version += 1
        self._known[table] = version
        return version

    def head(self) -> Cut:
        """A consistent cut of what is committed now (see the module docstring)."""
        history = self.latest(HISTORY)
        analyses = self.latest(ANALYSES)
        for _ in range(8):
            again = self.latest(HISTORY)
            if again == history:
                break
            history = again
            analyses = self.latest(ANALYSES)
        # if history kept moving, (analyses read after history) still never lets a state change
        # overtake the registration it belongs to
        return Cut(analyses, history)

    # -- commits --------------------------------------------------------------------------------

    def commit(self, table: str, version: int) -> Commit:
        key = (table, version)
        found = self._commits.get(key)
        if found is not None:
            return found
        entry = (table, "_delta_log", f"{version:020d}.json")
        try:
            lines = self.dir.read_bytes(*entry).split(b"\n")  # not str.splitlines(): U+2028
        except FileNotFoundError:
            raise OutboxGap(
                f"The Delta log entry {self.dir.uri(*entry)} is gone (log retention?): events "
                f"of {table} version {version} cannot be read; replay from a later time"
            ) from None
        committed_ms = 0
        files: list[str] = []
        rows = 0
        rewrite = False
        for line in lines:
            if not line.strip():
                continue
            action = json.loads(line)
            if "commitInfo" in action:
                committed_ms = int(action["commitInfo"].get("timestamp") or 0)
            elif "add" in action and action["add"].get("dataChange", True):
                add = action["add"]
                files.append(f"{self._base}/{table}/{unquote(add['path'])}")
                stats = json.loads(add.get("stats") or "{}")
                rows += int(stats.get("numRecords") or 0)
            elif "remove" in action and action["remove"].get("dataChange", True):
                rewrite = True
        if rewrite:
            # a delete or rewrite of an append-only table re-adds old rows: they are not new
            files, rows = [], 0
        if not committed_ms:
            committed_ms = int(self.dir.mtime(*entry) * 1000)
        found = Commit(table, version, committed_ms, tuple(files), rows)
        with self._lock:
            if len(self._commits) > 100_000:
                self._commits.clear()
            self._commits[key] = found
        return found

    def merged(self, start: Cut, end: Cut, limit: int | None = None) -> list[Commit]:
        """Commits after `start` up to `end`, in merged order; the first `limit` if given."""
        inputs = []
        for table in (ANALYSES, HISTORY):
            first, last = start.of(table) + 1, end.of(table)
            if limit is not None:
                last = min(last, first + limit - 1)
            inputs.append([self.commit(table, v) for v in range(first, last + 1)])
        out = list(heapq.merge(*inputs, key=lambda c: c.key))
        return out if limit is None else out[:limit]

    def batch_end(self, start: Cut, head: Cut, max_commits: int) -> Cut:
        """The end of the next batch after `start`: at most max_commits commits towards head."""
        taken = self.merged(start, head, max_commits)
        a = max((c.version for c in taken if c.table == ANALYSES), default=start.analyses)
        h = max((c.version for c in taken if c.table == HISTORY), default=start.history)
        return Cut(a, h)

    # -- changes --------------------------------------------------------------------------------

    def changes(self, start: Cut, end: Cut) -> list[Change]:
        """Every change after `start` up to `end`, in order."""
        out: list[Change] = []
        for commit in self.merged(start, end):
            out.extend(self.commit_changes(commit))
        return out

    def read_file(self, path: str, columns: list[str] | None = None) -> pa.Table:
        """One Parquet file a commit added (a path of ``Commit.files``), local or on S3."""
        return pq.ParquetFile(path, filesystem=self._fs).read(columns=columns)

    def commit_changes(self, commit: Commit) -> list[Change]:
        """The changes one commit of an outbox table added, in row order (cached)."""
        key = (commit.table, commit.version)
        with self._lock:
            cached = self._changes.get(key)
            if cached is not None:
                self._changes.move_to_end(key)
                return cached
        out: list[Change] = []
        rows: list[dict] = []
        for path in commit.files:
            try:
                # state-history rows are read whole: the read model may want them (history_rows)
                table = self.read_file(
                    path, None if commit.table == HISTORY else _COLUMNS[commit.table]
                )
            except FileNotFoundError:
                raise OutboxGap(
                    f"{path} is gone (vacuumed?): events of {commit.table} version "
                    f"{commit.version} cannot be read; replay from a later time"
                ) from None
            out.extend(_rows_to_changes(commit, table.to_pydict()))
            if commit.table == HISTORY:
                rows.extend(table.to_pylist())
        with self._lock:
            self._changes[key] = out
            if rows:
                self._rows[key] = rows
            self._cached += len(out)
            while self._cached > self._cache_limit and len(self._changes) > 1:
                dropped_key, dropped = self._changes.popitem(last=False)
                self._rows.pop(dropped_key, None)
                self._cached -= len(dropped)
        return out

    def history_rows(self, after: int, upto: int) -> list[dict]:
        """Every column of the state-history rows committed after..upto, in commit order."""
        out: list[dict] = []
        for version in range(after + 1, upto + 1):
            key = (HISTORY, version)
            if key not in self._rows:
                self.commit_changes(self.commit(HISTORY, version))
            out.extend(self._rows.get(key, ()))
        return out

    def iter_from(
        self, position: Position, head: Cut, max_commits: int
    ) -> Iterator[tuple[Position, Change]]:
        """Changes after `position` up to head, each with the position just after it."""
        while True:
            end = position.end
            if end is None:
                if position.start.covers(head):
                    return
                end = self.batch_end(position.start, head, max_commits)
            batch = self.changes(position.start, end)
            for i in range(position.offset, len(batch)):
                yield Position(position.start, end, i + 1), batch[i]
            position = Position(end)

    # -- lag and time ---------------------------------------------------------------------------

    def pending(self, position: Position, head: Cut) -> tuple[int, int | None]:
        """(changes not yet delivered, commit time in ms of the oldest of them or None)."""
        skip, total, oldest = position.offset, 0, None
        for c in self.merged(position.start, head):
            left = max(c.rows - skip, 0)
            skip = max(skip - c.rows, 0)
            total += left
            if left and oldest is None:
                oldest = c.committed_ms
        return total, oldest

    def cut_before(self, when: datetime) -> Cut:
        """The cut holding every commit made before `when` (binary search on commit times)."""
        limit_ms = int(when.timestamp() * 1000)
        versions = []
        for table in (ANALYSES, HISTORY):
            lo, hi = 0, self.latest(table)  # answer: the last version committed before `when`
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.commit(table, mid).committed_ms < limit_ms:
                    lo = mid
                else:
                    hi = mid - 1
            versions.append(lo)
        return Cut(versions[0], versions[1])


def _rows_to_changes(commit: Commit, cols: dict[str, list]) -> Iterator[Change]:
    n = len(cols["analysis_id"])
    if commit.table == ANALYSES:
        for i in range(n):
            aid, version = cols["analysis_id"][i], cols["version"][i]
            yield Change(
                event_id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{aid}:analysis:{version}")),
                analysis_id=aid,
                study_id=cols["study_id"][i],
                at=cols["created_at"][i],
                data_version=version,
                initial_state=None,
                updated_state=None,
                table=ANALYSES,
                table_version=commit.version,
                committed_ms=commit.committed_ms,
            )
    else:
        for i in range(n):
            yield Change(
                event_id=cols["event_id"][i],
                analysis_id=cols["analysis_id"][i],
                study_id=cols["study_id"][i],
                at=cols["updated_at"][i],
                data_version=None,
                initial_state=cols["initial_state"][i],
                updated_state=cols["updated_state"][i],
                table=HISTORY,
                table_version=commit.version,
                committed_ms=commit.committed_ms,
            )


def cut_from(settings: Settings, text: str) -> Cut:
    """`--from`: a catalog version (its changes and later ones) or an ISO-8601 time."""
    text = text.strip()
    if text.isdigit():
        version = int(text)
        if version <= 1:
            return BEGINNING
        versions = TableStore(settings.tables_dir).versions_as_of(str(version - 1))
        return Cut(versions[ANALYSES], versions[HISTORY])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"--from takes a catalog version (integer) or an ISO-8601 time, not {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()
    return Outbox(settings.tables_dir).cut_before(when)
