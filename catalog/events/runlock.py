"""The dispatcher's single-runner lock, kept on the catalog root so every machine sees it.

    FileRunLock   a local root: ``flock`` on ``<root>/state/events/dispatcher.lock``; the kernel
                  frees it when its holder dies (kill -9 included)
    LeaseRunLock  a root on S3: a lease object (store/s3lease.py: conditional put, a TTL, renewed
                  while held) at ``<prefix>/state/events/dispatcher.lease``, held by a thread of
                  the dispatcher; a dead holder's lease is taken over once its TTL has run out

Both answer ``try_take()`` without waiting, ``release()``, ``running()`` (held by anyone) and
``holder()`` (who, since when, as text).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any

from ..model import now_iso
from ..settings import Settings
from ..store import s3_lease

LEASE_TTL = 30.0  # seconds a dead dispatcher's lease keeps other dispatchers waiting on S3


class FileRunLock:
    """``flock`` on one file of a local root."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_take(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "since": now_iso()}).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def running(self) -> bool:
        if self._fd is not None:
            return True
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "unknown process"
        return f"pid {info.get('pid')} since {info.get('since')}"


class LeaseRunLock:
    """A lease object on S3, taken and then held (renewed) by a thread until released."""

    def __init__(self, lease: Any) -> None:
        self.lease = lease
        self._taken = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_take(self) -> bool:
        if self._taken.is_set():
            return True
        if self._thread is not None and self._thread.is_alive():
            return False  # still waiting for the holder to release it, or for its TTL to run out
        free = not self.lease.info().get("held")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._hold, name="songlake-events-lease", daemon=True
        )
        self._thread.start()
        return self._taken.wait(10.0 if free else 0.0)

    def _hold(self) -> None:
        with self.lease.hold():  # waits while another dispatcher holds it
            self._taken.set()
            self._stop.wait()
        self._taken.clear()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._taken.is_set():
            self._thread.join(30)

    def running(self) -> bool:
        return self._taken.is_set() or bool(self.lease.info().get("held"))

    def holder(self) -> str:
        info = self.lease.info()
        return f"{info.get('holder') or 'unknown process'} since {info.get('since')}"


def run_lock(settings: Settings) -> FileRunLock | LeaseRunLock:
    """The single-runner lock of the root the settings name."""
    where = settings.shared_state.child("events")
    if where.path is not None:
        return FileRunLock(where.path / "dispatcher.lock")
    # a dispatcher standing by asks once a second, not at the writer lease's pace
    return LeaseRunLock(s3_lease(where, "dispatcher.lease", ttl=LEASE_TTL, poll=1.0))
