"""The watcher service: its threads and pools, how they start and stop, and one-shot ingest.

    watchdog observer ──► InboxHandler ──┐ (filter, enqueue)
    scans / timers ──────────────────────┤
                                         ▼
                              coordinator thread ──► hash pool (2): readiness.check, staging
                              (busy paths, what       │
                               waits on which file,   ▼ verdicts
                               timers, ledger)  ◄─────┘
                                         │ ready
                                         ▼
                              registrar thread ──► catalog.submit_batch (group commit)
                                         │ registered
                                         ▼
                              upload pool ──► object store, archive, receipt

A sidecar path is in at most one stage of this pipeline at a time (see ``coordinator``). The
registrar writes intents durably before committing; everything else is derivable.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from catalog.catalog import Catalog
from catalog.errors import (
    FileNotFound,
    MismatchingObjectChecksum,
    SonglakeError,
    StorageCheckFailed,
    WatcherBusy,
)
from catalog.settings import Settings

from .coordinator import STOP, Coordinator
from .hashcache import HashCache
from .layout import Folder
from .ledger import Known, Ledger
from .readiness import Rules, Verdict
from .receipts import OutcomeWriter
from .registrar import Registrar, staged_object_ids
from .scanner import sidecars
from .uploader import UploadJob, UploadResult
from .uploadpool import UploadPool, make_uploader

log = logging.getLogger("songlake.watcher")


def watched_folders(settings: Settings) -> list[str]:
    """The inbox plus ``watch_folders`` (os.pathsep-separated)."""
    extra = [p for p in settings.watch_folders.split(os.pathsep) if p.strip()]
    return [str(settings.inbox_dir), *extra]


def lock_path(settings: Settings) -> str:
    return str(settings.state_dir / "watcher.lock")


def watcher_running(settings: Settings) -> int | None:
    """The pid of the watcher holding this root's lock, if one does."""
    path = lock_path(settings)
    if not os.path.exists(path):
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@dataclass
class IngestReport:
    total: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (outcome, why)

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())


class Watcher:
    """Watches folders (or ingests trees once) and registers every sidecar dropped there."""

    def __init__(
        self,
        catalog: Catalog,
        settings: Settings | None = None,
        *,
        polling: bool = False,
        folders: Iterable[str] | None = None,
    ) -> None:
        self.catalog = catalog
        self.settings = s = settings or catalog.settings
        self.polling = polling
        names = list(folders) if folders is not None else watched_folders(s)
        self.folders = [Folder.at(p) for p in names]
        self.rules = Rules.from_settings(s)
        self.writer = OutcomeWriter(s.state_dir / "tmp")
        self.cache = HashCache()
        # first: it checks the settings
        self.uploader = make_uploader(s, catalog.store, self.writer, self.cache, self._current)
        self.ledger = Ledger(s.state_dir / "watcher.sqlite3")
        self.cache.load(self.ledger.hashes())
        self.q: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.stats: Counter[str] = Counter()
        self._observer: Any = None
        self._handler: Any = None
        self._thread: threading.Thread | None = None
        self._hash_pool: ThreadPoolExecutor | None = None
        self._upload_pool: UploadPool | None = None
        self.registrar: Registrar | None = None
        self._lock_fd: int | None = None
        self.coordinator = Coordinator(
            settings=s,
            rules=self.rules,
            ledger=self.ledger,
            cache=self.cache,
            writer=self.writer,
            folders=self.folders,
            polling=polling,
            q=self.q,
            stats=self.stats,
        )

    @property
    def known(self) -> dict[str, Known]:
        """What the watcher knows of every sidecar path (the coordinator's view)."""
        return self.coordinator.known

    @property
    def busy(self) -> set[str]:
        return self.coordinator.busy

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is queued or in flight."""
        return self.coordinator.wait_idle(timeout)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, *, watch: bool = True) -> Watcher:
        """Start the threads; with ``watch`` also the observer (or polling) and periodic scans."""
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        try:  # one watcher per root; one ingest at a time (both would take the same sidecars)
            self._take_lock(lock_path(s) if watch else str(s.state_dir / "ingest.lock"))
        except BaseException:
            self.ledger.close()
            raise
        if watch:
            for folder in self.folders:
                os.makedirs(folder.path, exist_ok=True)
        self.coordinator.load()
        self._hash_pool = ThreadPoolExecutor(
            s.watch_hash_threads, thread_name_prefix="songlake-hash"
        )
        try:
            self._upload_pool = UploadPool(
                s,
                on_result=self._upload_done,
                on_error=self._upload_failed,
                uploader=self.uploader,
            )
        except BaseException:
            self._hash_pool.shutdown(wait=False)
            self._release_lock()
            self.ledger.close()
            raise
        self.registrar = Registrar(
            self.catalog,
            self.ledger,
            s,
            self.writer,
            post=self.q.put,
            upload=self._submit_upload,
            stage=self._submit_stage,
        )
        self.registrar.start()
        self.coordinator.registrar = self.registrar
        self.coordinator.check_pool = self._hash_pool
        self._thread = threading.Thread(
            target=self.coordinator.run, name="songlake-watcher", daemon=True
        )
        self._thread.start()
        if watch and not self.polling:
            from watchdog.observers import Observer

            from .handler import EVENT_FILTER, InboxHandler

            self._handler = InboxHandler(self.q.put)
            self._observer = Observer()
            for folder in self.folders:
                self._observer.schedule(
                    self._handler, folder.path, recursive=True, event_filter=EVENT_FILTER
                )
            self._observer.start()
        if watch:  # now that events are observed, catch up with what happened before
            self.q.put(("scan",))
        log.info(
            "watcher started",
            extra={
                "event": "started",
                "folders": [f.path for f in self.folders] if watch else [],
                "mode": "polling" if self.polling else "inotify",
            },
        )
        return self

    def stop(self) -> None:
        """Stop observing, let running work finish, join every thread."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None
        if self.registrar is not None:
            self.registrar.stop()
            self.registrar.join()
        if self._thread is not None:
            self.q.put(STOP)
            self._thread.join()
            self._thread = None
        if self._hash_pool is not None:
            self._hash_pool.shutdown(wait=True, cancel_futures=True)
        if self._upload_pool is not None:
            self._upload_pool.shutdown()
        self._hash_pool = self._upload_pool = None
        self.coordinator.check_pool = None  # what finishes now is recorded, not checked again
        # record uploads that finished while stopping
        while True:
            try:
                msg = self.q.get_nowait()
            except queue.Empty:
                break
            if msg[0] in ("registered", "uploaded", "receipt"):
                self.coordinator.handle(msg)
        self.coordinator.flush()
        self.ledger.close()
        self._release_lock()
        log.info("watcher stopped", extra={"event": "stopped"})

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take_lock(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            what = "watcher" if path.endswith("watcher.lock") else "ingest"
            raise WatcherBusy(
                f"Another {what} (pid {text or '?'}) is already running on {self.settings.root}"
                + (" (stop it, or serve with --no-watch)" if what == "watcher" else "")
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    # -- one-shot ingest ------------------------------------------------------------------------

    def ingest(
        self,
        paths: Iterable[str],
        *,
        on_outcome: Callable[[str, str, str | None], None] | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Take every sidecar under ``paths`` now (rejected ones too) and wait for each outcome."""
        found: dict[str, Folder] = {}
        for raw in paths:
            real = os.path.realpath(raw)
            if not os.path.exists(real):
                raise FileNotFound(f"No such file or folder: {raw}")
            folder = self.coordinator.watched_folder(real)
            if folder is None:
                top = real if os.path.isdir(real) else os.path.dirname(real)
                folder = Folder(top, study_from_folder=False)
            for path, _st, _names in sidecars(real):
                found.setdefault(path, folder)
        report = IngestReport(total=len(found))
        if on_total is not None:
            on_total(len(found))
        done = threading.Event()
        if not found:
            return report

        def outcome(path: str, status: str, detail: str | None) -> None:
            report.outcomes[status] += 1
            if detail and status != "registered":
                report.problems[path] = (status, detail)
            if on_outcome is not None:
                on_outcome(path, status, detail)
            if report.done >= report.total:
                done.set()

        self.q.put(("ingest", found, outcome))
        done.wait()
        return report

    # -- pools ----------------------------------------------------------------------------------

    def _submit_upload(self, jobs: list[UploadJob]) -> None:
        assert self._upload_pool is not None
        self._upload_pool.submit(jobs)

    def _upload_done(self, result: UploadResult) -> None:
        now = self._current(result.analysis_id)
        if now is not None and now != (result.state, result.version) and self.registrar:
            self.registrar.receipt_stale(result.path)  # changed while the receipt was written
        self.q.put(("uploaded", result))

    def _upload_failed(self, job: UploadJob, why: str) -> None:
        self.q.put(("retry", job.path, 5.0, why))

    def _submit_stage(self, v: Verdict) -> None:
        assert self._hash_pool is not None
        self._hash_pool.submit(self._stage_job, v)

    def _stage_job(self, v: Verdict) -> None:
        """Copy the big files into storage under their final objectIds, verifying them."""
        try:
            for oid, fc in staged_object_ids(v):
                st = os.stat(fc.path)
                try:
                    spec = self.catalog.store.put_file(
                        oid, fc.path, expected_md5=fc.md5, expected_size=fc.size
                    )
                except StorageCheckFailed as exc:
                    fc.status = "bad"
                    checksum = exc.error_id == MismatchingObjectChecksum.error_id
                    rule = "fileMd5sum" if checksum else "fileSize"
                    fc.problem = {
                        "errorId": "mismatching.file.md5sum"
                        if rule == "fileMd5sum"
                        else "mismatching.file.size",
                        "pointer": f"/files/{fc.index}/{rule}",
                        "rule": rule,
                        "message": exc.message,
                        "schema": None,
                    }
                    self._unstage(v)
                    v.file_dependent = True
                    v.analysis_id = None
                    v.reject(fc.problem["errorId"], exc.message, [fc.problem])
                    self.q.put(("verdict", v))
                    return
                v.staged.append(oid)
                if spec.object_md5:
                    self.cache.put(fc.path, st, spec.object_md5)
                fc.status = "ok"
            v.kind = "ready"
            self.q.put(("verdict", v))
        except Exception as exc:  # noqa: BLE001
            log.exception("staging %s failed", v.path)
            self._unstage(v)
            self.q.put(("retry", v.path, 5.0, repr(exc)))

    def _unstage(self, v: Verdict) -> None:
        for oid in v.staged:
            try:
                self.catalog.store.delete(oid)
            except (OSError, SonglakeError):
                log.warning("could not remove staged object %s", oid)
        v.staged.clear()

    def _current(self, aid: str) -> tuple[str, int] | None:
        rec = self.catalog.model.analyses.get(aid)
        return (rec.state, rec.version) if rec is not None else None
