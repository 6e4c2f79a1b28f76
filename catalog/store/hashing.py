"""Reading bytes once: a streaming copy computing the whole md5 and each part's md5 on the way."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Protocol

from ..errors import MismatchingObjectSize
from .layout import DEFAULT_PART_SIZE, MIB, Part, part_plan

BUFFER_SIZE = MIB


COPY_BUFFER_SIZE = 4 * MIB


COPY_RING = 4  # buffers in flight through the copy pipeline


def _md5() -> Any:
    return hashlib.md5(usedforsecurity=False)


class Source(Protocol):
    """What a copy reads from: a file opened unbuffered, a buffered reader, any raw stream."""

    def readinto(self, buffer: Any, /) -> int | None: ...


def md5_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(lowercase hex md5, size) of a file, streamed with a 1 MiB buffer."""
    with open(path, "rb", buffering=0) as src:
        digest, size = hash_stream(src)
    return digest, size


def hash_stream(src: Source) -> tuple[str, int]:
    h = _md5()
    buf = bytearray(BUFFER_SIZE)
    view = memoryview(buf)
    size = 0
    while n := src.readinto(buf):
        h.update(view[:n])
        size += n
    return h.hexdigest(), size


def copy_with_hashes(
    src: Source,
    size: int,
    write: Callable[[memoryview], object] | None = None,
    *,
    part_size: int = DEFAULT_PART_SIZE,
    part_md5: bool = True,
) -> tuple[str, list[Part]]:
    """Read ``src`` once: pass each chunk to ``write`` and hash it (whole md5 + per-part sourceMd5).

    ``size`` (from stat) fixes the part plan; a source that turns out longer or shorter raises
    StorageCheckFailed (mismatching.storage.object.sizes). Returns (md5 hex, parts with sourceMd5).
    Without ``part_md5`` the parts of a multi-part plan carry no sourceMd5 (one md5 per byte, not
    two; Score's clients skip the per-part check then, score-storage.md §1.3 and §3.3).
    """
    plan = part_plan(size, part_size)
    whole = _md5()
    parts = PartHasher(plan) if len(plan) > 1 and part_md5 else None
    stages: list[Callable[[memoryview], object]] = [whole.update]
    if parts is not None:
        stages.append(parts.update)
    if write is not None:
        stages.append(write)
    if size <= COPY_BUFFER_SIZE:  # small: one thread, no pipeline to set up
        buf = bytearray(max(size + 1, 64 * 1024))  # not 4 MiB of zeroes for a 1 KiB file
        view = memoryview(buf)
        total = 0
        while n := src.readinto(buf):
            for stage in stages:
                stage(view[:n])
            total += n
    else:
        total = _pipeline(src, stages)
    if total != size:
        raise MismatchingObjectSize(
            f"The source changed while it was read: {total} bytes read, {size} expected",
        )
    digest = whole.hexdigest()
    if len(plan) <= 1:  # zero or one part: the part's md5 is the file's
        return digest, [replace(p, source_md5=digest) for p in plan]
    return digest, parts.done if parts is not None else plan


def _pipeline(src: Source, stages: list[Callable[[memoryview], object]]) -> int:
    """Feed ``src`` chunk by chunk to each stage, every stage in its own thread and in order.

    The md5s and the write overlap one another and the next reads (hashlib and file writes release
    the GIL), so hashing twice and writing cost about as much as the slowest of them alone.
    A buffer is read into again only once every stage is done with it. Returns the bytes read.
    """
    ring = [bytearray(COPY_BUFFER_SIZE) for _ in range(COPY_RING)]
    pools = [ThreadPoolExecutor(1, thread_name_prefix="copy-stage") for _ in stages]
    in_flight: deque[list[Future[object]]] = deque()
    total = 0
    try:
        for i in itertools.count():
            if len(in_flight) == COPY_RING:
                for fut in in_flight.popleft():
                    fut.result()
            buf = ring[i % COPY_RING]
            n = src.readinto(buf)
            if not n:
                break
            chunk = memoryview(buf)[:n]
            steps = zip(pools, stages, strict=True)
            in_flight.append([pool.submit(stage, chunk) for pool, stage in steps])
            total += n
        for futures in in_flight:
            for fut in futures:
                fut.result()
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    return total


class PartHasher:
    """Per-part md5s (Score's sourceMd5) of a stream fed in order, chunk by chunk."""

    def __init__(self, plan: list[Part]) -> None:
        self.plan = plan
        self.done: list[Part] = []
        self._hash, self._left = _md5(), (plan[0].part_size if plan else 0)

    def update(self, chunk: memoryview) -> None:
        n, pos = len(chunk), 0
        while pos < n and len(self.done) < len(self.plan):
            take = min(self._left, n - pos)
            self._hash.update(chunk[pos : pos + take])
            pos += take
            self._left -= take
            if self._left == 0:
                digest = self._hash.hexdigest()
                self.done.append(replace(self.plan[len(self.done)], source_md5=digest))
                if len(self.done) < len(self.plan):
                    self._hash, self._left = _md5(), self.plan[len(self.done)].part_size
