"""The catalog-wide writer lease: one writer at a time validates and commits, in every process.

    Lease          what the Committer needs: ``hold()`` (a context yielding the fencing epoch),
                   ``check()`` (WriteConflict unless still held, called just before committing),
                   ``info()`` (who holds it, since when) and ``stats`` (waits, takeovers, losses)
    LocalLease     a root on a file system: ``flock`` on ``<state>/writer.lock``. The kernel
                   frees it when its holder dies (kill -9 included), so it never needs a TTL;
                   a stopped holder keeps it, and other writers wait for it to go on.
    S3Lease        (s3lease.py) a root on S3: a lease object taken and renewed with conditional put

Every hold increments the epoch, recorded in the lease file with the holder's name and the time,
so ``songlake status`` can say who writes, and every commit carries the epoch it was made under.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from ..model import now_iso


def holder_name() -> str:
    """This process, as other writers see it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class LeaseStats:
    """Counters of one process' lease holds (reported by status and /health)."""

    holds: int = 0
    waits: int = 0  # holds that found the lease taken and waited for it
    wait_seconds: float = 0.0
    takeovers: int = 0  # leases taken over from a holder whose TTL ran out (S3)
    lost: int = 0  # holds that found, before committing, that the lease had been taken over

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["wait_seconds"] = round(self.wait_seconds, 3)
        return out


#: how often a writer waiting for the lease looks again (and catches up with what was committed)
WAIT_POLL = 0.002

Waiting = Callable[[], object] | None


class Lease(Protocol):
    stats: LeaseStats

    def hold(self, while_waiting: Waiting = None) -> Any:
        """A context manager yielding the fencing epoch. ``while_waiting`` is called between
        looks at a lease another writer holds (the Committer reads their commits meanwhile)."""

    def check(self) -> None: ...

    def info(self) -> dict[str, Any]: ...


class LocalLease:
    """``flock`` on one file: exclusive among every process of every machine sharing the file."""

    kind = "flock"

    def __init__(self, path: Path, *, holder: str | None = None) -> None:
        self.path = Path(path)
        self.holder = holder or holder_name()
        self.stats = LeaseStats()
        self._local = threading.Lock()  # flock is per open file: threads take turns here first

    @contextmanager
    def hold(self, while_waiting: Waiting = None) -> Iterator[int]:
        with self._local:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                if not _try_flock(fd):
                    started = time.monotonic()
                    if while_waiting is None:
                        fcntl.flock(fd, fcntl.LOCK_EX)
                    else:
                        while not _try_flock(fd):
                            while_waiting()
                            time.sleep(WAIT_POLL)
                    self.stats.waits += 1
                    self.stats.wait_seconds += time.monotonic() - started
                self.stats.holds += 1
                record = _read_record(fd)
                epoch = int(record.get("epoch", 0)) + 1
                _write_record(fd, {"holder": self.holder, "epoch": epoch, "since": now_iso()})
                try:
                    yield epoch
                finally:
                    released = {**_read_record(fd), "released_at": now_iso()}
                    _write_record(fd, released)
            finally:
                os.close(fd)  # closing the file releases the flock

    def check(self) -> None:
        """A held flock cannot be lost while its holder lives."""

    def info(self) -> dict[str, Any]:
        """The lease as any process sees it: the last holder, since when, and whether held now."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return {"kind": self.kind, "held": False, "holder": None, "epoch": 0}
        try:
            record = _read_record(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                held = False
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                held = True
        finally:
            os.close(fd)
        if held:
            record.pop("released_at", None)
        return {"kind": self.kind, "held": held, **record}


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_record(fd: int) -> dict[str, Any]:
    data = os.pread(fd, 4096, 0)
    try:
        record = json.loads(data) if data.strip() else {}
    except ValueError:  # a torn write from a crash: the epoch restarts from what we can see
        record = {}
    return record if isinstance(record, dict) else {}


def _write_record(fd: int, record: dict[str, Any]) -> None:
    data = json.dumps(record, sort_keys=True).encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
