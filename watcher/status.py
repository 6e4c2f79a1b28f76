"""``songlake status``, and the inbox behind the web console: what the watcher has seen, per
study, read from its ledger.

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
from catalog.settings import Settings

from .ledger import Ledger, Row

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


#: the largest sidecar text the inbox shows (a sidecar is a Song payload: kilobytes, not more)
MAX_SIDECAR_TEXT = 256 * 1024


def inbox(settings: Settings, *, limit: int = 200) -> dict[str, Any]:
    """The inbox as the console shows it: totals, pending sidecars with what each waits for and
    the time left before the timeout, rejected ones with every problem and their text, and the
    latest receipts. Plain data, so the API never imports the watcher."""
    out: dict[str, Any] = {
        "totals": {"pending": 0, "rejected": 0, "registered24h": 0},
        "pending": [],
        "rejected": [],
        "receipts": [],
    }
    path = settings.state_dir / "watcher.sqlite3"
    if not path.exists():
        return out
    now = time.time()
    ledger = Ledger(path, readonly=True)
    try:
        for _, status, n in ledger.counts():
            if status in ("pending", "rejected"):
                out["totals"][status] += n
        out["totals"]["registered24h"] = ledger.count_since("registered", now - 86_400)
        for row in ledger.latest("pending", limit):
            waited = now - row.since if row.since else 0.0
            out["pending"].append(
                {
                    **_where(row),
                    "since": utc_iso(row.since),
                    "waitingFor": [p.get("message") for p in _problems(row)],
                    "secondsLeft": max(0.0, round(settings.watch_pending_timeout - waited, 1)),
                }
            )
        for row in ledger.latest("rejected", limit):
            out["rejected"].append(
                {
                    **_where(row),
                    "errorId": row.error_id,
                    "message": row.message,
                    "problems": _problems(row),
                    "text": _text(Path(row.path)),
                }
            )
        for row in ledger.latest("registered", limit):
            out["receipts"].append(
                {**_where(row), "analysisId": row.analysis_id, "state": row.receipt_state}
            )
    finally:
        ledger.close()
    return out


def _where(row: Row) -> dict[str, Any]:
    return {
        "path": row.path,
        "folder": row.folder,
        "studyId": row.study_id,
        "at": utc_iso(row.updated_at),
    }


def _problems(row: Row) -> list[dict[str, Any]]:
    found = json.loads(row.problems) if row.problems else []
    return [p for p in found if isinstance(p, dict)]


def _text(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SIDECAR_TEXT + 1)
    except OSError:
        return None
    if len(data) > MAX_SIDECAR_TEXT:
        return None
    return data.decode("utf-8", errors="replace")


def short(path: str, width: int = 60) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]


__all__ = ["StatusReport", "inbox", "report", "short"]
