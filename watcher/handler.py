"""The watchdog side: which kernel events are asked for, and a handler that only filters and
enqueues (limits.md B5: every file write makes six events; the handler must be cheap).

Only close-after-write, rename and create events are requested from inotify (``EVENT_FILTER``,
which watchdog turns into the inotify mask), so modify/open/attrib events never reach Python.
Create events are needed because a file or folder moved in from outside the watched tree arrives
as a single create; readiness treats them as hints, never as proof that a file is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from .layout import is_outcome

EVENT_FILTER: list[type[FileSystemEvent]] = [FileClosedEvent, FileMovedEvent, FileCreatedEvent]


def _name(path: str) -> str:
    return path[path.rfind("/") + 1 :]


class InboxHandler(FileSystemEventHandler):
    """Turns watchdog events into ``("event", path, reason)`` / ``("moved", src, dest)``."""

    def __init__(self, post: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self.post = post
        self.seen = 0

    def dispatch(self, event: FileSystemEvent) -> None:  # cheaper than on_any_event routing
        self.seen += 1
        kind = type(event)
        if kind is FileClosedEvent:
            path = str(event.src_path)
            if not is_outcome(_name(path)):
                self.post(("event", path, "closed"))
        elif kind is FileMovedEvent:
            dest = str(event.dest_path)
            if not is_outcome(_name(dest)):
                self.post(("moved", str(event.src_path), dest))
        elif kind is FileCreatedEvent:
            path = str(event.src_path)
            if not is_outcome(_name(path)):
                self.post(("event", path, "created"))
        # folders created, moved in or renamed: watchdog reports every file inside them as a
        # (synthetic) created or moved event, so folder events themselves are not needed
