"""The Flask app factory: one Catalog, one blueprint per resource, Song's error envelope.

Writes have NO auth in this foundation: anyone who can reach the port can submit, publish and
register types. ``serve`` listens on 127.0.0.1 by default for that reason; bearer tokens with Song's
scopes come with the API issue.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask

from catalog.catalog import Catalog
from catalog.settings import Settings

from . import analyses, analysis_types, studies, system
from .errors import register_error_handlers
from .params import EXTENSION

log = logging.getLogger("songlake.api")


class RefreshGate:
    """Before a request, pick up other processes' commits, at most once per interval.

    One thread refreshes while the others go on answering from the state already loaded, so a slow
    refresh never queues requests behind it.
    """

    def __init__(self, catalog: Catalog, interval: float) -> None:
        self.catalog = catalog
        self.interval = interval
        self._due = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        if time.monotonic() < self._due or not self._lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() < self._due:  # another thread refreshed meanwhile
                return
            try:
                self.catalog.refresh()
            except Exception:
                # reads still work from the state in memory; the next interval tries again
                log.exception("catalog refresh failed; serving the last state seen")
            self._due = time.monotonic() + self.interval
        finally:
            self._lock.release()


def create_app(catalog: Catalog, *, settings: Settings | None = None) -> Flask:
    """A Flask app serving `catalog` with Song's REST API."""
    settings = settings or catalog.settings
    app = Flask(__name__, static_folder=None)
    # Spring matches /x and /x/ alike, and the SDKs call POST /studies/{id}/ with the slash
    app.url_map.strict_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep Song's field order
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    app.extensions[EXTENSION] = catalog
    app.before_request(RefreshGate(catalog, settings.refresh_interval))
    register_error_handlers(app)
    for module in (system, studies, analyses, analysis_types):
        app.register_blueprint(module.bp)
    return app
