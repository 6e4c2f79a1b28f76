"""The read model's file: the catalog's current state in one SQLite database per machine.

Every process on a machine (``serve``, ``watch``, each CLI command) opens the same file, so opening
costs the same at a hundred analyses or ten million: nothing is loaded, the pages are read on
demand through a memory map and shared between processes by the page cache. The file says which
version of every Delta table it reflects (``cut:<table>`` in ``meta``); a process brings it up to
the newest commit by applying only the rows committed since (``ReadModel.refresh``), inside one
SQLite transaction, so a reader never sees half of a commit and a crash leaves the previous state.

Rows are applied set-wise: a batch goes into a temporary staging table and a few ``INSERT ...
SELECT`` statements apply Song's rules (a child row is visible once its analysis is; the earliest
row of a donor, specimen or sample wins; the newest version of a file or an analysis wins; a file
tombstone deletes older versions). Every rule is idempotent and independent of row order, so
applying a commit twice, or a whole table again, changes nothing.

Generations. The database lives in ``<state>/readmodel/<generation>.sqlite``; ``CURRENT`` names the
one in use. A rebuild (first open, a file from another catalog, an older schema, corruption) writes
the next generation beside it and switches ``CURRENT`` last, so a crash mid-build leaves the
previous file in use and nothing half-written is ever opened. Each process holds a shared lock on
the generation it has open; a generation nobody holds any more is deleted.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..model import STATES

log = logging.getLogger("songlake.readmodel")

#: bumped when the tables below change: an older file is rebuilt
SCHEMA_VERSION = "3"
STATE_CODE = {s: i for i, s in enumerate(STATES)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MMAP_BYTES = 1 << 40  # map as much of the file as there is: reads are page-cache hits
CHECKPOINT_BYTES = 64 << 20  # a write-ahead log this large is copied back in the background

SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE studies(
  code INTEGER PRIMARY KEY, study_id TEXT UNIQUE NOT NULL, name TEXT, organization TEXT,
  description TEXT, info TEXT, created_at INTEGER);
CREATE TABLE analyses(
  analysis_id TEXT PRIMARY KEY, study INTEGER NOT NULL, state INTEGER NOT NULL,
  type_name TEXT, type_version INTEGER, version INTEGER NOT NULL, data TEXT,
  created_at INTEGER, data_updated_at INTEGER, state_updated_at INTEGER);
-- pages sorted by analysisId: per study and state, and per study (with the state, for two)
CREATE TABLE ord(study INTEGER, state INTEGER, analysis_id TEXT,
  PRIMARY KEY (study, state, analysis_id)) WITHOUT ROWID;
CREATE TABLE by_study(study INTEGER, analysis_id TEXT, state INTEGER,
  PRIMARY KEY (study, analysis_id)) WITHOUT ROWID;
CREATE TABLE counts(study INTEGER, state INTEGER, n INTEGER NOT NULL,
  PRIMARY KEY (study, state)) WITHOUT ROWID;
-- how many analyses of a study and state have ids starting with each 3-character prefix: a page
-- at offset N starts in the bucket where the running total passes N, so the index range skipped
-- row by row is one bucket's, not N rows
CREATE TABLE buckets(study INTEGER, state INTEGER, bucket TEXT, n INTEGER NOT NULL,
  PRIMARY KEY (study, state, bucket)) WITHOUT ROWID;
CREATE TRIGGER ord_in AFTER INSERT ON ord BEGIN
  INSERT INTO counts VALUES (new.study, new.state, 1)
    ON CONFLICT (study, state) DO UPDATE SET n = n + 1;
  INSERT INTO buckets VALUES (new.study, new.state, substr(new.analysis_id, 1, 3), 1)
    ON CONFLICT (study, state, bucket) DO UPDATE SET n = n + 1; END;
CREATE TRIGGER ord_out AFTER DELETE ON ord BEGIN
  UPDATE counts SET n = n - 1 WHERE study = old.study AND state = old.state;
  UPDATE buckets SET n = n - 1
    WHERE study = old.study AND state = old.state AND bucket = substr(old.analysis_id, 1, 3);
  END;
CREATE TABLE history(
  event_id TEXT PRIMARY KEY, analysis_id TEXT NOT NULL, initial_state TEXT, updated_state TEXT,
  updated_at INTEGER, actor TEXT, reason TEXT) WITHOUT ROWID;
CREATE INDEX history_of ON history(analysis_id, updated_at);
CREATE TABLE donors(
  donor_id TEXT PRIMARY KEY, study_id TEXT, submitter_donor_id TEXT, gender TEXT, info TEXT,
  created_at INTEGER);
CREATE TABLE specimens(
  specimen_id TEXT PRIMARY KEY, donor_id TEXT, study_id TEXT, submitter_specimen_id TEXT,
  tumour_normal_designation TEXT, specimen_tissue_source TEXT, specimen_type TEXT, info TEXT,
  created_at INTEGER);
CREATE INDEX specimens_of ON specimens(donor_id);
CREATE TABLE samples(
  sample_id TEXT PRIMARY KEY, specimen_id TEXT, study_id TEXT, submitter_sample_id TEXT,
  sample_type TEXT, matched_normal_submitter_sample_id TEXT, info TEXT, created_at INTEGER);
CREATE INDEX samples_of ON samples(specimen_id);
CREATE TABLE files(
  object_id TEXT PRIMARY KEY, analysis_id TEXT, study_id TEXT, version INTEGER, file_name TEXT,
  file_size INTEGER, file_type TEXT, file_md5sum TEXT, file_access TEXT, data_type TEXT,
  info TEXT, source_path TEXT);
CREATE INDEX files_of ON files(analysis_id);
CREATE INDEX files_md5 ON files(file_md5sum);
CREATE INDEX files_study ON files(study_id);
CREATE TABLE tombstones(object_id TEXT PRIMARY KEY, version INTEGER) WITHOUT ROWID;
CREATE TABLE links(analysis_id TEXT, sample_id TEXT, PRIMARY KEY (analysis_id, sample_id))
  WITHOUT ROWID;
CREATE INDEX links_of ON links(sample_id, analysis_id);
"""

#: entity table -> its submitter-id column, searched through a trigram index (Song's id search is
#: an unanchored, case-insensitive regex; a plain substring is answered from the index)
SUBMITTER_COLUMNS = {
    "donors": "submitter_donor_id",
    "specimens": "submitter_specimen_id",
    "samples": "submitter_sample_id",
}
for _t, _c in SUBMITTER_COLUMNS.items():
    SCHEMA += f"""
CREATE INDEX {_t}_study ON {_t}(study_id);
CREATE VIRTUAL TABLE {_t}_fts USING fts5({_c}, content='{_t}', content_rowid='rowid',
  tokenize='trigram', detail='none');
CREATE TRIGGER {_t}_fts_in AFTER INSERT ON {_t} BEGIN
  INSERT INTO {_t}_fts(rowid, {_c}) VALUES (new.rowid, new.{_c}); END;
CREATE TRIGGER {_t}_fts_up AFTER UPDATE ON {_t} BEGIN
  INSERT INTO {_t}_fts({_t}_fts, rowid, {_c}) VALUES ('delete', old.rowid, old.{_c});
  INSERT INTO {_t}_fts(rowid, {_c}) VALUES (new.rowid, new.{_c}); END;
"""

#: model table -> the Delta columns staged for it, in order (timestamps as microseconds)
STAGE_COLUMNS: dict[str, tuple[str, ...]] = {
    "studies": ("study_id", "name", "organization", "description", "info", "created_at"),
    "analyses": (
        "analysis_id",
        "study_id",
        "analysis_type_name",
        "analysis_type_version",
        "version",
        "data",
        "created_at",
    ),
    "donors": ("donor_id", "study_id", "submitter_donor_id", "gender", "info", "analysis_id")
    + ("created_at",),
    "specimens": (
        "specimen_id",
        "donor_id",
        "study_id",
        "submitter_specimen_id",
        "tumour_normal_designation",
        "specimen_tissue_source",
        "specimen_type",
        "info",
        "analysis_id",
        "created_at",
    ),
    "samples": (
        "sample_id",
        "specimen_id",
        "study_id",
        "submitter_sample_id",
        "sample_type",
        "matched_normal_submitter_sample_id",
        "info",
        "analysis_id",
        "created_at",
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
    "analysis_samples": ("analysis_id", "sample_id"),
    "analysis_state_history": (
        "event_id",
        "analysis_id",
        "initial_state",
        "updated_state",
        "updated_at",
        "actor",
        "reason",
    ),
}
TIME_COLUMNS = {"created_at", "updated_at"}

_VISIBLE = "EXISTS (SELECT 1 FROM analyses a WHERE a.analysis_id = s.analysis_id)"


def _entity_sql(name: str) -> list[str]:
    cols = [c for c in STAGE_COLUMNS[name] if c != "analysis_id"]
    key = cols[0]
    names = ", ".join(cols)
    sets = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
    # the earliest row of an id wins (whatever order rows arrive in); WHERE true: SQLite's
    # upsert-after-SELECT parsing rule
    return [
        f"""INSERT INTO {name} ({names})
            SELECT {names} FROM stage_{name} s WHERE {_VISIBLE}
            ORDER BY created_at
            ON CONFLICT ({key}) DO UPDATE SET {sets}
            WHERE excluded.created_at < {name}.created_at"""
    ]


APPLY_SQL: dict[str, list[str]] = {
    "studies": [
        """INSERT INTO studies (study_id, name, organization, description, info, created_at)
           SELECT study_id, name, organization, description, info, created_at
           FROM stage_studies WHERE true ORDER BY created_at
           ON CONFLICT (study_id) DO UPDATE SET name = excluded.name,
             organization = excluded.organization, description = excluded.description,
             info = excluded.info, created_at = excluded.created_at
           WHERE studies.created_at IS NULL"""
    ],
    "analyses": [
        # a study unknown here (its row not applied yet) gets its code now
        """INSERT OR IGNORE INTO studies (study_id) SELECT DISTINCT study_id FROM stage_analyses""",
        """INSERT OR IGNORE INTO by_study (study, analysis_id, state)
           SELECT st.code, s.analysis_id, 0 FROM stage_analyses s JOIN studies st USING (study_id)
           WHERE s.version = 1 AND NOT EXISTS
             (SELECT 1 FROM analyses a WHERE a.analysis_id = s.analysis_id)""",
        """INSERT OR IGNORE INTO ord (study, state, analysis_id)
           SELECT st.code, 0, s.analysis_id FROM stage_analyses s JOIN studies st USING (study_id)
           WHERE s.version = 1 AND NOT EXISTS
             (SELECT 1 FROM analyses a WHERE a.analysis_id = s.analysis_id)""",
        """INSERT INTO analyses (analysis_id, study, state, type_name, type_version, version, data,
                                 created_at, data_updated_at)
           SELECT s.analysis_id, st.code, 0, s.analysis_type_name, s.analysis_type_version, 1,
                  s.data, s.created_at, s.created_at
           FROM stage_analyses s JOIN studies st USING (study_id) WHERE s.version = 1
           ON CONFLICT (analysis_id) DO NOTHING""",
        # updates (PUT/PATCH): the newest version wins
        """UPDATE analyses SET version = u.version, data = u.data, type_name = u.analysis_type_name,
                  type_version = u.analysis_type_version, data_updated_at = u.created_at
           FROM (SELECT analysis_id, max(version) AS version, data, analysis_type_name,
                        analysis_type_version, created_at
                 FROM stage_analyses WHERE version > 1 GROUP BY analysis_id) u
           WHERE analyses.analysis_id = u.analysis_id AND u.version > analyses.version""",
    ],
    "donors": _entity_sql("donors"),
    "specimens": _entity_sql("specimens"),
    "samples": _entity_sql("samples"),
    "files": [
        # a deletion (a row without file_name) removes the versions before it, for good
        f"""INSERT INTO tombstones (object_id, version)
            SELECT object_id, max(version) FROM stage_files s
            WHERE file_name IS NULL AND {_VISIBLE} GROUP BY object_id
            ON CONFLICT (object_id) DO UPDATE SET version = max(version, excluded.version)""",
        """DELETE FROM files WHERE object_id IN (
             SELECT t.object_id FROM stage_files s JOIN tombstones t USING (object_id)
             WHERE s.file_name IS NULL) AND version < (
             SELECT t.version FROM tombstones t WHERE t.object_id = files.object_id)""",
        f"""INSERT INTO files (object_id, analysis_id, study_id, version, file_name, file_size,
                               file_type, file_md5sum, file_access, data_type, info, source_path)
            SELECT object_id, analysis_id, study_id, max(version), file_name, file_size,
                   file_type, file_md5sum, file_access, data_type, info, source_path
            FROM stage_files s WHERE file_name IS NOT NULL AND {_VISIBLE} AND NOT EXISTS
              (SELECT 1 FROM tombstones t WHERE t.object_id = s.object_id
               AND t.version >= s.version)
            GROUP BY object_id
            ON CONFLICT (object_id) DO UPDATE SET version = excluded.version,
              file_name = excluded.file_name, file_size = excluded.file_size,
              file_type = excluded.file_type, file_md5sum = excluded.file_md5sum,
              file_access = excluded.file_access, data_type = excluded.data_type,
              info = excluded.info, source_path = excluded.source_path
            WHERE excluded.version > files.version""",
    ],
    "analysis_samples": [
        f"""INSERT OR IGNORE INTO links (analysis_id, sample_id)
            SELECT analysis_id, sample_id FROM stage_analysis_samples s WHERE {_VISIBLE}""",
    ],
    "analysis_state_history": [
        f"""INSERT OR IGNORE INTO history
            SELECT event_id, analysis_id, initial_state, updated_state, updated_at, actor, reason
            FROM stage_analysis_state_history s WHERE {_VISIBLE}""",
        # the state is the last change's (by time); its pages and counts move with it
        "DELETE FROM moved",
        """INSERT INTO moved (analysis_id, study, old, new, at)
           SELECT a.analysis_id, a.study, a.state,
             (SELECT CASE h.updated_state WHEN 'PUBLISHED' THEN 1 WHEN 'SUPPRESSED' THEN 2
                     ELSE 0 END FROM history h WHERE h.analysis_id = a.analysis_id
              ORDER BY h.updated_at DESC, h.event_id DESC LIMIT 1),
             (SELECT max(updated_at) FROM history h WHERE h.analysis_id = a.analysis_id)
           FROM analyses a
           WHERE a.analysis_id IN
             (SELECT DISTINCT analysis_id FROM stage_analysis_state_history)""",
        """DELETE FROM ord WHERE (study, state, analysis_id) IN
             (SELECT study, old, analysis_id FROM moved WHERE new IS NOT old)""",
        """INSERT OR IGNORE INTO ord (study, state, analysis_id)
           SELECT study, new, analysis_id FROM moved WHERE new IS NOT old""",
        """UPDATE by_study SET state = m.new FROM moved m
           WHERE by_study.study = m.study AND by_study.analysis_id = m.analysis_id
             AND m.new IS NOT m.old""",
        """UPDATE analyses SET state = m.new, state_updated_at = m.at FROM moved m
           WHERE analyses.analysis_id = m.analysis_id""",
    ],
}


def micros(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def staged(name: str, rows: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows as tuples of the staging table's columns (times as microseconds)."""
    cols = STAGE_COLUMNS[name]
    times = [i for i, c in enumerate(cols) if c in TIME_COLUMNS]
    out = []
    for row in rows:
        values = [row.get(c) for c in cols]
        for i in times:
            values[i] = micros(values[i])
        out.append(tuple(values))
    return out


def apply(con: sqlite3.Connection, name: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Apply staged rows of one model table (call inside a transaction)."""
    if not rows:
        return
    stage = f"stage_{name}"
    con.execute(f"DELETE FROM {stage}")
    marks = ", ".join("?" * len(STAGE_COLUMNS[name]))
    con.executemany(f"INSERT INTO {stage} VALUES ({marks})", rows)
    for statement in APPLY_SQL[name]:
        con.execute(statement)


def header_problem(path: Path) -> str | None:
    """What is wrong with a database file, found in constant time (SQLite's magic, and a size
    at least the page count its header records: a truncated copy fails here), or None."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(100)
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read {path}: {exc}"
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return f"{path} is not an SQLite database"
    page = int.from_bytes(header[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(header[28:32], "big")
    valid_for = int.from_bytes(header[92:96], "big")
    changed = int.from_bytes(header[24:28], "big")
    if valid_for == changed and pages * page > size:
        return f"{path} is truncated: {size:,} bytes, its header says {pages * page:,}"
    return None


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection for one thread: WAL (readers never wait for a writer), a memory map."""
    con = sqlite3.connect(
        f"file:{path}{'?mode=ro' if readonly else ''}",
        uri=True,
        timeout=60.0,
        isolation_level=None,
        check_same_thread=False,
    )
    con.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
    con.execute("PRAGMA synchronous = NORMAL")
    con.execute("PRAGMA temp_store = MEMORY")
    con.execute("PRAGMA cache_size = -16384")  # 16 MB of private cache; the rest is the map
    # no checkpoint inside a commit: at millions of rows a commit dirties pages all over the
    # file, and copying them back (with an fsync) tripled a registration batch's apply; the
    # read model checkpoints in the background instead (ReadModel._checkpoint_soon)
    con.execute("PRAGMA wal_autocheckpoint = 0")
    return con


def create_stage(con: sqlite3.Connection) -> None:
    """The staging tables of this connection (temporary: private to it)."""
    for name, cols in STAGE_COLUMNS.items():
        con.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage_{name} ({', '.join(cols)})")
    con.execute(
        "CREATE TEMP TABLE IF NOT EXISTS moved (analysis_id TEXT, study INTEGER, old INTEGER,"
        " new INTEGER, at INTEGER)"
    )


class Generations:
    """The generation files of one machine's read model, and the pointer to the one in use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.current_file = folder / "CURRENT"
        self._held: dict[int, int] = {}  # generation -> fd holding a shared lock on it
        self._lock = threading.Lock()

    def path(self, generation: int) -> Path:
        return self.folder / f"{generation}.sqlite"

    def current(self) -> int | None:
        try:
            text = self.current_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def hold(self, generation: int) -> None:
        """A shared lock on the generation this process opened (cleanup leaves it alone)."""
        with self._lock:
            if generation in self._held:
                return
            fd = os.open(self.path(generation), os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._held[generation] = fd

    def release_others(self, keep: int) -> None:
        with self._lock:
            for generation in [g for g in self._held if g != keep]:
                os.close(self._held.pop(generation))

    def build_lock(self) -> int:
        """An exclusive lock for building a generation (one builder per machine at a time)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / "build.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def publish(self, generation: int) -> None:
        """Switch CURRENT to a finished generation (atomically), then delete unused ones."""
        tmp = self.folder / "CURRENT.tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{generation}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.current_file)
        dirfd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
        self.cleanup(generation)

    def cleanup(self, keep: int) -> None:
        """Delete generations other than `keep` that no process holds open."""
        for path in self.folder.glob("*.sqlite*"):
            stem = path.name.split(".", 1)[0]
            if not stem.isdigit() or int(stem) == keep or int(stem) in self._held:
                continue
            base = self.path(int(stem))
            try:
                fd = os.open(base, os.O_RDONLY)
            except FileNotFoundError:
                path.unlink(missing_ok=True)  # a -wal or -shm left by a deleted generation
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # still open somewhere
            try:
                for suffix in ("-wal", "-shm", ""):
                    Path(f"{base}{suffix}").unlink(missing_ok=True)
            finally:
                os.close(fd)

    def next_generation(self) -> int:
        found = [
            int(p.name.split(".", 1)[0])
            for p in self.folder.glob("*.sqlite*")
            if p.name.split(".", 1)[0].isdigit()
        ]
        return max([self.current() or 0, *found]) + 1


def new_database(path: Path, identity: str) -> sqlite3.Connection:
    """An empty database for a build: fast and unsafe settings until it is published."""
    for suffix in ("-wal", "-shm", ""):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA page_size = 8192")
    con.execute("PRAGMA journal_mode = OFF")
    con.execute("PRAGMA synchronous = OFF")
    con.execute("PRAGMA temp_store = MEMORY")
    # a large cache while building: keys arrive in random order, so at millions of rows every
    # insert into an index bigger than the cache would read a page from disk
    ram_kib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
    con.execute(f"PRAGMA cache_size = -{max(262_144, min(4 << 20, ram_kib // 6))}")
    con.executescript(SCHEMA)
    con.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("schema", SCHEMA_VERSION), ("identity", identity)],
    )
    create_stage(con)
    return con


def finish_database(con: sqlite3.Connection) -> None:
    """Make a built database durable and ready for sharing (WAL), then close it."""
    con.execute("PRAGMA synchronous = FULL")
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("ANALYZE")
    con.close()


def read_meta(con: sqlite3.Connection) -> dict[str, str]:
    return dict(con.execute("SELECT key, value FROM meta").fetchall())


def cut_of(meta: dict[str, str]) -> dict[str, int]:
    return {k[4:]: int(v) for k, v in meta.items() if k.startswith("cut:")}


def set_cut(con: sqlite3.Connection, cut: dict[str, int]) -> None:
    con.executemany(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [(f"cut:{name}", str(v)) for name, v in cut.items()],
    )
