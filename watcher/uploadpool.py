"""Where upload jobs run: worker processes (the default) or threads of the watcher process.

An upload of a small file is a dozen short system calls (create, write, fsync, rename, the .meta,
the receipt). In threads of the watcher process every call gives the GIL up and then waits to take
it back from the registrar's validation and the coordinator, so eight upload threads did less
than one (a 3,000-sidecar burst on tmpfs: 204/s with 8 threads, 285/s with 1). In worker
processes the same calls run beside the registrar, on the other core. Jobs travel in chunks: one
pickle and pipe round trip per chunk, not per job. Within a chunk, jobs with small files only run
in groups whose objects the local store syncs together (``put_files``).

    UploadPool(settings, on_result, on_error)
      submit(jobs)      split into chunks, returns at once; later on_result(UploadResult) or
                        on_error(job, why) for every job (in a thread of the pool)
      shutdown()        waits for running chunks; queued ones are dropped (the ledger still says
                        "not uploaded", so the next start uploads them)

Settings: ``watch_upload_processes`` (0: threads of the watcher process),
``watch_upload_threads`` (threads per process: the local store's fsyncs and S3's round trips
overlap) and ``watch_upload_nice``: the workers run at a lower priority, so that on a busy machine
the watcher process, whose registrar is the one serial stage, gets a core first (a 10,000-sidecar
burst on 2 cores: 425-431/s at equal priority, 481-492/s with nice 5; the copies catch up in the
registrar's pauses). A worker imports only the object store and the uploader, and exits by
itself when the watcher that started it is gone (kill -9 included) instead of finishing its work
unobserved.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any

from catalog.store.local import GROUP_MAX_BYTES

from .hashcache import HashCache
from .logs import configure
from .receipts import OutcomeWriter
from .uploader import Uploader, UploadJob, UploadResult

log = logging.getLogger("songlake.watcher")

MAX_CHUNK = 32  # jobs per round trip: small enough that both processes get work at once
GROUP_JOBS = 16  # small-file jobs whose objects the local store syncs together
PARENT_CHECK = 0.25  # seconds between a worker's looks at its parent

OnResult = Callable[[UploadResult], None]
OnError = Callable[[UploadJob, str], None]
Outcome = tuple[UploadResult | None, str | None]


def make_uploader(
    settings: Any,
    store: Any,
    writer: OutcomeWriter,
    cache: HashCache,
    current: Callable[[str], tuple[str, int] | None] = lambda aid: None,
) -> Uploader:
    """The uploader the settings describe (also checks ``watch_after_upload``)."""
    archive = settings.watch_archive_dir or str(settings.root / "archive")
    return Uploader(
        store,
        writer,
        cache,
        after_upload=settings.watch_after_upload,
        archive_dir=os.path.realpath(archive),
        current=current,
    )


def chunks(jobs: Sequence[UploadJob], workers: int) -> list[list[UploadJob]]:
    """Split jobs so that every worker gets a share at once, at most MAX_CHUNK per chunk."""
    if not jobs:
        return []
    size = max(1, min(MAX_CHUNK, -(-len(jobs) // max(1, workers))))
    return [list(jobs[i : i + size]) for i in range(0, len(jobs), size)]


def run_jobs(
    uploader: Uploader, threads: ThreadPoolExecutor, jobs: list[UploadJob]
) -> list[Outcome]:
    """Run a chunk's jobs on ``threads``; every job gets a result or the reason it failed.

    Where the store syncs small files together (the local store), the jobs whose files are all
    small run in groups of up to GROUP_JOBS, each group on one thread; the others each on a thread
    of their own."""
    grouped: list[int] = []
    if uploader.store.groups_puts:
        grouped = [i for i, job in enumerate(jobs) if all_small(job)]
    # two groups or more, so that one group's copying overlaps another's wait for the disk
    size = max(1, min(GROUP_JOBS, -(-len(grouped) // 2)))
    groups = [grouped[k : k + size] for k in range(0, len(grouped), size)]
    futures = [threads.submit(uploader.run_many, [jobs[i] for i in g]) for g in groups]
    in_group = set(grouped)
    alone = {i: threads.submit(uploader.run, j) for i, j in enumerate(jobs) if i not in in_group}
    results: dict[int, UploadResult | BaseException] = {}
    for g, fut in zip(groups, futures, strict=True):
        try:
            results.update(zip(g, fut.result(), strict=True))
        except Exception as exc:  # noqa: BLE001 - the whole group failed (a failed sync)
            results.update((i, exc) for i in g)
    for i, single in alone.items():
        try:
            results[i] = single.result()
        except Exception as exc:  # noqa: BLE001 - reported to the watcher, which retries
            results[i] = exc
    out: list[Outcome] = []
    for i, job in enumerate(jobs):
        result = results[i]
        if isinstance(result, BaseException):
            log.error("upload job for %s failed: %r", job.path, result, exc_info=result)
            out.append((None, repr(result)))
        else:
            out.append((result, None))
    return out


def all_small(job: UploadJob) -> bool:
    return all(
        isinstance(f.get("fileSize"), int) and f["fileSize"] <= GROUP_MAX_BYTES
        for f in job.analysis["files"]
    )


# -- the worker process ---------------------------------------------------------------------------

_worker: tuple[Uploader, ThreadPoolExecutor] | None = None


def _init_worker(settings: Any, threads: int, level: int, parent: int) -> None:
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the watcher's to handle
    if settings.watch_upload_nice > 0:
        os.nice(settings.watch_upload_nice)
    configure(level)
    from catalog.store import open_store

    writer = OutcomeWriter(settings.state_dir / "tmp")
    uploader = make_uploader(settings, open_store(settings), writer, HashCache())
    _worker = (uploader, ThreadPoolExecutor(threads, thread_name_prefix="songlake-upload"))
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """Exit at once when the watcher process is gone (this process was re-parented)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK)
    os._exit(1)


def _run_chunk(jobs: list[UploadJob]) -> list[Outcome]:
    assert _worker is not None, "upload worker was not initialised"
    return run_jobs(*_worker, jobs)


def _ready() -> int:
    return os.getpid()


# -- the pool -------------------------------------------------------------------------------------


class UploadPool:
    """Runs upload jobs in ``processes`` worker processes, or in threads when that is 0."""

    def __init__(
        self,
        settings: Any,
        *,
        on_result: OnResult,
        on_error: OnError,
        uploader: Uploader | None = None,
    ) -> None:
        self.on_result = on_result
        self.on_error = on_error
        self.processes = max(0, int(settings.watch_upload_processes))
        threads = max(1, int(settings.watch_upload_threads))
        self._procs: ProcessPoolExecutor | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._uploader = uploader
        self._lock = threading.Lock()
        self._initargs = (
            settings,
            threads,
            logging.getLogger("songlake").getEffectiveLevel(),
            os.getpid(),
        )
        if self.processes:
            self._procs = self._start_processes()
        else:
            if uploader is None:
                raise ValueError("UploadPool without processes needs an uploader")
            self._threads = ThreadPoolExecutor(threads, thread_name_prefix="songlake-upload")
            self._chunk_threads = ThreadPoolExecutor(1, thread_name_prefix="songlake-uploads")

    def _start_processes(self) -> ProcessPoolExecutor:
        procs = ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),  # never fork a threaded process
            initializer=_init_worker,
            initargs=self._initargs,
        )
        # start every worker now and fail here if one cannot start
        ready = [procs.submit(_ready) for _ in range(self.processes)]
        for fut in ready:
            fut.result(timeout=120)
        return procs

    def pids(self) -> list[int]:
        """The worker processes' ids (none when uploads run in threads)."""
        with self._lock:
            procs = self._procs
            return sorted(procs._processes) if procs is not None else []  # noqa: SLF001

    def _submit_chunk(self, chunk: list[UploadJob]) -> Future[list[Outcome]] | None:
        with self._lock:
            if self._procs is None:
                return None  # shut down: the next start uploads these
            try:
                return self._procs.submit(_run_chunk, chunk)
            except BrokenProcessPool:  # a worker died (killed, out of memory): start afresh
                log.warning("an upload worker process died; starting new ones")
                self._procs.shutdown(wait=False, cancel_futures=True)
                self._procs = self._start_processes()
                return self._procs.submit(_run_chunk, chunk)

    def submit(self, jobs: Sequence[UploadJob]) -> None:
        for chunk in chunks(jobs, self.processes or 1):
            fut: Future[list[Outcome]] | None
            if self.processes:
                fut = self._submit_chunk(chunk)
                if fut is None:
                    return
            else:
                assert self._threads is not None and self._uploader is not None
                fut = self._chunk_threads.submit(run_jobs, self._uploader, self._threads, chunk)
            fut.add_done_callback(partial(self._done, chunk))

    def _done(self, chunk: list[UploadJob], fut: Future[list[Outcome]]) -> None:
        if fut.cancelled():
            return  # shut down before it ran: the next start uploads these
        exc = fut.exception()
        if exc is not None:  # the worker died (BrokenProcessPool) or the chunk did not pickle
            log.error("upload chunk of %d failed: %r", len(chunk), exc)
            for job in chunk:
                self.on_error(job, repr(exc))
            return
        for job, (result, why) in zip(chunk, fut.result(), strict=True):
            if result is not None:
                self.on_result(result)
            else:
                self.on_error(job, why or "unknown error")

    def shutdown(self) -> None:
        with self._lock:
            procs, self._procs = self._procs, None
        if procs is not None:
            procs.shutdown(wait=True, cancel_futures=True)
        if self._threads is not None:
            self._chunk_threads.shutdown(wait=True, cancel_futures=True)
            self._threads.shutdown(wait=True)
