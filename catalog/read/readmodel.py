"""The read model: Song's documents served from the catalog's current state, in step with Delta.

The state lives in one SQLite file per machine (``index.py``), shared by every process: opening a
catalog opens that file, whatever its size, and reads what a request needs through a memory map.
Point reads (an analysis, a file, a donor by id) are primary-key lookups; pages sorted by
analysisId are index ranges per study and state; counts by state are kept as counters; id search
by submitter id goes through a trigram index (reference/limits.md B7: a Parquet scan per request
is ~300x slower than PostgreSQL).

Keeping up. ``refresh`` reads the newest catalog version recorded in the ``commits`` table (the
version of every data table after the last complete write) and applies, in one SQLite
transaction, the rows the Delta log added since the version the file reflects: only the files a
commit added with ``dataChange``, so compaction is not re-read. Whoever gets there first (any
process on the machine) applies them; the others find the file up to date. A process's own
commits are applied directly after they commit. Applying is idempotent and independent of order,
so reading a commit twice is harmless.

Visibility (DESIGN invariant 1): donors, specimens, samples, files and sample links are applied
only with an analysis that committed. Rows a crashed write left behind are never applied; the
write's retry commits its rows again, under the same analysis ids.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..tables import TableStore
from . import index
from .documents import Documents
from .index import STAGE_COLUMNS
from .records import (
    MODEL_TABLES,
)
from .views import Analyses, Entities, Links, Md5s, Studies, StudyIds

log = logging.getLogger("songlake.readmodel")

#: the commit-log metadata in which TableStore.log_commit records every table's version
TABLE_VERSIONS_KEY = "songlake.table_versions"
_LITERAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-: ")
BATCH_ROWS = 50_000  # rows per staging batch when a whole table is applied


class ReadLock:
    """``with model.lock:`` — this process' threads take turns, and the thread reads one
    consistent version of the file for the whole block (an SQLite read transaction), even while
    another process applies a commit."""

    def __init__(self, model: ReadModel) -> None:
        self.model = model
        self.rlock = threading.RLock()
        self._depth = threading.local()

    def __enter__(self) -> ReadLock:
        self.rlock.acquire()
        depth = getattr(self._depth, "n", 0)
        self._depth.n = depth + 1
        if depth == 0:
            con = self.model.con()
            if not con.in_transaction:
                con.execute("BEGIN")
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth.n -= 1
        try:
            if self._depth.n == 0:
                con = self.model.con()
                if con.in_transaction:
                    con.execute("COMMIT")
        finally:
            self.rlock.release()

    def acquire(self) -> None:
        self.__enter__()

    def release(self) -> None:
        self.__exit__()


class ReadModel(Documents):
    """The catalog's current state for one process, read from this machine's shared file."""

    def __init__(self, tables: TableStore, folder: Path) -> None:
        self.tables = tables
        self.generations = index.Generations(folder)
        self.lock = ReadLock(self)
        self._local = threading.local()
        self._connections: list[Any] = []
        self._generation: int | None = None
        self._seen: dict[str, int] = {}  # the version of each table this process has seen
        self._commits_seen = -1
        self._recorded_versions: dict[str, int] = {}
        self._codes: dict[int, str] = {}  # study code -> study id
        self._known_studies: set[str] = set()
        self._applies = 0
        self._checkpointing = threading.Event()
        self._apply_max = 0.0
        self.rebuilds = 0  # generations this process built (first open, or an unusable file)
        # called with (table, row) for every row applied after load (search.py's index)
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.analyses = Analyses(self)
        self.studies = Studies(self)
        self.donors = Entities(self, "donors")
        self.specimens = Entities(self, "specimens")
        self.samples = Entities(self, "samples")
        self.files = Entities(self, "files")
        self.md5s = Md5s(self)
        self.sample_analyses = Links(self, "SELECT analysis_id FROM links WHERE sample_id = ?")
        self.donor_specimens = Links(self, "SELECT specimen_id FROM specimens WHERE donor_id = ?")
        self.specimen_samples = Links(self, "SELECT sample_id FROM samples WHERE specimen_id = ?")
        self.by_study = StudyIds(self)

    # -- the file ------------------------------------------------------------------------------

    def con(self) -> Any:
        """This thread's connection to the generation in use."""
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            old = getattr(local, "con", None)
            if old is not None:
                old.close()  # a generation this process left (a read in progress rolls back)
            local.con = index.connect(self.generations.path(self._require_generation()))
            index.create_stage(local.con)
            local.generation = self._generation
            self._connections.append(local.con)
        return local.con

    def _require_generation(self) -> int:
        if self._generation is None:
            raise RuntimeError("the read model is not open: call load() first")
        return self._generation

    @property
    def path(self) -> Path | None:
        return None if self._generation is None else self.generations.path(self._generation)

    def identity(self) -> str:
        """The catalog's identity: the id Delta gave its ``commits`` table when it was made."""
        return str(self.tables.table("commits").metadata().id)

    def load(self) -> None:
        """Open this machine's file (building it when missing or unusable), then catch up."""
        identity = self.identity()
        generation = self.generations.current()
        problem = None if generation is None else self._check(generation, identity)
        if generation is None or problem is not None:
            if problem is not None:
                log.warning(
                    "read model %s is unusable (%s): rebuilding it from the history tables",
                    self.generations.path(generation or 0),
                    problem,
                )
            generation = self._build(identity, bad=generation)
        self._use(generation)
        self._seen = index.cut_of(index.read_meta(self.con()))
        self.refresh()

    def _use(self, generation: int) -> None:
        self.generations.hold(generation)
        self._generation = generation
        self.generations.release_others(generation)
        self.generations.cleanup(generation)  # e.g. a build a crash cut short
        self._codes = {}

    def _check(self, generation: int, identity: str) -> str | None:
        """Why a generation cannot be used, or None (constant time: header and meta only)."""
        path = self.generations.path(generation)
        problem = index.header_problem(path)
        if problem is not None:
            return problem
        try:
            con = index.connect(path)
            try:
                meta = index.read_meta(con)
            finally:
                con.close()
        except index.sqlite3.DatabaseError as exc:
            return f"{path}: {exc}"
        if meta.get("schema") != index.SCHEMA_VERSION:
            return f"schema {meta.get('schema')}, this songlake reads {index.SCHEMA_VERSION}"
        if meta.get("identity") != identity:
            return f"it belongs to another catalog ({meta.get('identity')}, this is {identity})"
        if meta.get("complete") != "1":
            return "its build never finished"
        return None

    def _build(self, identity: str, *, bad: int | None) -> int:
        """Build the next generation from the history tables, then switch to it."""
        fd = self.generations.build_lock()
        try:
            current = self.generations.current()
            if current is not None and current != bad and self._check(current, identity) is None:
                return current  # another process built it while this one waited
            generation = self.generations.next_generation()
            path = self.generations.path(generation)
            started = time.monotonic()
            con = index.new_database(path, identity)
            self.generations.hold(generation)  # cleanup leaves a build in progress alone
            self._commits_seen = -1
            recorded = self._recorded()
            for name in MODEL_TABLES:
                self._apply_whole(con, name)
            index.set_cut(con, recorded)
            con.execute("INSERT INTO meta VALUES ('complete', '1')")
            index.finish_database(con)
            self.generations.publish(generation)
            self.rebuilds += 1
            log.info(
                "read model generation %d built in %.1f s (%s)",
                generation,
                time.monotonic() - started,
                path,
            )
            return generation
        finally:
            index.os.close(fd)

    def check_integrity(self) -> bool:
        """SQLite's full structure check of the file in use (seconds per GB: serve runs it in
        the background); an unusable file is rebuilt. True when the file was fine."""
        con = index.connect(self.generations.path(self._require_generation()))
        try:
            result = con.execute("PRAGMA quick_check").fetchone()[0]
        except index.sqlite3.DatabaseError as exc:
            result = str(exc)
        finally:
            con.close()
        if result == "ok":
            return True
        log.warning("read model %s failed its check (%s): rebuilding it", self.path, result)
        self.rebuild()
        return False

    def corrupt(self, exc: Exception) -> None:
        """A query met a damaged page: rebuild the file from the history tables."""
        log.warning("read model %s is corrupt (%s): rebuilding it from the history tables",
                    self.path, exc)  # fmt: skip
        self.rebuild()

    def rebuild(self) -> None:
        """Build a new generation from the history tables and switch this process to it."""
        with self.lock.rlock:
            generation = self._build(self.identity(), bad=self._generation)
            self._use(generation)
            self._seen = index.cut_of(index.read_meta(self.con()))
            self._commits_seen = -1

    def close(self) -> None:
        for con in self._connections:
            try:
                con.close()
            except Exception:  # noqa: BLE001, S110 - closing at exit, from another thread
                pass
        self._connections.clear()
        self._local = threading.local()

    # -- keeping up -----------------------------------------------------------------------------

    def _recorded(self) -> dict[str, int]:
        """Every model table's version at the newest recorded catalog version (the versions the
        last complete write's ``commits`` row names); read again only when ``commits`` moved."""
        commits = self.tables.latest("commits")
        version = commits.version()
        if version == self._commits_seen:
            return self._recorded_versions
        found: dict[str, int] = {}
        for limit in (1, 32, None):
            for entry in commits.history(limit):
                text = entry.get(TABLE_VERSIONS_KEY)
                if isinstance(text, str):
                    versions = json.loads(text)
                    found = {n: int(versions[n]) for n in MODEL_TABLES if n in versions}
                    break
            if found:
                break
        self._commits_seen, self._recorded_versions = version, found
        return found

    def refresh(self) -> bool:
        """Apply what other processes committed since the last version seen; True if anything.

        Rows up to each table's newest version are applied (a commit is visible as soon as its
        analyses or history row is), but the file records as applied only the versions of the
        last complete write: rows of a write still in progress whose analysis has not committed
        yet are skipped now and read again next time."""
        if self.generations.current() not in (None, self._generation):
            self._switch()
        latest = {name: self.tables.latest(name).version() for name in MODEL_TABLES}
        with self.lock.rlock:
            return self._catch_up(latest, self._recorded())

    def _switch(self) -> None:
        """Another process built a newer generation (this one was unusable): use it."""
        with self.lock.rlock:
            generation = self.generations.current()
            if generation is not None and self._check(generation, self.identity()) is None:
                log.info("read model: switching to generation %d", generation)
                self._use(generation)

    def _catch_up(self, latest: dict[str, int], recorded: dict[str, int]) -> bool:
        con = self.con()
        cut = index.cut_of(index.read_meta(con))
        listen = bool(self.listeners)
        plan: dict[str, tuple[int, int]] = {}
        for name, upto in latest.items():
            have = cut.get(name, -1)
            low = min(have, self._seen.get(name, have)) if listen else have
            if upto > low:
                plan[name] = (low, upto)
        if not plan:
            return False
        # read the new rows first, outside the file's write lock
        read: dict[str, list[tuple[int, pa.Table]] | None] = {}
        for name, (low, upto) in plan.items():
            read[name] = None if low < 0 else self._added(name, low, upto)
        changed = False
        with self._writing() as con:
            cut = index.cut_of(index.read_meta(con))  # another process may have applied some
            moved = {}
            for name, (_, upto) in plan.items():
                have = cut.get(name, -1)
                parts = read[name]
                if parts is None and have < upto:
                    self._apply_whole(con, name)
                    changed = True
                for version, table in parts or ():
                    if version > have:
                        index.apply(con, name, _tuples(name, table))
                        changed = True
                done = min(upto, recorded.get(name, -1))
                if done > have:
                    moved[name] = done
            index.set_cut(con, moved)
        if listen:
            for name in plan:
                seen = self._seen.get(name, -1)
                for version, table in read[name] or ():
                    if version > seen:
                        self._notify(name, table.to_pylist())
        for name, (_, upto) in plan.items():
            self._seen[name] = max(self._seen.get(name, -1), upto)
        return changed or listen

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        """One write transaction on the file (its lock taken at once, so applies of several
        processes queue rather than fail); committed whole, or rolled back; timed."""
        con = self.con()
        if con.in_transaction:  # a read block of this thread: end it to write
            con.execute("COMMIT")
        started = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._applied(started)

    def _added(self, name: str, after: int, upto: int) -> list[tuple[int, pa.Table]] | None:
        """The rows each commit after..upto added (dataChange), by version; None when the log
        or a data file is gone (cleaned or vacuumed): the whole table is applied instead."""
        out = []
        fs, base = self.tables.dir.filesystem()
        columns = list(STAGE_COLUMNS[name])
        for version in range(after + 1, upto + 1):
            try:
                log_bytes = self.tables.dir.read_bytes(name, "_delta_log", f"{version:020d}.json")
            except FileNotFoundError:
                return None
            for line in filter(None, log_bytes.split(b"\n")):  # not str.splitlines(): U+2028
                action = json.loads(line)
                add = action.get("add")
                if add and add.get("dataChange", True):
                    try:
                        table = pq.read_table(
                            f"{base}/{name}/{add['path']}", filesystem=fs, columns=columns
                        )
                    except FileNotFoundError:
                        return None
                    out.append((version, table))
        return out

    def _apply_whole(self, con: Any, name: str) -> None:
        """Apply every row of a table's newest version, in batches (a build, or a log cleaned
        up): rows of a write still in progress are either visible already (its analysis
        committed) or skipped now and read from the log later."""
        dataset = self.tables.dataset(name)
        columns = list(STAGE_COLUMNS[name])
        filters: list[Any] = [None]
        if name == "analyses":  # first versions before updates, so every update finds its row
            filters = [pc.field("version") == 1, pc.field("version") > 1]
        done = 0
        for flt in filters:
            for batch in dataset.to_batches(columns=columns, filter=flt, batch_size=BATCH_ROWS):
                if batch.num_rows:
                    index.apply(con, name, _tuples(name, pa.Table.from_batches([batch])))
                    done += batch.num_rows
        if done > 200_000:
            log.info("read model: applied %s rows of %s", f"{done:,}", name)

    def _notify(self, name: str, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            for listener in list(self.listeners):
                listener(name, row)

    # -- applying this process' own rows ----------------------------------------------------------

    def apply_commit(self, batches: dict[str, list[dict[str, Any]]], versions: dict[str, int]):
        """Apply the rows of a commit this process just made, and record the versions it made
        when they follow the file's (otherwise a refresh reads them again, harmlessly)."""
        with self.lock.rlock:
            with self._writing() as con:
                cut = index.cut_of(index.read_meta(con))
                moved = {}
                for name in MODEL_TABLES:
                    rows = batches.get(name)
                    if not rows:
                        continue
                    index.apply(con, name, index.staged(name, rows))
                    version = versions.get(name)
                    if version is not None and cut.get(name) == version - 1:
                        moved[name] = version
                index.set_cut(con, moved)
            for name in MODEL_TABLES:
                rows = batches.get(name)
                if rows:
                    self._notify(name, rows)
                version = versions.get(name)
                if version is not None and self._seen.get(name) == version - 1:
                    self._seen[name] = version

    def apply_rows(self, name: str, rows: Iterable[dict[str, Any]]) -> None:
        """Apply rows of one table (idempotent; rows of an analysis not committed are skipped)."""
        rows = list(rows)
        with self.lock.rlock:
            with self._writing() as con:
                index.apply(con, name, index.staged(name, rows))
            self._notify(name, rows)

    def mark_seen(self, name: str, version: int | None) -> None:
        """The rows of `version` were applied by apply_rows: skip re-reading them if contiguous."""
        if version is None:
            return
        with self.lock.rlock:
            with self._writing() as con:
                if index.cut_of(index.read_meta(con)).get(name) == version - 1:
                    index.set_cut(con, {name: version})
            if self._seen.get(name) == version - 1:
                self._seen[name] = version

    def apply_stats(self) -> dict[str, Any]:
        """How many commits this process applied to the file, and the longest (the time the
        file's write lock was held: readers never wait for it, other writers' applies do)."""
        return {"applies": self._applies, "applyMaxMs": round(self._apply_max * 1000, 1)}

    def _applied(self, started: float) -> None:
        self._applies += 1
        self._apply_max = max(self._apply_max, time.perf_counter() - started)
        self._checkpoint_soon()

    def _checkpoint_soon(self) -> None:
        """Copy the write-ahead log back into the file in a background thread once it is large
        (a passive checkpoint: readers and writers go on meanwhile)."""
        path = self.path
        if path is None or self._checkpointing.is_set():
            return
        try:
            size = Path(f"{path}-wal").stat().st_size
        except FileNotFoundError:
            return
        if size < index.CHECKPOINT_BYTES:
            return
        self._checkpointing.set()

        def run() -> None:
            try:
                con = index.connect(path)
                try:
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)")
                finally:
                    con.close()
            except index.sqlite3.Error:
                log.exception("read model checkpoint of %s failed", path)
            finally:
                self._checkpointing.clear()

        threading.Thread(target=run, name="songlake-readmodel-checkpoint", daemon=True).start()

    @property
    def versions(self) -> dict[str, int]:
        """The version of each table the file reflects."""
        return index.cut_of(index.read_meta(self.con()))


def _tuples(name: str, table: pa.Table) -> list[tuple[Any, ...]]:
    """An Arrow table as staging tuples (times as microseconds), a column at a time."""
    columns = []
    for col_name in STAGE_COLUMNS[name]:
        col = table.column(col_name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us", tz=col.type.tz)).cast(pa.int64())
        columns.append(col.to_pylist())
    return list(zip(*columns, strict=True))
