"""Current-state tables: the catalog as it is, in Delta tables any engine reads with a plain SELECT.

The history tables (``tables.py``) are append-only event logs that only songlake's SQL views turn
into answers. Beside them, under ``<root>/tables/``, six derived tables hold one row per current
fact, each rewritten whole (``mode="overwrite"``, one Delta commit) from those exact views at one
catalog version:

    current_analyses            one row per analysis: state, type, study, times, current data
    current_files               one row per file that exists now (no versions, no deletions)
    current_donors              one row per donor (likewise specimens and samples)
    current_specimens
    current_samples
    current_analysis_samples    one row per analysis-sample link

Every row carries ``catalog_version``, and every refresh commit records it in its metadata
(``songlake.catalog_version``). A row present is exactly right as of that version; the tables lag
the history by a bounded amount (``current_refresh_commits`` / ``current_refresh_seconds``).

They are derived data: a refresh runs outside the writer lease, never blocks a write, and a
failed or interrupted refresh leaves the previous version in place (Delta commits atomically).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import CommitProperties

from . import sql
from .settings import Settings
from .tables import DATA_TABLES, TableStore

log = logging.getLogger("songlake.current")

#: current-state table -> the view of catalog/sql.py it is written from
CURRENT = {
    "current_analyses": "analyses",
    "current_files": "files",
    "current_donors": "donors",
    "current_specimens": "specimens",
    "current_samples": "samples",
    "current_analysis_samples": "analysis_samples",
}
VERSION_KEY = "songlake.catalog_version"
#: Delta operations that rewrite or delete files without changing a table's rows
DATA_NEUTRAL = {"OPTIMIZE", "VACUUM START", "VACUUM END"}


def catalog_version(tables: TableStore) -> tuple[int, dict[str, int]]:
    """The newest catalog version that recorded a write, and every data table's version at it
    (all 0 before any); compaction and vacuum commits of ``commits`` record none and are skipped.
    """
    commits = tables.latest("commits")
    for limit in (32, None):
        for entry in commits.history(limit):
            recorded = entry.get(sql.TABLE_VERSIONS_KEY)
            if isinstance(recorded, str) and isinstance(entry.get("version"), int):
                return entry["version"], _same_data(tables, json.loads(recorded))
    return 0, {name: 0 for name in DATA_TABLES}


def _same_data(tables: TableStore, versions: dict[str, int]) -> dict[str, int]:
    """Each table's newest version holding the same rows as the given one: past compactions and
    vacuums (which may have deleted the given version's files), never past a write."""
    out = {}
    for name, version in versions.items():
        newest = tables.latest(name).version()
        later = tables.table(name).history(newest - version) if newest > version else []
        same = all(e.get("operation") in DATA_NEUTRAL for e in later)
        out[name] = newest if same else version
    return out


def reflected(tables: TableStore, name: str) -> int | None:
    """The catalog version a current-state table reflects (None before its first refresh)."""
    try:
        dt = DeltaTable(tables.uri(name), storage_options=tables.storage_options)
    except TableNotFoundError:
        return None
    return _version_of(dt)


def _version_of(dt: DeltaTable) -> int | None:
    for entry in dt.history(1):
        value = entry.get(VERSION_KEY)
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def refresh(tables: TableStore, *, retention_hours: float | None = None) -> int:
    """Rewrite every current-state table as of the newest catalog version; returns it.

    A table that already reflects that version (or a newer one) is left alone, and so is one that
    another process rewrote meanwhile (its commit wins; ours is dropped). Rows stream from DuckDB
    into the Delta writer in batches. With ``retention_hours``, files older refreshes replaced
    that long ago are vacuumed."""
    version, versions = catalog_version(tables)
    behind = [name for name in CURRENT if (reflected(tables, name) or -1) < version]
    if not behind:
        return version
    con = sql.connect(tables, versions, query="SELECT 1")
    try:
        for name in behind:
            rows = con.sql(f"SELECT *, {version}::BIGINT AS catalog_version FROM {CURRENT[name]}")
            _overwrite(tables, name, pa.RecordBatchReader.from_stream(rows), version)
            if retention_hours is not None:
                tables.vacuum(name, retention_hours)
    finally:
        con.close()
    return version


def _overwrite(tables: TableStore, name: str, data: pa.RecordBatchReader, version: int) -> None:
    props = CommitProperties(custom_metadata={VERSION_KEY: str(version)}, max_commit_retries=0)
    uri = tables.uri(name)
    try:
        dt = DeltaTable(uri, storage_options=tables.storage_options)
    except TableNotFoundError:
        write_deltalake(
            uri, data, mode="overwrite", commit_properties=props,
            storage_options=tables.storage_options,
        )  # fmt: skip
        return
    known = _version_of(dt)
    if known is not None and known >= version:
        return
    try:
        write_deltalake(
            dt, data, mode="overwrite", schema_mode="overwrite", commit_properties=props
        )
    except CommitFailedError:
        log.info("%s: another process refreshed it first; leaving its version", name)


def read(tables: TableStore, name: str) -> pa.Table:
    """A current-state table as Arrow, through its Delta log (its file list, as
    ``TableStore.dataset`` reads: deltalake's own dataset can abort the interpreter at exit)."""
    dt = DeltaTable(tables.uri(name), storage_options=tables.storage_options)
    fs, _ = tables.dir.filesystem()
    paths = [tables.dir.fs_path(u) for u in dt.file_uris()]
    schema = pa.schema(dt.schema().to_arrow())
    return pads.dataset(paths, schema=schema, format="parquet", filesystem=fs).to_table()


class Refresher:
    """Refreshes the current-state tables in the background after every ``every_commits`` writes
    of this process, or ``every_seconds`` after a write that left them behind: outside the writer
    lease, one refresh at a time, and a failed refresh only logged (writes never wait for it).

    A refresh rereads the catalog (at 1M analyses about 17 s of CPU), so under a steady stream of
    writes the next one starts no sooner than ``every_seconds / 4`` after the last one ended:
    the refresher takes at most about a fifth of a core, never all of it."""

    def __init__(
        self,
        tables: TableStore,
        *,
        every_commits: int,
        every_seconds: float,
        retention_hours: float,
    ) -> None:
        self.tables = tables
        self.every_commits = every_commits
        self.every_seconds = every_seconds
        self.retention_hours = retention_hours
        self._lock = threading.Lock()
        self._writes = 0
        self._last = time.monotonic()
        self._ended: float | None = None  # when this process' last refresh ended
        self._worker: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        #: long-running processes (serve, watch) set this: a timer refreshes ``every_seconds``
        #: after a write that left the tables behind, so the lag is bounded with no further write
        self.timed = False
        self.refreshed: list[int] = []  # catalog versions written by this process
        self.failures = 0

    @classmethod
    def of(cls, tables: TableStore, settings: Settings) -> Refresher:
        return cls(
            tables,
            every_commits=settings.current_refresh_commits,
            every_seconds=settings.current_refresh_seconds,
            retention_hours=settings.vacuum_retention,
        )

    def after_write(self) -> None:
        """Called after each write of this process (outside the lease)."""
        with self._lock:
            self._writes += 1
            now = time.monotonic()
            rested = self._ended is None or now - self._ended >= self.every_seconds / 4
            due = (self._writes >= self.every_commits and rested) or (
                now - self._last >= self.every_seconds
            )
            if not due:
                if self.timed and self._timer is None:
                    wait = max(0.0, self.every_seconds - (time.monotonic() - self._last))
                    self._timer = threading.Timer(wait, self._kick)
                    self._timer.daemon = True  # a short CLI process does not wait for it
                    self._timer.start()
                return
        self._kick()

    def _kick(self) -> None:
        with self._lock:
            self._timer = None
            if self._worker is not None and self._worker.is_alive():
                return
            self._writes = 0
            self._last = time.monotonic()
            self._worker = threading.Thread(target=self._run, name="songlake-current", daemon=False)
            self._worker.start()

    def _run(self) -> None:
        try:
            self.refreshed.append(refresh(self.tables, retention_hours=self.retention_hours))
        except Exception:  # derived data: a failure must not reach any write
            self.failures += 1
            log.exception("refreshing the current-state tables failed; they stay as they were")
        with self._lock:  # writes made during the refresh: the next one comes after the interval
            self._ended = self._last = time.monotonic()
            if self.timed and self._writes and self._timer is None:
                self._timer = threading.Timer(self.every_seconds, self._kick)
                self._timer.daemon = True
                self._timer.start()

    def settle(self) -> None:
        """Wait for a refresh in progress (tests, and a clean stop)."""
        with self._lock:
            timer, worker = self._timer, self._worker
        if timer is not None:
            timer.cancel()
        if worker is not None:
            worker.join()

    def status(self) -> dict[str, Any]:
        return {"refreshed": list(self.refreshed), "failures": self.failures}
