"""The one way every write commits: validate against the latest committed state, then append.

    Committer.latest()      a context: the write lock held and every table brought up to what
                            other processes committed, so a write validates against the truth
    Committer.commit(...)   append to several tables in the given order (children first, the
                            commit-point table last), record one catalog version in ``commits``,
                            then apply the rows to this process' read model

Today the lock is a process-local ``threading.Lock``; several writer processes need the catalog-
wide protocol DESIGN.md promises ("Growing past one machine"), and it belongs here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..read.readmodel import ReadModel
from ..read.records import MODEL_TABLES
from ..tables import TableStore
from .registry import Registry

Batches = list[tuple[str, list[dict[str, Any]]]]


class Committer:
    """Commits the writes of one process to the catalog's tables and its read model."""

    def __init__(self, tables: TableStore, model: ReadModel, registry: Registry) -> None:
        self.tables = tables
        self.model = model
        self.registry = registry
        self.lock = threading.Lock()

    def refresh(self) -> bool:
        """Pick up commits made by other processes; True when the model changed."""
        self.registry.refresh()
        return self.model.refresh()

    @contextmanager
    def latest(self) -> Iterator[None]:
        """Hold the write lock, with every table at its latest committed version."""
        with self.lock:
            self.refresh()
            yield

    def commit(self, batches: Batches, *, operation: str, actor: str | None) -> int:
        """Append each table's rows (in order), record the catalog version, apply the rows to
        the read model (analyses before their children); returns the catalog version."""
        versions = {}
        for name, rows in batches:
            versions[name] = self.tables.append(name, rows)
        catalog_version = self.tables.log_commit(
            operation, actor, sum(len(rows) for _, rows in batches)
        )
        applied = dict(batches)
        for name in MODEL_TABLES:
            if name in applied:
                self.model.apply_rows(name, applied[name])
                self.model.mark_seen(name, versions[name])
        return catalog_version
