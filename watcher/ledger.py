"""The watcher's durable memory: one row per sidecar path, in ``<root>/state/watcher.sqlite3``.

Why SQLite (stdlib) in WAL mode rather than a JSONL journal: every write is a transaction that
survives kill -9 once ``COMMIT`` returns (intents are also fsynced: ``synchronous=FULL``, so they
survive power loss; derivable state is written with ``NORMAL``); ``songlake status``
reads it from another process while the watcher writes (WAL readers never block the writer);
lookups by content hash and by analysis are indexed; and there is no journal to replay or compact.

    status        meaning                                      analysis_id
    pending       parsed, waiting for its files (since ...)    the path's analysis, if any
    registering   intent: sha256 is being registered as ...    the id chosen BEFORE submitting
    registered    sha256 is (part of) the analysis             the analysis
    rejected      sha256 was refused (problems)                the path's analysis, if any

The intent row is committed (fsync) before ``submit_batch`` runs, so a retry after a crash re-uses
the same analysisId and the catalog's own ID rules make the retry idempotent. ``marked`` gives the
columns of a status for a judged sidecar: the registrar's intents, the coordinator's verdicts.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS sidecars (
    path TEXT PRIMARY KEY,
    folder TEXT,
    study_id TEXT,
    status TEXT NOT NULL,
    sha256 TEXT,
    analysis_id TEXT,
    size INTEGER, mtime_ns INTEGER, inode INTEGER,
    since REAL,
    error_id TEXT,
    message TEXT,
    problems TEXT,
    file_dependent INTEGER NOT NULL DEFAULT 0,
    uploaded INTEGER NOT NULL DEFAULT 0,
    uploads TEXT,
    receipt_state TEXT,
    receipt_version INTEGER,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sidecars_sha ON sidecars(sha256);
CREATE INDEX IF NOT EXISTS sidecars_analysis ON sidecars(analysis_id);
CREATE INDEX IF NOT EXISTS sidecars_updated ON sidecars(updated_at);
CREATE TABLE IF NOT EXISTS hashes (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, md5 TEXT
);
"""

COLUMNS = (
    "path",
    "folder",
    "study_id",
    "status",
    "sha256",
    "analysis_id",
    "size",
    "mtime_ns",
    "inode",
    "since",
    "error_id",
    "message",
    "problems",
    "file_dependent",
    "uploaded",
    "uploads",
    "receipt_state",
    "receipt_version",
    "updated_at",
)


def storable(path: str) -> bool:
    """SQLite keeps text as UTF-8: a path holding a name that is not UTF-8 (decoded by Python as
    lone surrogates) cannot be a row."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Row:
    """One sidecar as the ledger remembers it."""

    path: str
    folder: str | None
    study_id: str | None
    status: str
    sha256: str | None
    analysis_id: str | None
    size: int | None
    mtime_ns: int | None
    inode: int | None
    since: float | None
    error_id: str | None
    message: str | None
    problems: str | None
    file_dependent: int
    uploaded: int
    uploads: str | None
    receipt_state: str | None
    receipt_version: int | None
    updated_at: float

    @property
    def fingerprint(self) -> tuple[int, int, int] | None:
        if self.size is None or self.mtime_ns is None or self.inode is None:
            return None
        return (self.size, self.mtime_ns, self.inode)

    def uploads_doc(self) -> dict[str, Any]:
        return json.loads(self.uploads) if self.uploads else {}

    def known(self) -> Known:
        return Known(
            status=self.status,
            sha256=self.sha256,
            analysis_id=self.analysis_id,
            study_id=self.study_id,
            size=self.size,
            mtime_ns=self.mtime_ns,
            inode=self.inode,
            since=self.since,
            uploaded=self.uploaded,
            file_dependent=self.file_dependent,
            uploads=self.uploads,
        )


@dataclass
class Known:
    """The part of a row the watcher keeps in memory for every sidecar it has seen."""

    status: str
    sha256: str | None = None
    analysis_id: str | None = None
    study_id: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    inode: int | None = None
    since: float | None = None
    uploaded: int = 0
    file_dependent: int = 0
    uploads: str | None = None

    @property
    def fingerprint(self) -> tuple[int, int, int] | None:
        if self.size is None or self.mtime_ns is None or self.inode is None:
            return None
        return (self.size, self.mtime_ns, self.inode)


class Transaction:
    """Writes of one transaction; ``upsert`` sets only the columns it is given."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def upsert(self, path: str, **cols: Any) -> None:
        cols["updated_at"] = time.time()
        for key in ("problems", "uploads"):
            if key in cols and not isinstance(cols[key], str | None):
                cols[key] = json.dumps(cols[key], separators=(",", ":"))
        names = list(cols)
        if "status" not in cols:  # a partial update of a row that exists
            sql = f"UPDATE sidecars SET {', '.join(f'{n} = ?' for n in names)} WHERE path = ?"
            self._conn.execute(sql, [*cols.values(), path])
            return
        sql = (
            f"INSERT INTO sidecars (path, {', '.join(names)}) "
            f"VALUES (?, {', '.join('?' * len(names))}) "
            f"ON CONFLICT(path) DO UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in names)
        )
        self._conn.execute(sql, [path, *cols.values()])

    def forget(self, path: str) -> None:
        self._conn.execute("DELETE FROM sidecars WHERE path = ?", (path,))

    def put_hashes(self, entries: Iterable[tuple[str, int, int, int, str]]) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO hashes (path, size, mtime_ns, inode, md5) VALUES (?,?,?,?,?)",
            entries,
        )


class Ledger:
    """The SQLite file, shared by the watcher's threads (one connection, one lock)."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self._conn = sqlite3.connect(
                uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30
            )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(SCHEMA)
        self._durable = True

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Transaction]:
        """One atomic write (BEGIN IMMEDIATE ... COMMIT). ``durable``: fsynced before COMMIT
        returns (intents); otherwise it survives a killed process but maybe not a power loss."""
        with self._lock:
            if durable != self._durable:
                self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- reads --------------------------------------------------------------------------------

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        with self._lock:
            cur = self._conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM sidecars {sql}", tuple(args)
            )
            return [Row(*r) for r in cur.fetchall()]

    def get(self, path: str) -> Row | None:
        rows = self._rows("WHERE path = ?", (path,))
        return rows[0] if rows else None

    def all(self) -> list[Row]:
        return self._rows("")

    def registered_with_any(self, sha256s: Iterable[str]) -> dict[str, list[Row]]:
        """The rows registered with any of these contents, by sha256 (one query per 500)."""
        wanted = sorted(set(sha256s))
        out: dict[str, list[Row]] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in self._rows(f"WHERE sha256 IN ({marks}) AND status = 'registered'", chunk):
                out.setdefault(row.sha256 or "", []).append(row)
        return out

    def receipts_since(self, when: float) -> list[Row]:
        """Rows whose receipt was written after ``when`` (any process)."""
        return self._rows(
            "WHERE updated_at > ? AND receipt_state IS NOT NULL AND analysis_id IS NOT NULL",
            (when,),
        )

    def hashes(self) -> list[tuple[str, int, int, int, str]]:
        with self._lock:
            return self._conn.execute(
                "SELECT path, size, mtime_ns, inode, md5 FROM hashes"
            ).fetchall()

    def counts(self) -> list[tuple[str, str, int]]:
        """(study, status, count) for every study and status."""
        with self._lock:
            return self._conn.execute(
                "SELECT coalesce(study_id, '?'), status, count(*) FROM sidecars "
                "GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()

    def latest(self, status: str, limit: int) -> list[Row]:
        return self._rows("WHERE status = ? ORDER BY updated_at DESC LIMIT ?", (status, limit))

    def count_since(self, status: str, when: float) -> int:
        """How many sidecars reached `status` after `when` (their last change)."""
        with self._lock:
            return self._conn.execute(
                "SELECT count(*) FROM sidecars WHERE status = ? AND updated_at > ?", (status, when)
            ).fetchone()[0]
