"""Live analysis messages as server-sent events: ``GET /events``.

Each event's ``data`` is Song's analysis message and its ``id`` a position in the outbox; a client
that reconnects with ``Last-Event-ID`` (a browser's EventSource does so by itself) resumes right
after that event. Query parameters: ``from`` (a catalog version or an ISO-8601 time; default: only
events committed from now on) and ``limit`` (end the stream after that many events). A stream ends
after ``[events] sse_max_seconds`` and the client reconnects; at most ``sse_max_clients`` streams
run at once, since each holds a server thread: the next one gets 503.

The messages carry unpublished analyses, so a stream needs a token (``api/auth.py``): the system
scope sees every study; a study's READ or WRITE scope (``PROGRAMDATA-<studyId>.READ``) sees that
study's events only (the ids of the others still advance, so Last-Event-ID resumes right). The
``events_public`` setting opens it to anyone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import ServiceUnavailable

from catalog.events.config import EventsConfig, events_config
from catalog.events.messages import Messages, follow, start_position
from catalog.events.outbox import Outbox

from .auth import require_events_reader
from .docs import STRING, answer, doc
from .params import current_catalog, optional_integer

bp = Blueprint("events", __name__)
_KEY = "songlake.events"
_create_lock = threading.Lock()


class Streams:
    """What the streams of one app share: the outbox reader, the message builder, the slots."""

    def __init__(self, config: EventsConfig) -> None:
        catalog = current_catalog()
        self.config = config
        self.outbox = Outbox(catalog.settings.tables_dir)
        self.messages = Messages(catalog, self.outbox, update_action=config.update_action)
        self.slots = threading.BoundedSemaphore(config.sse_max_clients)


def _streams() -> Streams:
    with _create_lock:
        streams = current_app.extensions.get(_KEY)
        if streams is None:
            streams = Streams(events_config(current_catalog().settings))
            current_app.extensions[_KEY] = streams
        return streams


@bp.get("/events")
@doc(
    "Song's analysis messages as they commit (server-sent events)",
    scope="events",
    responses={
        200: answer(
            STRING, "text/event-stream: id = a position, data = a message", "text/event-stream"
        )
    },
)
def stream() -> Response:
    """Song's analysis messages as they commit, as text/event-stream."""
    settings = current_catalog().settings
    studies = require_events_reader(settings.events_public)
    streams = _streams()
    position = start_position(
        settings,
        streams.outbox,
        last_event_id=request.headers.get("Last-Event-ID") or request.args.get("lastEventId"),
        from_=request.args.get("from"),
    )
    limit = optional_integer("limit")
    if not streams.slots.acquire(blocking=False):
        raise ServiceUnavailable(
            f"{streams.config.sse_max_clients} event streams are open already; retry later"
        )
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            streams.slots.release()

    def generate() -> Iterator[str]:
        try:
            yield "retry: 3000\n: songlake analysis messages\n\n"
            for item in follow(
                streams.messages, position, config=streams.config, limit=limit, studies=studies
            ):
                if item is None:
                    yield ": keep-alive\n\n"
                else:
                    token, record = item
                    yield f"id: {token}\ndata: {record.body.decode()}\n\n"
        finally:
            release()

    response = Response(
        generate(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.call_on_close(release)
    return response
