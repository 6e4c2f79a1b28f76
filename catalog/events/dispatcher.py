"""Song's analysis messages, delivered from the outbox to every configured sink.

    Dispatcher          one per catalog root at a time (its lock, runlock.py, in state/events/);
    │                   runs inside `serve` and alone as `songlake events run`
    └── SinkWorker      a thread per sink, with its own cursor in <root>/state/events/<sink>.json
        └── Sink        jsonl | webhook | kafka (sink.py and one module each)

A worker takes the next batch of committed changes after its cursor (outbox.py), turns each
into Song's message (messages.py), hands chunks to its sink and saves its cursor atomically and
durably after each (newfiles.write_file). Delivery is at-least-once: after a crash or kill -9 a
worker resumes from its last saved cursor and sends again what followed it. Order per analysis
holds because a batch is in commit order and sinks keep the order of records with the same key.

Also here: ``events status`` (lag, failures, dead letters per sink) and ``events replay`` (a
running dispatcher takes the request from <root>/state/events/replay/; otherwise the cursors are
moved back and the chosen sinks run until they have caught up).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..catalog import Catalog
from ..errors import BadRequest, DispatcherBusy, Internal, SinkError, SonglakeError
from ..model import now_iso
from ..root import Location
from ..settings import Settings
from .config import EventsConfig, events_config, open_sink
from .messages import Messages
from .outbox import BEGINNING, Cut, Outbox, Position
from .runlock import run_lock
from .sink import Record, Sink, SinkSpec

log = logging.getLogger("songlake.events")


def state_dir(settings: Settings) -> Location:
    """Cursors and replay requests: on the root, shared by the dispatchers of every machine."""
    return settings.shared_state.child("events")


# -- saved state ----------------------------------------------------------------------------------


def load_state(folder: Location, name: str) -> dict[str, Any] | None:
    """A sink's saved cursor and counters; None if it has none yet."""
    try:
        return json.loads(folder.read_bytes(f"{name}.json"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise Internal(
            f"The cursor of events sink '{name}' ({folder.uri(name + '.json')}) is unreadable "
            f"({exc}): move it away to start the sink afresh, or restore it"
        ) from None


# -- one sink -------------------------------------------------------------------------------------


class SinkWorker:
    """Delivers the outbox to one sink from its saved cursor, in a thread of its own."""

    def __init__(self, dispatcher: Dispatcher, spec: SinkSpec, sink: Sink) -> None:
        self.d = dispatcher
        self.spec = spec
        self.sink = sink
        self.name = spec.name
        self.position: Position | None = None
        self.caught_up: Cut | None = None  # the head this worker last found itself at
        self.error: str | None = None
        self.stats: dict[str, Any] = {
            "delivered": 0,
            "failures": 0,
            "dead_letters": 0,
            "last_error": None,
            "last_error_at": None,
            "last_delivered_at": None,
        }
        self.sent = 0  # delivered by this process
        self._rewind: Cut | None = None
        self._lock = threading.Lock()
        self._saved_at = 0.0
        path = spec.options.get("dead_letter_path") or f"events/dead-letters/{spec.name}.jsonl"
        self.dead_letter_path = Path(path) if Path(path).is_absolute() else self.d.root / path
        self.thread = threading.Thread(
            target=self._run, name=f"songlake-events-{spec.name}", daemon=True
        )

    # -- the Delivery protocol, for the sink ----------------------------------------------------

    def stopping(self) -> bool:
        return self.d.stop_event.is_set()

    def sleep(self, seconds: float) -> bool:
        return not self.d.stop_event.wait(seconds)

    def failed(self, record: Record, error: str, attempt: int) -> None:
        log.warning(
            "events sink '%s': event %s (analysis %s), attempt %d failed: %s",
            self.name,
            record.event_id,
            record.key,
            attempt,
            error,
        )
        with self._lock:
            self.stats["failures"] += 1
            self.stats["last_error"] = error
            self.stats["last_error_at"] = now_iso()
            if time.monotonic() - self._saved_at > 1.0:
                self._save_locked()

    def dead_letter(self, record: Record, error: str, attempts: int) -> None:
        meta = json.dumps(
            {
                "sink": self.name,
                "eventId": record.event_id,
                "key": record.key,
                "action": record.action,
                "attempts": attempts,
                "error": error,
                "failedAt": now_iso(),
            },
            ensure_ascii=False,
        )
        line = meta[:-1].encode() + b',"message":' + record.body + b"}\n"
        with self._lock:
            self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
            with self.dead_letter_path.open("ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            self.stats["dead_letters"] += 1
        log.error(
            "events sink '%s': event %s (analysis %s) dead-lettered after %d attempts: %s",
            self.name,
            record.event_id,
            record.key,
            attempts,
            error,
        )

    # -- cursor ---------------------------------------------------------------------------------

    def _save_locked(self) -> None:
        assert self.position is not None
        data = {
            "sink": self.name,
            "type": self.spec.type,
            "position": self.position.to_json(),
            "sink_state": self.sink.state(),
            "stats": self.stats,
            "error": self.error,
            "updated_at": now_iso(),
        }
        self.d.state_dir.write_bytes(f"{self.name}.json", data=json.dumps(data, indent=1).encode())
        self._saved_at = time.monotonic()

    def save(self) -> None:
        with self._lock:
            self._save_locked()

    def rewind(self, cut: Cut) -> None:
        with self._lock:
            self._rewind = cut if self._rewind is None else self._rewind.meet(cut)
        self.caught_up = None

    def _take_rewind(self) -> None:
        with self._lock:
            cut, self._rewind = self._rewind, None
        if cut is not None and self.position is not None:
            self.position = Position(self.position.start.meet(cut))
            log.info("events sink '%s': replaying from %s", self.name, self.position.token())
            self.save()

    # -- the loop -------------------------------------------------------------------------------

    def _open(self) -> None:
        saved = load_state(self.d.state_dir, self.name) or {}
        if saved.get("position"):
            self.position = Position.from_json(saved["position"])
        else:
            self.position = Position(
                self.d.outbox.head() if self.spec.start == "now" else BEGINNING
            )
        self.stats.update(saved.get("stats") or {})
        self.sink.open(saved.get("sink_state") or {})
        self.error = None
        self.save()

    def _run(self) -> None:
        failures = 0
        opened = False
        while not self.stopping():
            try:
                if not opened:
                    self._open()
                    opened = True
                    log.info(
                        "events sink '%s' (%s) delivering from %s",
                        self.name,
                        self.spec.type,
                        self.position.token() if self.position else "?",
                    )
                self._take_rewind()
                if not self._step():
                    self.d.stop_event.wait(self.d.config.poll_interval)
                failures, self.error = 0, None
            except Exception as exc:  # never let the thread die: report, wait, try again
                failures += 1
                self.error = (
                    f"{type(exc).__name__}: {exc}"
                    if not isinstance(exc, SonglakeError)
                    else exc.message
                )
                log.error(
                    "events sink '%s': %s",
                    self.name,
                    self.error,
                    exc_info=not isinstance(exc, SonglakeError),
                )
                if self.position is not None:
                    with contextlib.suppress(OSError):
                        self.save()
                self.d.stop_event.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))
        with contextlib.suppress(Exception):
            self.sink.close()

    def _step(self) -> bool:
        """Deliver (part of) the next batch; False when there was nothing to do."""
        assert self.position is not None
        pos = self.position
        if pos.end is None:
            head = self.d.outbox.head()
            if pos.start.covers(head):
                self.caught_up = head
                self.d.notify()
                return False
            pos = Position(
                pos.start, self.d.outbox.batch_end(pos.start, head, self.d.config.batch_commits)
            )
        end = pos.end
        assert end is not None  # a batch's end was just fixed, or saved with the cursor
        changes = self.d.outbox.changes(pos.start, end)
        offset = pos.offset
        while offset < len(changes):
            if self.stopping() or self._rewind is not None:
                return True
            chunk = changes[offset : offset + self.d.config.chunk_events]
            records = self.d.messages.records(chunk, end)
            sendable = [(i, r) for i, r in enumerate(records) if r is not None]
            dead_before = self.stats["dead_letters"]
            n = self.sink.deliver([r for _, r in sendable], self) if sendable else 0
            taken = len(chunk) if n == len(sendable) else sendable[n][0]
            offset += taken
            with self._lock:
                self.position = Position(pos.start, end, offset)
                sent = n - (self.stats["dead_letters"] - dead_before)
                self.stats["delivered"] += sent
                self.sent += sent
                if n:
                    self.stats["last_delivered_at"] = now_iso()
                self._save_locked()
            if taken < len(chunk):
                return True  # stopping
        with self._lock:
            self.position = Position(end)
            self._save_locked()
        return True


# -- the dispatcher -------------------------------------------------------------------------------


class Dispatcher:
    """Runs a worker per sink for one catalog, while holding the root's dispatcher lock."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        config: EventsConfig | None = None,
        only: Sequence[str] | None = None,
        producers: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
    ) -> None:
        self.catalog = catalog
        self.settings = catalog.settings
        self.root = self.settings.root
        self.config = config or events_config(self.settings)
        self.state_dir = state_dir(self.settings)
        self.outbox = Outbox(self.settings.tables_dir)
        self.messages = Messages(catalog, self.outbox, update_action=self.config.update_action)
        self.stop_event = threading.Event()
        self.problems: list[tuple[str, str]] = list(self.config.problems)
        self.workers: list[SinkWorker] = []
        self._cond = threading.Condition()
        self.lock = run_lock(self.settings)
        self._locked = False
        self._thread: threading.Thread | None = None
        self.started = threading.Event()
        specs = list(self.config.sinks)
        if only is not None:
            unknown = sorted(set(only) - {s.name for s in specs})
            if unknown:
                raise BadRequest(
                    f"No events sink named {', '.join(unknown)} (configured: "
                    f"{', '.join(s.name for s in specs) or 'none'})"
                )
            specs = [s for s in specs if s.name in only]
        for spec in specs:
            try:
                sink = open_sink(spec, self.root, producer_factory=(producers or {}).get(spec.name))
                self.workers.append(SinkWorker(self, spec, sink))
            except SinkError as exc:
                self.problems.append((spec.name, exc.message))

    # -- the lock -------------------------------------------------------------------------------

    def try_lock(self) -> bool:
        self._locked = self._locked or self.lock.try_take()
        return self._locked

    def _unlock(self) -> None:
        self.lock.release()
        self._locked = False

    # -- running --------------------------------------------------------------------------------

    def start(self, *, standby: bool = True) -> None:
        """Start delivering; if another process holds the lock, wait for it (standby) or raise."""
        if self.try_lock():
            self._start_workers()
        elif not standby:
            raise DispatcherBusy(
                f"Another events dispatcher runs on {self.settings.location} ({holder(self)})"
            )
        else:
            log.info(
                "events: another dispatcher runs on %s (%s); standing by",
                self.settings.location,
                holder(self),
            )
        self._thread = threading.Thread(target=self._supervise, name="songlake-events", daemon=True)
        self._thread.start()

    def _start_workers(self) -> None:
        for w in self.workers:
            w.thread.start()
        self.started.set()

    def _supervise(self) -> None:
        while not self.stop_event.is_set():
            if not self.started.is_set():
                if self.try_lock():
                    log.info("events: dispatcher lock taken; delivering")
                    self._start_workers()
                self.stop_event.wait(1.0)
                continue
            self._take_replay_requests()
            self.stop_event.wait(0.5)

    def _take_replay_requests(self) -> None:
        folder = replay_folder(self.settings)
        for path in folder.list():
            try:
                request = json.loads(folder.read_bytes(path))
                cut = Cut.from_json(request["from"])
                names = request.get("sinks") or [w.name for w in self.workers]
            except (OSError, ValueError, KeyError) as exc:
                log.error("events: bad replay request %s: %s", path, exc)
            else:
                for w in self.workers:
                    if w.name in names:
                        w.rewind(cut)
            folder.delete(path)

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every worker has delivered everything committed when this was called."""
        target = self.outbox.head()
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self.started.is_set() and all(
                    (w.caught_up is not None and w.caught_up.covers(target)) or w.error
                    for w in self.workers
                ):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        self.notify()
        for w in self.workers:
            if w.thread.is_alive():
                w.thread.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        self._unlock()


def holder(d: Dispatcher | None = None, settings: Settings | None = None) -> str:
    """Who holds the dispatcher lock, as text."""
    return d.lock.holder() if d is not None else run_lock(settings).holder()  # type: ignore[arg-type]


def dispatcher_running(settings: Settings) -> bool:
    return run_lock(settings).running()


def start_background(catalog: Catalog) -> Dispatcher | None:
    """The dispatcher `serve` runs beside the API, unless ``[events] enabled = false``."""
    config = events_config(catalog.settings)
    if not config.enabled:
        return None
    dispatcher = Dispatcher(catalog, config=config)
    for _, problem in dispatcher.problems:
        log.error("%s (left out; the other sinks run)", problem)
    dispatcher.start(standby=True)
    return dispatcher


# -- replay ---------------------------------------------------------------------------------------


def request_replay(settings: Settings, cut: Cut, sinks: Sequence[str] | None) -> str:
    """Ask the running dispatcher to re-send from `cut` (it picks the request up within ~1 s);
    returns the request's name in ``replay_folder``, which the dispatcher deletes once taken."""
    name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.json"
    request = {"from": cut.to_json(), "sinks": list(sinks or [])}
    replay_folder(settings).write_bytes(name, data=json.dumps(request).encode())
    return name


def replay_folder(settings: Settings) -> Location:
    return state_dir(settings).child("replay")


def rewind_saved(settings: Settings, cut: Cut, names: Sequence[str]) -> None:
    """Move saved cursors back to `cut` (only while no dispatcher runs)."""
    folder = state_dir(settings)
    for name in names:
        data = load_state(folder, name) or {"sink": name}
        current = Position.from_json(data["position"]).start if data.get("position") else cut
        data["position"] = Position(current.meet(cut)).to_json()
        folder.write_bytes(f"{name}.json", data=json.dumps(data, indent=1).encode())


# -- status ---------------------------------------------------------------------------------------


def status(settings: Settings) -> tuple[str, list[dict[str, Any]]]:
    """The dispatcher's state as text and one row per sink: lag, failures, dead letters."""
    config = events_config(settings)
    outbox = Outbox(settings.tables_dir)
    head = outbox.head()
    running = dispatcher_running(settings)
    rows = []
    now_ms = time.time() * 1000
    for spec in config.sinks:
        try:
            saved = load_state(state_dir(settings), spec.name) or {}
        except SonglakeError as exc:
            saved = {"error": exc.message}
        stats = saved.get("stats") or {}
        if saved.get("position"):
            position = Position.from_json(saved["position"])
        else:
            position = Position(head if spec.start == "now" else BEGINNING)
        try:
            lag, oldest = outbox.pending(position, head)
        except SonglakeError as exc:
            lag, oldest, saved["error"] = -1, None, exc.message
        if saved.get("error"):
            state = "error"
        elif not running:
            state = "stopped"
        elif (
            lag
            and stats.get("last_error_at")
            and (stats.get("last_delivered_at") or "") < stats["last_error_at"]
        ):
            state = "retrying"
        else:
            state = "running"
        rows.append(
            {
                "sink": spec.name,
                "type": spec.type,
                "status": state,
                "lag": lag,
                "lag_seconds": round((now_ms - oldest) / 1000, 1) if oldest else 0.0,
                "delivered": stats.get("delivered", 0),
                "failures": stats.get("failures", 0),
                "dead_letters": stats.get("dead_letters", 0),
                "last_error": saved.get("error") or stats.get("last_error"),
            }
        )
    for name, problem in config.problems:
        rows.append(
            {
                "sink": name,
                "type": "?",
                "status": "misconfigured",
                "lag": None,
                "lag_seconds": None,
                "delivered": None,
                "failures": None,
                "dead_letters": None,
                "last_error": problem,
            }
        )
    text = (
        f"dispatcher: running ({holder(settings=settings)})"
        if running
        else ("dispatcher: not running")
    )
    return text, rows
