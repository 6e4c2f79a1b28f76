"""``songlake status``: what the watcher has seen, per study, read from its ledger.

It opens the ledger read-only, so it answers while a watcher runs (SQLite WAL readers never
block the writer) and needs neither the catalog tables nor a running server.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catalog.model import utc_iso

from .ledger import Ledger

STATUSES = ("pending", "registering", "registered", "rejected")


@dataclass
class StatusReport:
    studies: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    watcher_pid: int | None = None

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for counts in self.studies.values():
            for key, n in counts.items():
                out[key] = out.get(key, 0) + n
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "watcherPid": self.watcher_pid,
            "totals": self.totals(),
            "studies": self.studies,
            "latestErrors": self.errors,
            "pending": self.pending,
        }


def report(state_dir: Path, *, limit: int = 10, watcher_pid: int | None = None) -> StatusReport:
    out = StatusReport(watcher_pid=watcher_pid)
    path = state_dir / "watcher.sqlite3"
    if not path.exists():
        return out
    ledger = Ledger(path, readonly=True)
    try:
        for study, status, n in ledger.counts():
            out.studies.setdefault(study, dict.fromkeys(STATUSES, 0))[status] = n
        for row in ledger.latest("rejected", limit):
            problems = json.loads(row.problems) if row.problems else []
            out.errors.append(
                {
                    "path": row.path,
                    "studyId": row.study_id,
                    "errorId": row.error_id,
                    "message": row.message,
                    "problems": len(problems),
                    "at": utc_iso(row.updated_at),
                }
            )
        now = time.time()
        for row in ledger.latest("pending", limit):
            problems = json.loads(row.problems) if row.problems else []
            out.pending.append(
                {
                    "path": row.path,
                    "studyId": row.study_id,
                    "since": utc_iso(row.since),
                    "waitingSeconds": round(now - row.since, 1) if row.since else None,
                    "waitingFor": [p.get("message") for p in problems],
                }
            )
    finally:
        ledger.close()
    return out


def short(path: str, width: int = 60) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]


__all__ = ["StatusReport", "report", "short"]
