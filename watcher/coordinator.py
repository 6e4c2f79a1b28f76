"""The coordinator: the one thread that owns the watcher's memory and moves sidecars along.

Every event, verdict and outcome arrives on one queue, so this state needs no locks:

    known      path -> what the ledger says about it (status, content hash, stat, analysis)
    busy       paths somewhere in the pipeline (hash pool, registrar, upload pool)
    dirty      triggers that arrived for a busy path, replayed when it is released
    deps       sidecar -> the data files it waits on (pending, or rejected for its files)
    rdeps      data file -> the sidecars waiting on it (so a file event finds them at once)
    timers     re-checks: half-written files, pending timeouts, retries

Its ledger writes are derivable (the registrar writes the intents, durably) and are committed
together at most every ``FLUSH_EVERY`` seconds; a path's writes are flushed before it is handed to
the registrar, so an older write can never overwrite an intent.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from catalog.errors import Internal
from catalog.settings import Settings

from .hashcache import HashCache
from .layout import Folder, errors_path, fingerprint, is_outcome, is_sidecar, receipt_path
from .ledger import Known, Ledger, storable
from .readiness import Rules, Trigger, Verdict, check
from .receipts import OutcomeWriter, errors_doc
from .registrar import Registrar
from .scanner import sidecars, stat_key
from .uploader import UploadResult

log = logging.getLogger("songlake.watcher")

STOP = ("stop",)
SMALL_SIDECAR = 1 << 20  # re-read to compare content when no larger than this
FLUSH_EVERY = 0.1  # seconds between the coordinator's ledger commits under load


class Coordinator:
    """The watcher's pipeline state; ``run`` is its thread."""

    def __init__(
        self,
        *,
        settings: Settings,
        rules: Rules,
        ledger: Ledger,
        cache: HashCache,
        writer: OutcomeWriter,
        folders: list[Folder],
        polling: bool,
        q: queue.SimpleQueue[tuple[Any, ...]],
        stats: Counter[str],
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.ledger = ledger
        self.cache = cache
        self.writer = writer
        self.folders = folders
        self.polling = polling
        self.q = q
        self.stats = stats
        self.registrar: Registrar | None = None  # set when the watcher starts
        self.check_pool: ThreadPoolExecutor | None = None
        self.known: dict[str, Known] = {}
        self.busy: set[str] = set()
        self.dirty: dict[str, Trigger] = {}
        self.deps: dict[str, dict[str, tuple[int, int, int] | None]] = {}
        self.rdeps: dict[str, set[str]] = {}
        self._timers: list[tuple[float, int, str, str]] = []
        self._timer_keys: set[tuple[str, float]] = set()
        self._seq = itertools.count()
        self._writes: dict[str, dict[str, Any]] = {}
        self._forget: set[str] = set()
        self._extra_folders: list[Folder] = []
        self._expect: dict[str, Callable[[str, str, str | None], None]] = {}
        self._next_scan = float("inf")  # scans begin once events are observed
        self._next_flush = 0.0
        self._stopping = False
        self._loops = 0
        self._idle = False
        self._cond = threading.Condition()

    def load(self) -> None:
        self.known = {row.path: row.known() for row in self.ledger.all()}

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is queued or in flight (two full coordinator loops)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            start = self._loops
            while not (self._idle and self._loops >= start + 2):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # -- the coordinator loop -------------------------------------------------------------------

    def run(self) -> None:
        while True:
            wait = self._next_due() - time.monotonic()
            msgs = []
            try:
                msgs.append(self.q.get(timeout=min(max(wait, 0.0), 1.0)))
            except queue.Empty:
                pass
            while len(msgs) < 5000:
                try:
                    msgs.append(self.q.get_nowait())
                except queue.Empty:
                    break
            for msg in msgs:
                if msg is STOP:
                    self._stopping = True
                    continue
                try:
                    self.handle(msg)
                except Exception:  # noqa: BLE001 - one bad message must not stop the watcher
                    log.exception("watcher could not handle %s", msg[0])
            if self._stopping:
                try:
                    self.flush()
                except Exception:  # noqa: BLE001
                    log.exception("watcher could not record its last changes")
                return
            try:
                self._fire_timers()
                if time.monotonic() >= self._next_scan:
                    self._scan_watched()
                if time.monotonic() >= self._next_flush or self.q.empty():
                    self.flush()
            except Exception:  # noqa: BLE001
                log.exception("watcher loop failed")
            with self._cond:
                self._loops += 1
                self._idle = not self.busy and self.q.empty()
                self._cond.notify_all()

    def _next_due(self) -> float:
        due = self._next_scan
        if self._timers:
            due = min(due, self._timers[0][0])
        return due

    def handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "event":
            self._on_event(msg[1], msg[2])
        elif kind == "moved":
            self._on_moved(msg[1], msg[2])
        elif kind == "verdict":
            self._on_verdict(msg[1])
        elif kind == "registered":
            self._on_registered(msg[1], msg[2])
        elif kind == "uploaded":
            self._on_uploaded(msg[1])
        elif kind == "receipt":
            self._set(msg[1], receipt_state=msg[2], receipt_version=msg[3])
        elif kind == "retry":
            _, path, delay, why = msg
            log.warning("retrying %s in %.1f s: %s", path, delay, why)
            self._release(path)
            self._timer(time.monotonic() + delay, path, "retry")
        elif kind == "scan":
            self._scan_watched()
        elif kind == "stale":
            path = msg[1]
            self.known.pop(path, None)
            self._forget.add(path)
            self._release(path)
            self._trigger(path, Trigger("retry"))
        elif kind == "trigger":
            for path in msg[1]:
                self._trigger(path, Trigger(msg[2]))
        elif kind == "ingest":
            found, callback = msg[1], msg[2]
            for folder in {f for f in found.values()}:
                if folder not in self.folders and folder not in self._extra_folders:
                    self._extra_folders.append(folder)
            for path in found:
                self._expect[path] = callback
                self._trigger(path, Trigger("ingest", path))

    # -- events ---------------------------------------------------------------------------------

    def _on_event(self, path: str, reason: str) -> None:
        name = os.path.basename(path)
        if is_outcome(name):
            return
        if is_sidecar(name):
            self._trigger(path, Trigger("closed" if reason != "created" else "created", path))
        for sidecar in tuple(self.rdeps.get(path, ())):
            self._trigger(sidecar, Trigger("closed" if reason != "created" else "created", path))

    def _on_moved(self, src: str, dest: str) -> None:
        if is_sidecar(os.path.basename(src)) and src in self.known and src not in self.busy:
            self.known.pop(src)  # the rename's destination is looked at instead
            self._forget.add(src)
            self._set_deps(src, {})
        for sidecar in tuple(self.rdeps.get(src, ())):
            self._trigger(sidecar, Trigger("scan", src))  # its file went away
        self._on_event(dest, "closed")  # a rename is complete by definition

    # -- the pipeline ---------------------------------------------------------------------------

    def _folder_of(self, path: str) -> Folder | None:
        best = None
        for folder in (*self.folders, *self._extra_folders):
            if folder.contains(path) and (best is None or len(folder.path) > len(best.path)):
                best = folder
        return best

    def watched_folder(self, path: str) -> Folder | None:
        for folder in self.folders:
            if folder.contains(path):
                return folder
        return None

    def _trigger(self, path: str, trigger: Trigger) -> None:
        if path in self.busy:
            if trigger.reason == "scan":
                return  # a scan's view of a path in flight is stale by definition
            previous = self.dirty.get(path)
            if previous is None or previous.reason != "ingest":
                self.dirty[path] = trigger
            return
        folder = self._folder_of(path)
        if folder is None or self.check_pool is None:
            return
        self.busy.add(path)
        self.check_pool.submit(self._check_job, path, folder, trigger, self.known.get(path))

    def _check_job(self, path: str, folder: Folder, trigger: Trigger, row: Known | None) -> None:
        try:
            v = check(path, folder, trigger, row, self.rules, self.cache)
        except Exception as exc:  # noqa: BLE001 - unreadable file, permissions: try again later
            log.warning("could not check %s: %s", path, exc)
            self.q.put(("retry", path, 5.0, repr(exc)))
            return
        self.q.put(("verdict", v))

    def _on_verdict(self, v: Verdict) -> None:
        path = v.path
        kind = v.kind
        self.stats[kind] += 1
        if kind in ("ready", "unchanged", "stage") and self.registrar is not None:
            if path in self._writes:
                self.flush()  # the registrar's intent for this path must come after them
            self.registrar.queue.put(v)
            return
        if kind == "noop":
            self._release(path, "registered")
        elif kind == "gone":
            known = self.known.get(path)
            if known is not None and known.status in ("pending", "rejected"):
                self._forget.add(path)
                self.known.pop(path, None)
            self._set_deps(path, {})
            self._release(path, "gone")
        elif kind == "unsettled":
            self._timer(
                (v.recheck_at or time.time()) - time.time() + time.monotonic() + 0.05, path, "timer"
            )
            self._release(path)
        elif kind == "pending":
            known = self.known.get(path)
            if known is None or known.status != "pending" or known.sha256 != v.sha256:
                log.info(
                    "pending",
                    extra={
                        "event": "pending",
                        "path": path,
                        "waitingFor": [p["message"] for p in v.problems],
                    },
                )
            self._set(
                path,
                **v.marked(
                    "pending",
                    analysis_id=self._kept_analysis(path),
                    since=v.since,
                    problems=v.problems,
                    file_dependent=1,
                ),
            )
            self._watch_files(path, v.waits_on)
            assert v.since is not None
            due = v.since + self.rules.pending_timeout
            self._timer(due - time.time() + time.monotonic() + 0.05, path, "timer")
            self._release(path, "pending", v.problems[0]["message"] if v.problems else None)
        elif kind == "rejected":
            self._rejected(v)
        else:
            log.error("unknown verdict %s for %s", kind, path)
            self._release(path)

    def _kept_analysis(self, path: str) -> str | None:
        """The path's own analysis survives a refused or pending change (not a void intent)."""
        known = self.known.get(path)
        if known is not None and known.status in ("registered", "rejected", "pending"):
            return known.analysis_id
        return None

    def _rejected(self, v: Verdict) -> None:
        path = v.path
        aid = v.analysis_id if v.analysis_id is not None else self._kept_analysis(path)
        if os.path.lexists(path):
            try:
                self.writer.write_errors(
                    path,
                    errors_doc(
                        sidecar=path,
                        sha256=v.sha256,
                        study_id=v.study_id,
                        error_id=v.error_id or Internal.error_id,
                        message=v.message or "",
                        problems=v.problems,
                        analysis_id=aid,
                    ),
                )
            except OSError as exc:
                log.warning("could not write the errors file of %s: %s", path, exc)
        self._set(
            path,
            **v.marked(
                "rejected",
                analysis_id=aid,
                error_id=v.error_id,
                message=v.message,
                problems=v.problems,
                file_dependent=int(v.file_dependent),
                since=None,
            ),
        )
        self._watch_files(path, v.waits_on if v.file_dependent else {})
        log.info(
            "rejected",
            extra={
                "event": "rejected",
                "path": path,
                "errorId": v.error_id,
                "problems": len(v.problems),
            },
        )
        self._release(path, "rejected", v.message)

    def _on_registered(self, v: Verdict, aid: str) -> None:
        self._set(
            v.path,
            **v.marked(
                "registered",
                analysis_id=aid,
                error_id=None,
                message=None,
                problems=None,
                file_dependent=0,
                since=None,
            ),
        )
        self._set_deps(v.path, {})

    def _on_uploaded(self, res: UploadResult) -> None:
        self._set(
            res.path,
            uploaded=int(res.complete),
            uploads=res.uploads,
            receipt_state=res.state,
            receipt_version=res.version,
        )
        self._watch_files(res.path, res.waits_on)
        self.stats["receipts"] += 1
        self._release(res.path, "registered")

    def _release(self, path: str, outcome: str | None = None, detail: str | None = None) -> None:
        self.busy.discard(path)
        if outcome is not None:
            callback = self._expect.pop(path, None)
            if callback is not None:
                callback(path, outcome, detail)
        trigger = self.dirty.pop(path, None)
        if trigger is None:
            return
        if trigger.path == path and trigger.reason in ("closed", "created"):
            if self._unchanged(path):
                return  # the event was about the content just processed
        self._trigger(path, trigger)

    def _unchanged(self, path: str) -> bool:
        """True when the sidecar still has the stat and content the pipeline just judged."""
        known = self.known.get(path)
        if known is None or known.fingerprint is None or known.fingerprint != stat_key(path):
            return False
        if known.sha256 is None or known.fingerprint[0] > SMALL_SIDECAR:
            return known.sha256 is None
        try:  # an edit within one mtime tick keeps size and mtime: compare the content too
            with open(path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest() == known.sha256
        except OSError:
            return False

    def _set_deps(self, sidecar: str, waits: dict[str, tuple[int, int, int] | None]) -> None:
        for path in self.deps.pop(sidecar, {}):
            owners = self.rdeps.get(path)
            if owners is not None:
                owners.discard(sidecar)
                if not owners:
                    del self.rdeps[path]
        if waits:
            self.deps[sidecar] = dict(waits)
            for path in waits:
                self.rdeps.setdefault(path, set()).add(sidecar)

    def _watch_files(self, sidecar: str, waits: dict[str, tuple[int, int, int] | None]) -> None:
        """Wait for these files to change; a change that raced the check triggers at once.

        The retry replaces a pending trigger about the sidecar itself: that one is dropped on
        release when the sidecar is unchanged, and the data file's change (an mtime set by
        ``cp -p`` after the close, say, of which inotify sends no event we ask for) would then
        wait for the next rescan."""
        self._set_deps(sidecar, waits)
        for path, seen in waits.items():
            if stat_key(path) != seen:
                previous = self.dirty.get(sidecar)
                if previous is None or previous.reason != "ingest":
                    self.dirty[sidecar] = Trigger("retry", path)
                break

    def _timer(self, due: float, path: str, reason: str) -> None:
        key = (path, round(due, 1))
        if key in self._timer_keys:
            return
        self._timer_keys.add(key)
        heapq.heappush(self._timers, (due, next(self._seq), path, reason))

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            due, _, path, reason = heapq.heappop(self._timers)
            self._timer_keys.discard((path, round(due, 1)))
            self._trigger(path, Trigger(reason))

    # -- scans ----------------------------------------------------------------------------------

    def _scan_watched(self) -> None:
        s = self.settings
        interval = s.watch_poll_interval if self.polling else s.watch_rescan_interval
        t0 = time.perf_counter()
        triggered = seen = 0
        present: set[str] = set()
        for folder in self.folders:
            for path, st, names in sidecars(folder.path):
                seen += 1
                present.add(path)
                if self._needs_look(path, st, names):
                    triggered += 1
                    self._trigger(path, Trigger("scan"))
        for path in [p for p in self.known if p not in present and p not in self.busy]:
            if self.watched_folder(path) is not None and not os.path.lexists(path):
                self.known.pop(path)  # deleted or moved away while nobody watched
                self._forget.add(path)
                self._set_deps(path, {})
        self._next_scan = time.monotonic() + interval
        if triggered or not self.polling:
            log.info(
                "scan",
                extra={
                    "event": "scan",
                    "sidecars": seen,
                    "triggered": triggered,
                    "ms": round((time.perf_counter() - t0) * 1000, 1),
                },
            )

    def _needs_look(self, path: str, st: os.stat_result, names: frozenset[str]) -> bool:
        known = self.known.get(path)
        if known is None or known.fingerprint != fingerprint(st):
            return True
        if known.status == "registered":
            return not known.uploaded or os.path.basename(receipt_path(path)) not in names
        if known.status == "registering":
            return True
        if known.status == "rejected" and os.path.basename(errors_path(path)) not in names:
            return True
        if known.file_dependent:
            deps = self.deps.get(path)
            return deps is None or any(stat_key(p) != seen for p, seen in deps.items())
        return False

    # -- ledger ---------------------------------------------------------------------------------

    def _set(self, path: str, **cols: Any) -> None:
        known = self.known.get(path)
        if known is None and "status" in cols:
            known = self.known[path] = Known(status=cols["status"])
        if known is not None:
            for key, value in cols.items():
                if hasattr(known, key):
                    setattr(known, key, _json(value) if key == "uploads" else value)
        self._forget.discard(path)
        if storable(path):  # else known in memory only (a name that is not UTF-8)
            self._writes.setdefault(path, {}).update(cols)

    def flush(self) -> None:
        """Commit the loop's ledger writes in one transaction (not fsynced: all derivable)."""
        self._next_flush = time.monotonic() + FLUSH_EVERY
        hashes = self.cache.take_dirty()
        if not (self._writes or self._forget or hashes):
            return
        writes, self._writes = self._writes, {}
        forget, self._forget = self._forget, set()
        try:
            with self.ledger.transaction(durable=False) as tx:
                for path, cols in writes.items():
                    tx.upsert(path, **cols)
                for path in forget:
                    tx.forget(path)
                if hashes:
                    tx.put_hashes(hashes)
        except Exception:
            self._writes = {**writes, **self._writes}
            self._forget |= forget
            raise


def _json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))
