"""md5 of data files, computed once per file version: cached by (path, size, mtime_ns, inode).

limits.md B1: md5 is CPU-bound at ~0.7 GB/s per core and hashlib releases the GIL, so the hashing
runs in a small thread pool and nothing unchanged is hashed twice. Entries for files of at least
``persist_min_bytes`` are also kept in the watcher's ledger, so a restart does not re-hash large
files; small ones are cheaper to hash again than to store.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable

from .layout import fingerprint

BUFFER = 1024 * 1024
PERSIST_MIN_BYTES = 1024 * 1024

Key = tuple[int, int, int]  # (size, mtime_ns, inode)


class HashCache:
    """Thread-safe md5 cache; ``hashed_files`` / ``hashed_bytes`` count real hashing work."""

    def __init__(
        self,
        entries: Iterable[tuple[str, int, int, int, str]] = (),
        *,
        persist_min_bytes: int = PERSIST_MIN_BYTES,
    ) -> None:
        self._entries: dict[str, tuple[Key, str]] = {
            path: ((size, mtime, ino), md5) for path, size, mtime, ino, md5 in entries
        }
        self._dirty: dict[str, tuple[Key, str]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.persist_min_bytes = persist_min_bytes
        self.hashed_files = 0
        self.hashed_bytes = 0
        self.hits = 0

    def load(self, entries: Iterable[tuple[str, int, int, int, str]]) -> None:
        for path, size, mtime, ino, md5 in entries:
            self._entries[path] = ((size, mtime, ino), md5)

    def cached(self, path: str, st: os.stat_result) -> str | None:
        found = self._entries.get(path)
        if found is not None and found[0] == fingerprint(st):
            self.hits += 1
            return found[1]
        return None

    def md5(self, path: str, st: os.stat_result) -> str | None:
        """The md5 of the file as ``st`` describes it; None when it changed while being read."""
        hit = self.cached(path, st)
        if hit is not None:
            return hit
        with open(path, "rb", buffering=0) as f:
            before = os.fstat(f.fileno())
            if fingerprint(before) != fingerprint(st):
                return None
            digest = self._hash(f, before.st_size)
            after = os.fstat(f.fileno())
        if fingerprint(after) != fingerprint(before):
            return None
        self.put(path, st, digest)
        with self._lock:
            self.hashed_files += 1
            self.hashed_bytes += before.st_size
        return digest

    def _hash(self, f, size: int) -> str:
        h = hashlib.md5(usedforsecurity=False)
        if size <= BUFFER:
            h.update(f.read())
            return h.hexdigest()
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = bytearray(BUFFER)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
        return h.hexdigest()

    def put(self, path: str, st: os.stat_result, md5: str) -> None:
        """Remember a digest computed elsewhere (e.g. while copying into object storage)."""
        entry = (fingerprint(st), md5)
        self._entries[path] = entry
        if st.st_size >= self.persist_min_bytes:
            with self._lock:
                self._dirty[path] = entry

    def forget(self, path: str) -> None:
        self._entries.pop(path, None)

    def take_dirty(self) -> list[tuple[str, int, int, int, str]]:
        """Entries to persist since the last call."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        return [(p, k[0], k[1], k[2], md5) for p, (k, md5) in dirty.items()]
