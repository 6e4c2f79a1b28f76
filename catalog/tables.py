"""The Delta Lake tables under ``<root>/tables``: their schemas, group commits and compaction.

Every table is append-only. A logical write (a batch of registrations, of state changes, ...)
appends to several tables, children first and the commit-point table last, then records one row in
``commits`` whose Delta version is the *catalog version* used by ``sql --as-of``; the versions of
every table at that moment travel in the commit's custom metadata.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import CommitProperties

from .errors import MalformedParameter, NotFound, WriteConflict
from .model import now
from .root import Location

TS = pa.timestamp("us", tz="UTC")
#: every append is made at the version its writer refreshed to: a concurrent commit is a conflict
#: for the writer to re-validate (write/commit.py), never silently re-based by deltalake
EXPECTED_RETRIES = 0
#: files at least this large are left alone by automatic compaction
COMPACT_TARGET_BYTES = 16 * 1024 * 1024
FULL_CHECK_EVERY = 60.0  # seconds: latest() lists a table's log at least this often
S = pa.string()

SCHEMAS: dict[str, pa.Schema] = {
    "studies": pa.schema(
        [
            ("study_id", S),
            ("name", S),
            ("organization", S),
            ("description", S),
            ("info", S),
            ("created_at", TS),
        ]
    ),
    "analysis_types": pa.schema(
        [("name", S), ("version", pa.int32()), ("schema", S), ("options", S), ("created_at", TS)]
    ),
    "donors": pa.schema(
        [
            ("donor_id", S),
            ("study_id", S),
            ("submitter_donor_id", S),
            ("gender", S),
            ("info", S),
            ("analysis_id", S),
            ("created_at", TS),
        ]
    ),
    "specimens": pa.schema(
        [
            ("specimen_id", S),
            ("donor_id", S),
            ("study_id", S),
            ("submitter_specimen_id", S),
            ("tumour_normal_designation", S),
            ("specimen_tissue_source", S),
            ("specimen_type", S),
            ("info", S),
            ("analysis_id", S),
            ("created_at", TS),
        ]
    ),
    "samples": pa.schema(
        [
            ("sample_id", S),
            ("specimen_id", S),
            ("study_id", S),
            ("submitter_sample_id", S),
            ("sample_type", S),
            ("matched_normal_submitter_sample_id", S),
            ("info", S),
            ("analysis_id", S),
            ("created_at", TS),
        ]
    ),
    "analyses": pa.schema(
        [
            ("analysis_id", S),
            ("study_id", S),
            ("version", pa.int32()),
            ("analysis_type_name", S),
            ("analysis_type_version", pa.int32()),
            ("data", S),
            ("created_at", TS),
            ("actor", S),
            ("reason", S),
        ]
    ),
    "analysis_samples": pa.schema(
        [("analysis_id", S), ("sample_id", S), ("study_id", S), ("created_at", TS)]
    ),
    "files": pa.schema(
        [
            ("object_id", S),
            ("analysis_id", S),
            ("study_id", S),
            ("version", pa.int32()),
            ("file_name", S),
            ("file_size", pa.int64()),
            ("file_type", S),
            ("file_md5sum", S),
            ("file_access", S),
            ("data_type", S),
            ("info", S),
            ("source_path", S),
            ("created_at", TS),
        ]
    ),
    "analysis_state_history": pa.schema(
        [
            ("event_id", S),
            ("analysis_id", S),
            ("study_id", S),
            ("initial_state", S),
            ("updated_state", S),
            ("updated_at", TS),
            ("actor", S),
            ("reason", S),
        ]
    ),
    "commits": pa.schema(
        [
            ("committed_at", TS),
            ("operation", S),
            ("actor", S),
            ("rows", pa.int64()),
            ("table_versions", S),
        ]
    ),
}

#: data tables (everything but the commit log), in the order a registration commits them
DATA_TABLES = [name for name in SCHEMAS if name != "commits"]


def _write_expected(dt: DeltaTable, data: pa.Table) -> None:
    """Append at the table's next version, or raise WriteConflict if another writer took it.

    Each append carries its own id in the commit's metadata. When the store's answer to the
    conditional put of the log entry is lost and the put is retried, the retry finds the version
    taken *by this very append*: that is a success, found by the id, not a conflict."""
    txn = uuid.uuid4().hex
    before = dt.version()
    props = CommitProperties(
        custom_metadata={"songlake.txn": txn}, max_commit_retries=EXPECTED_RETRIES
    )
    try:
        write_deltalake(dt, data, mode="append", commit_properties=props)
    except CommitFailedError as exc:
        if _committed(dt, before, txn):
            return
        raise WriteConflict(f"{dt.metadata().name} moved past version {before}") from exc


def _committed(dt: DeltaTable, before: int, txn: str) -> bool:
    """Whether a commit after version ``before`` carries the append id ``txn``."""
    dt.update_incremental()
    newer = dt.version() - before
    if newer <= 0:
        return False
    return any(entry.get("songlake.txn") == txn for entry in dt.history(newer))


def to_arrow(name: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Column-wise conversion of row dicts into the table's Arrow schema."""
    schema = SCHEMAS[name]
    arrays = [pa.array([r.get(f.name) for r in rows], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


class TableStore:
    """Opens, appends to and compacts the catalog's Delta tables."""

    def __init__(
        self,
        tables_dir: Location | Path | str,
        *,
        compact_after_files: int = 64,
        compact_target_bytes: int = COMPACT_TARGET_BYTES,
        vacuum_retention_hours: float | None = None,
    ) -> None:
        self.dir = tables_dir if isinstance(tables_dir, Location) else Location.parse(tables_dir)
        self.storage_options = self.dir.storage_options
        self.compact_after_files = compact_after_files
        self.compact_target_bytes = compact_target_bytes
        #: after a compaction, files it replaced this long ago are deleted (None: never)
        self.vacuum_retention_hours = vacuum_retention_hours
        self._tables: dict[str, DeltaTable] = {}
        self._file_counts: dict[str, int] = {}
        self._compacted_at: dict[str, int] = {}
        self._listed_at: dict[str, float] = {}  # when latest() last listed a table's log
        self._lock = threading.Lock()
        # a writer under the catalog-wide lease must not spend seconds compacting: the Committer
        # sets this, and compacts the tables that came due after it let the lease go
        self.deferred_compaction = False
        self._due: set[str] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    def create_all(self) -> None:
        if self.dir.path is not None:
            self.dir.path.mkdir(parents=True, exist_ok=True)
        for name, schema in SCHEMAS.items():
            if not self._has_log(name):
                DeltaTable.create(
                    self.uri(name),
                    schema,
                    name=name,
                    mode="ignore",
                    storage_options=self.storage_options,
                )

    def exists(self) -> bool:
        return all(self._has_log(n) for n in SCHEMAS)

    def _has_log(self, name: str) -> bool:
        # not DeltaTable.is_deltatable: on S3 that call can hang for its whole retry timeout
        # (deltalake 1.6 against moto)
        return bool(self.dir.list(name, "_delta_log"))

    def uri(self, name: str) -> str:
        """Where a table lives: a local path or an ``s3://`` URI."""
        return self.dir.uri(name)

    def open(self, name: str, version: int | None = None) -> DeltaTable:
        """A new handle on a table (at a version), outside this store's cache."""
        return DeltaTable(self.uri(name), version=version, storage_options=self.storage_options)

    def table(self, name: str) -> DeltaTable:
        dt = self._tables.get(name)
        if dt is None:
            try:
                dt = self.open(name)
            except TableNotFoundError as exc:
                raise NotFound(
                    f"No catalog table '{name}' under {self.dir}: run 'songlake init' first",
                ) from exc
            self._tables[name] = dt
            self._file_counts[name] = len(dt.file_uris())
        return dt

    def latest(self, name: str) -> DeltaTable:
        """The table brought up to its newest version, if another writer committed since.

        ``update_incremental`` lists the Delta log even when nothing changed (about 10 ms under
        load, twice per table per registration batch); every commit adds
        ``_delta_log/<version + 1>.json``, so one stat says whether there is anything to load.
        Once a minute the log is listed anyway: a table left behind for longer than the log's
        retention would find its next entry cleaned up (and a checkpoint in its place)."""
        dt = self.table(name)
        now = time.monotonic()
        nxt = f"{dt.version() + 1:020d}.json"
        if now - self._listed_at.get(name, 0.0) >= FULL_CHECK_EVERY or self.dir.exists(
            name, "_delta_log", nxt
        ):
            dt.update_incremental()
            self._listed_at[name] = now
        return dt

    def version(self, name: str) -> int:
        return self.table(name).version()

    def versions(self) -> dict[str, int]:
        out = {}
        for name in SCHEMAS:
            out[name] = self.latest(name).version()
        return out

    # -- writes -------------------------------------------------------------------------------

    def append(self, name: str, rows: Sequence[Mapping[str, Any]] | pa.Table) -> int | None:
        """Append rows to one table in one commit; returns the new version (None if no rows)."""
        data = rows if isinstance(rows, pa.Table) else to_arrow(name, rows)
        if data.num_rows == 0:
            return None
        with self._lock:
            dt = self.table(name)
            _write_expected(dt, data)
            self._file_counts[name] = self._file_counts.get(name, 0) + 1
            version = dt.version()
            self._compact_if_due(name)
        return version

    def group_commit(
        self,
        batches: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
        *,
        operation: str,
        actor: str | None,
        metadata: Mapping[str, str] | None = None,
        versions: dict[str, int] | None = None,
    ) -> int:
        """Append to several tables in the given order, then record one catalog version;
        ``versions``, when given, receives the new version of each table appended to."""
        versions = {} if versions is None else versions
        total = 0
        for name, rows in batches:
            version = self.append(name, rows)
            if version is not None:
                versions[name] = version
                total += len(rows)
        return self.log_commit(operation, actor, total, metadata=metadata)

    def log_commit(
        self,
        operation: str,
        actor: str | None,
        rows: int,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        current = {}
        for name in DATA_TABLES:
            current[name] = self.latest(name).version()
        record = {
            "committed_at": now(),
            "operation": operation,
            "actor": actor,
            "rows": rows,
            "table_versions": json.dumps(current, sort_keys=True),
        }
        with self._lock:
            dt = self.table("commits")
            custom = {**(metadata or {}), "songlake.table_versions": record["table_versions"]}
            # after the commit point: the write is visible already, so this row must land even if
            # a compaction took the next version meanwhile (Delta re-bases a blind append)
            write_deltalake(
                dt,
                to_arrow("commits", [record]),
                mode="append",
                commit_properties=CommitProperties(custom_metadata=custom),
            )
            self._file_counts["commits"] = self._file_counts.get("commits", 0) + 1
            version = dt.version()
            self._compact_if_due("commits")
        return version

    # -- maintenance --------------------------------------------------------------------------

    def _compact_locked(self, name: str) -> None:
        # Only files under compact_target_bytes are rewritten: once a table is large its big
        # files stay put, so a compaction costs the small files' size, not the table's.
        dt = self.table(name)
        dt.optimize.compact(target_size=self.compact_target_bytes)
        dt.update_incremental()
        self._file_counts[name] = len(dt.file_uris())
        self._compacted_at[name] = self._file_counts[name]
        self._vacuum_if_set(name)

    def _vacuum_if_set(self, name: str) -> None:
        if self.vacuum_retention_hours is not None:
            self.vacuum(name, self.vacuum_retention_hours)

    def vacuum(self, name: str, retention_hours: float) -> list[str]:
        """Delete the files of table ``name`` (a history or current-state table) that a
        compaction or rewrite removed from it over ``retention_hours`` ago; returns them.
        A reader of an older version then finds them gone: ``versions_as_of`` refuses those."""
        dt = self.open(name)
        hours = int(retention_hours)
        candidates = dt.vacuum(retention_hours=hours, enforce_retention_duration=False)
        # deltalake lists tombstones whose files are gone already: skip the VACUUM commits then
        if not any(self.dir.exists(name, *path.split("/")) for path in candidates):
            return []
        removed: list[str] = dt.vacuum(
            retention_hours=hours,
            dry_run=False,
            enforce_retention_duration=False,
            commit_properties=CommitProperties(max_commit_retries=5),
        )
        return removed

    def _needs_compaction(self, name: str) -> bool:
        added = self._file_counts.get(name, 0) - self._compacted_at.get(name, 0)
        return added >= self.compact_after_files

    def _compact_if_due(self, name: str) -> None:
        if self._needs_compaction(name):
            if self.deferred_compaction:
                self._due.add(name)
            else:
                self._compact_locked(name)

    @property
    def compaction_due(self) -> bool:
        return bool(self._due)

    def compact_due(self) -> list[str]:
        """Compact the tables that came due, each through its own DeltaTable so that writers go
        on meanwhile: compaction only rewrites files (``dataChange: false``), which Delta lets
        commit beside concurrent appends; a writer whose expected version the compaction took
        re-validates (write/commit.py). Returns the tables compacted."""
        with self._lock:
            names = sorted(self._due)
            self._due.clear()
        for name in names:
            dt = self.open(name)
            dt.optimize.compact(target_size=self.compact_target_bytes)
            with self._lock:
                self._file_counts[name] = len(dt.file_uris())
                self._compacted_at[name] = self._file_counts[name]
            self._vacuum_if_set(name)
        return names

    def compact(self, name: str | None = None) -> dict[str, int]:
        """Compact one table or all of them; returns the file count of each afterwards."""
        names = [name] if name else list(SCHEMAS)
        with self._lock:
            for n in names:
                self._compact_locked(n)
        return {n: self._file_counts[n] for n in names}

    def file_count(self, name: str) -> int:
        self.table(name)
        return self._file_counts[name]

    def delete_where_in(self, name: str, column: str, values: Sequence[str]) -> int:
        """Delete rows whose column is in values (a rewrite commit); returns rows deleted."""
        deleted = 0
        with self._lock:
            dt = self.table(name)
            for start in range(0, len(values), 500):
                chunk = values[start : start + 500]
                quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in chunk)
                metrics = dt.delete(f"{column} IN ({quoted})")
                deleted += int(metrics.get("num_deleted_rows", 0) or 0)
            self._file_counts[name] = len(dt.file_uris())
        return deleted

    # -- reads --------------------------------------------------------------------------------

    def dataset(self, name: str, version: int | None = None) -> pads.Dataset:
        """The table (at a version) as an Arrow dataset over its Parquet files.

        Built from the file list rather than ``DeltaTable.to_pyarrow_dataset()``: scanning through
        deltalake's Python filesystem handler aborts the interpreter at exit now and then
        (deltalake 1.6, "terminate called without an active exception"). Our tables use no
        deletion vectors or column mapping, so the file list is the whole truth.
        """
        dt = self.latest(name) if version is None else self.table(name)
        if version is not None and dt.version() != version:
            dt = self.open(name, version)
        fs, _ = self.dir.filesystem()
        paths = [self.dir.fs_path(u) for u in dt.file_uris()]
        return pads.dataset(paths, schema=SCHEMAS[name], format="parquet", filesystem=fs)

    def read(self, name: str, version: int | None = None) -> pa.Table:
        return self.dataset(name, version).to_table()

    def versions_as_of(self, as_of: str, *, retention_hours: float | None = None) -> dict[str, int]:
        """Map a catalog version (integer) or a time (ISO-8601) to a version of every table.

        With ``retention_hours`` (the ``vacuum_retention`` setting), a state that was replaced
        longer ago than that is refused: vacuum may have deleted its files."""
        commits = self.table("commits")
        commits.update_incremental()
        if retention_hours is not None:
            self._check_retention(commits, as_of, retention_hours)
        text = as_of.strip()
        if text.isdigit():
            wanted = int(text)
            if wanted < 1 or wanted > commits.version():
                raise MalformedParameter(
                    f"Catalog version {wanted} does not exist (latest is {commits.version()})",
                    name="as_of",
                    value=as_of,
                )
            for entry in commits.history():
                if entry.get("version") == wanted:
                    return json.loads(entry["songlake.table_versions"])
            raise MalformedParameter(
                f"Catalog version {wanted} has no recorded table versions",
                name="as_of",
                value=as_of,
            )
        try:
            when = datetime.fromisoformat(text)
        except ValueError as exc:
            raise MalformedParameter(
                f"--as-of takes a catalog version (integer) or an ISO-8601 time, not {as_of!r}",
                name="as_of",
                value=as_of,
            ) from exc
        if when.tzinfo is None:
            when = when.astimezone()
        out = {}
        for name in DATA_TABLES:
            dt = self.open(name)
            try:
                dt.load_as_version(when)
            except Exception as exc:  # deltalake raises a generic error before the first commit
                raise MalformedParameter(
                    f"The catalog has no state as of {as_of}: {exc}", name="as_of", value=as_of
                ) from exc
            out[name] = dt.version()
        return out

    def _check_retention(self, commits: DeltaTable, as_of: str, retention_hours: float) -> None:
        """Refuse a catalog version (or time) older than the retention, unless it is the latest
        state: a later commit replaced it over ``retention_hours`` ago."""
        text = as_of.strip()
        horizon = time.time() - retention_hours * 3600
        if text.isdigit():
            wanted = int(text)
            if wanted >= commits.version():
                return
            stamp = next(
                (e.get("timestamp") for e in commits.history() if e.get("version") == wanted),
                None,
            )
            old = stamp is not None and stamp / 1000 < horizon
        else:
            try:
                when = datetime.fromisoformat(text)
            except ValueError:
                return  # said precisely by versions_as_of
            if when.tzinfo is None:
                when = when.astimezone()
            newest = commits.history(1)[0].get("timestamp") or 0
            old = when.timestamp() < horizon and when.timestamp() < newest / 1000
        if old:
            raise MalformedParameter(
                f"--as-of {as_of} is older than the vacuum_retention of {retention_hours:g} "
                "hours: the files of that state may have been vacuumed (a later version, or a "
                "longer vacuum_retention, reaches it)",
                name="as_of",
                value=as_of,
            )
