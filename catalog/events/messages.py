"""Song's analysis message for a committed change, and the live stream of them.

    {"analysisId", "studyId", "state", "action", "songServerId", "analysis"}, key = analysisId

``analysis`` is the document as ``GET /studies/{s}/analysis/{id}`` returned it right after the
change (as Song re-reads it before sending): the dynamic data, history and files committed up to
that change and nothing later (asof.py). A message is thus a function of the committed history
alone, and a replay sends the same bytes. ``state`` is the analysis' state right after the
change: the history row's new state, UNPUBLISHED for a registration, the state then in effect for
a metadata update. ``action`` is Song's AnalysisActions: CREATE, PUBLISH, UNPUBLISH, SUPPRESS; a
metadata update sends PUBLISH as Song does, or UPDATE (songlake's extension, ``update_action``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..catalog import Catalog
from ..errors import MalformedParameter
from ..settings import Settings
from .asof import Timeline
from .config import EventsConfig
from .outbox import BEGINNING, FILES, HISTORY, Change, Cut, Outbox, Position, cut_from
from .sink import Record

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency, json the fallback
    orjson = None  # type: ignore[assignment]

log = logging.getLogger("songlake.events")

ACTIONS = {"PUBLISHED": "PUBLISH", "UNPUBLISHED": "UNPUBLISH", "SUPPRESSED": "SUPPRESS"}
FULL_REFRESH_SECONDS = 5.0


class Messages:
    """Builds Song's message for each change: the read model, rewound to the change."""

    def __init__(self, catalog: Catalog, outbox: Outbox, *, update_action: str = "PUBLISH") -> None:
        self.catalog = catalog
        self.outbox = outbox
        self.timeline = Timeline(outbox)
        self.server_id = catalog.settings.song_server_id
        self.update_action = update_action
        self._seen = BEGINNING
        self._refreshed = 0.0
        self._files_seen = -1  # the files table's version at the last full refresh
        self._lock = threading.Lock()
        # records built since the last refresh: another sink asking for the same change before
        # the next refresh would build exactly the same bytes
        self._built: dict[str, Record | None] = {}

    def _catch_up(self, cut: Cut) -> None:
        """Bring the read model up to `cut` at least."""
        with self._lock:
            if self._seen.covers(cut):
                return
            head = self.outbox.head()  # read before the refresh, which then reads at least this
            files = self.outbox.latest(FILES)
            fresh = time.monotonic() - self._refreshed < FULL_REFRESH_SECONDS
            if fresh and head.analyses == self._seen.analyses and files == self._files_seen:
                # only state changes since the last refresh (the common case under load): apply
                # their rows, much cheaper than a refresh of every table; a document depends on
                # other tables only through rows committed before an analyses or a files row
                # (which take the other branch), so the periodic refresh is a safety net
                model = self.catalog.model
                for version in range(self._seen.history + 1, head.history + 1):
                    model.apply_rows(HISTORY, self.outbox.history_rows(version - 1, version))
                    model.mark_seen(HISTORY, version)  # so no refresh reads them again
            else:
                self.catalog.refresh()
                self._refreshed = time.monotonic()
                self._files_seen = files
            self.timeline.advance()
            self._seen = head
            self._built = {}

    def records(self, changes: Sequence[Change], cut: Cut) -> list[Record | None]:
        """One record per change; None for a change of an analysis that never committed."""
        self._catch_up(cut)
        model = self.catalog.model
        built = self._built
        if len(built) > 50_000:
            built.clear()
        out: list[Record | None] = []
        docs: dict[str, bytes] = {}  # the current document of an analysis, built once a chunk
        with model.lock:
            for ch in changes:
                if ch.event_id in built:
                    out.append(built[ch.event_id])
                    continue
                record = self._build(ch, docs)
                built[ch.event_id] = record
                out.append(record)
        return out

    def _build(self, ch: Change, docs: dict[str, bytes]) -> Record | None:
        model = self.catalog.model  # its lock is held by the caller
        current = model.analyses.get(ch.analysis_id)
        if current is None:
            log.warning(
                "change %s of analysis %s skipped: the analysis never committed",
                ch.event_id,
                ch.analysis_id,
            )
            return None
        rec, files = self.timeline.record_at(model, current, ch)
        if ch.table == HISTORY:
            state = ch.updated_state or "UNPUBLISHED"
            action = ACTIONS.get(state, state)
        elif ch.data_version == 1:
            state, action = "UNPUBLISHED", "CREATE"
        else:
            state, action = rec.state, self.update_action
        head = encode(
            {
                "analysisId": ch.analysis_id,
                "studyId": rec.study_id,
                "state": state,
                "action": action,
                "songServerId": self.server_id,
            }
        )
        if rec is current:  # nothing of it committed after this change
            doc = docs.get(ch.analysis_id)
            if doc is None:
                doc = docs[ch.analysis_id] = encode(model.analysis_doc(rec))
        else:
            doc = encode(model.analysis_doc(rec, files=files))
        body = head[:-1] + b',"analysis":' + doc + b"}"
        return Record(ch.event_id, ch.analysis_id, action, body)


def encode(value: Any) -> bytes:
    """Compact UTF-8 JSON; orjson when installed (several times faster), else the json module."""
    if orjson is not None:
        try:
            return orjson.dumps(value)
        except TypeError:  # an integer beyond 64 bits, which only json can write
            pass
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# -- live stream (server-sent events) -------------------------------------------------------------


def start_position(
    settings: Settings, outbox: Outbox, *, last_event_id: str | None, from_: str | None
) -> Position:
    """Where a stream starts: after Last-Event-ID, at --from, or at the head (new events only)."""
    if last_event_id:
        position = Position.parse(last_event_id)
        if not outbox.head().covers(position.end or position.start):
            raise MalformedParameter(
                f"'{last_event_id}' is not an event id of this server (it is ahead of the catalog)",
            )
        return position
    if from_:
        return Position(cut_from(settings, from_))
    return Position(outbox.head())


def follow(
    messages: Messages,
    position: Position,
    *,
    config: EventsConfig,
    stop: threading.Event | None = None,
    limit: int | None = None,
    max_seconds: float | None = None,
    studies: frozenset[str] | None = None,
) -> Iterator[tuple[str, Record] | None]:
    """Yield (event id, record) as changes commit; None as a heartbeat while idle.

    With `studies`, only the changes of those studies (the others are passed over)."""
    outbox = messages.outbox
    deadline = time.monotonic() + (config.sse_max_seconds if max_seconds is None else max_seconds)
    beat = time.monotonic() + config.sse_heartbeat
    sent = 0
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        head = outbox.head()
        batch: list[tuple[Position, Change]] = []
        scanned = 0
        for after, change in outbox.iter_from(position, head, config.batch_commits):
            scanned += 1
            if studies is None or change.study_id in studies:
                batch.append((after, change))
            else:
                position = after  # not this caller's: passed over, the stream moves on
            if len(batch) >= config.chunk_events or scanned >= 50 * config.chunk_events:
                break
        if batch:
            end = batch[-1][0].end or head
            records = messages.records([c for _, c in batch], end)
            for (after, _), record in zip(batch, records, strict=True):
                position = after
                if record is not None:
                    yield after.token(), record
                    sent += 1
                    if limit is not None and sent >= limit:
                        return
            continue
        if scanned:
            continue
        if time.monotonic() >= beat:
            yield None
            beat = time.monotonic() + config.sse_heartbeat
        if stop is not None:
            stop.wait(config.poll_interval)
        else:
            time.sleep(config.poll_interval)
