"""The one commit protocol every write follows, in every process and on every machine.

    Committer.run(write)    hold the catalog-wide writer lease, bring every table up to the
                            latest committed version, and run ``write`` (validate, then commit);
                            if another writer got in first, run it again on the new state
    Committer.commit(...)   append to several tables in the given order (children first, the
                            commit-point table last), record one catalog version in ``commits``,
                            then apply the rows to this process' read model

Two guards make a write's validation still true when it commits (ARCHITECTURE.md, "Many writers"):

1. **The lease** (``store/lease.py``): one writer at a time, catalog-wide. Locally ``flock`` on
   ``<state>/writer.lock``; on S3 a lease object taken and renewed with conditional put.
2. **Expected versions**: every append is made at the version this writer refreshed to, with
   deltalake's commit retries off. A writer that lost its lease (paused past the TTL) finds the
   next version taken by the new holder: its append fails, nothing of it becomes visible (its
   children are orphans until ``repair``), and ``run`` re-validates from the new state.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import Unavailable, WriteConflict
from ..model import utc_iso
from ..read.readmodel import ReadModel
from ..store.lease import Lease, holder_name
from ..tables import TableStore
from .registry import Registry

Batches = list[tuple[str, list[dict[str, Any]]]]
T = TypeVar("T")
log = logging.getLogger("songlake.commit")

#: attempts of one write before giving up with service.unavailable (each after a conflict)
MAX_ATTEMPTS = 8


class Committer:
    """Commits the writes of one process to the catalog's tables and its read model."""

    def __init__(
        self, tables: TableStore, model: ReadModel, registry: Registry, lease: Lease
    ) -> None:
        self.tables = tables
        self.model = model
        self.registry = registry
        self.lease = lease
        self.lock = threading.RLock()  # this process' threads take turns before the lease
        self.epoch = 0  # the fencing epoch of the lease hold in progress
        self.conflicts = 0  # writes that found another writer's commit, then re-validated
        self.commits = 0
        self._compactor: threading.Thread | None = None
        #: called after each write, outside the lease (the current-state tables' refresh)
        self.after_write: Callable[[], None] | None = None
        tables.deferred_compaction = True

    def refresh(self) -> bool:
        """Pick up commits made by other processes; True when the model changed."""
        self.registry.refresh()
        self.tables.latest("commits")
        return self.model.refresh()

    @contextmanager
    def latest(self) -> Iterator[None]:
        """The lease held, with every table at its latest committed version (no retry: for
        maintenance that commits without validating, and for dry runs)."""
        with self.lock:
            self.refresh()  # most of the catching up, before the lease: others commit meanwhile
            with self.lease.hold(while_waiting=self.refresh) as epoch:
                self.epoch = epoch
                self.refresh()
                yield

    def run(self, write: Callable[[], T]) -> T:
        """Run one logical write (validate, then ``commit``) against the latest committed state,
        again from the new state each time another writer turns out to have committed first."""
        try:
            return self._attempts(write)
        finally:
            self._compact_later()
            if self.after_write is not None:
                self.after_write()

    def _compact_later(self) -> None:
        """Compact what came due, outside the lease, in the background (one compaction at a
        time); at 1M analyses a compaction takes seconds that no other write should wait for."""
        if not self.tables.compaction_due:
            return
        if self._compactor is not None and self._compactor.is_alive():
            return
        self._compactor = threading.Thread(
            target=self.tables.compact_due, name="songlake-compact", daemon=False
        )
        self._compactor.start()

    def settle(self) -> None:
        """Wait for a background compaction to finish (tests, and a clean stop)."""
        if self._compactor is not None:
            self._compactor.join()

    def _attempts(self, write: Callable[[], T]) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.latest():
                    return write()
            except WriteConflict:
                self.conflicts += 1
                time.sleep(min(0.5, 0.01 * 2**attempt) * random.uniform(0.5, 1.0))
        raise Unavailable(
            f"The write did not commit after {MAX_ATTEMPTS} attempts: other writers kept "
            "committing first; try again"
        )

    def commit(self, batches: Batches, *, operation: str, actor: str | None) -> int:
        """Append each table's rows (in order), record the catalog version, apply the rows to
        the read model (analyses before their children); returns the catalog version.
        Raises WriteConflict (before anything is visible) when the lease was lost."""
        self.lease.check()
        fence = {
            "songlake.epoch": str(self.epoch),
            "songlake.writer": holder_name(),
            "songlake.operation": operation,
        }
        versions: dict[str, int] = {}
        catalog_version = self.tables.group_commit(
            batches, operation=operation, actor=actor, metadata=fence, versions=versions
        )
        self.commits += 1
        try:
            self.model.apply_commit(dict(batches), versions)
        except Exception:  # committed all the same: the next refresh reads it from the log
            log.exception("commit %s applied to the read model on refresh instead", catalog_version)
        return catalog_version

    def status(self) -> dict[str, Any]:
        """The lease (who holds it, since when), the last commit, and this process' counters."""
        return {
            **writer_report(self.tables, self.lease),
            "process": {
                "writer": holder_name(),
                "commits": self.commits,
                "conflicts": self.conflicts,
                **self.lease.stats.as_dict(),
            },
        }


def writer_report(tables: TableStore, lease: Lease) -> dict[str, Any]:
    """Who holds the writer lease (or held it last) and who made the last commit, and when: what
    ``songlake status`` and ``GET /health`` show of the writers."""
    return {"lease": lease.info(), "last_commit": last_commit(tables)}


def last_commit(tables: TableStore) -> dict[str, Any] | None:
    """The newest catalog version: its number, time, operation, writer and lease epoch."""
    commits = tables.latest("commits")
    history = commits.history(1)
    if not history or commits.version() < 1:
        return None
    entry = history[0]
    stamp = entry.get("timestamp")
    return {
        "version": commits.version(),
        "committedAt": utc_iso(stamp / 1000) if stamp else None,
        "operation": entry.get("songlake.operation"),
        "writer": entry.get("songlake.writer"),
        "epoch": int(entry["songlake.epoch"]) if entry.get("songlake.epoch") else None,
    }
