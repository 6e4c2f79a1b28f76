"""The Flask app factory: one Catalog, one blueprint per resource, Song's error envelope.

Reads are public; writes need a bearer token with Song's scopes (api/auth.py). Lifecycle changes
of concurrent requests are group-committed (api/groupcommit.py). ``/openapi.json`` describes every
route and ``/docs`` renders it (api/openapi.py).
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask

from catalog.catalog import Catalog
from catalog.settings import Settings

from . import (
    analyses,
    analysis_types,
    auth,
    console,
    downloads,
    drs,
    entities,
    events,
    export,
    legacy,
    openapi,
    search,
    sql,
    studies,
    system,
    uploads,
)
from .errors import refuse_large_body, register_error_handlers
from .groupcommit import GroupCommitter
from .jsonio import FastJSONProvider
from .params import COMMITTER, EXTENSION, REFRESH, SETTINGS, check_path_args

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
        self.failure: str | None = None  # why the last refresh failed (shown by /health)

    def __call__(self) -> None:
        if time.monotonic() < self._due or not self._lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() < self._due:  # another thread refreshed meanwhile
                return
            try:
                self.catalog.refresh()
                self.failure = None
            except Exception as exc:
                # reads still work from the state in memory; the next interval tries again
                log.exception("catalog refresh failed; serving the last state seen")
                self.failure = f"{type(exc).__name__} at {time.strftime('%H:%M:%S')}"
            self._due = time.monotonic() + self.interval
        finally:
            self._lock.release()


def create_app(
    catalog: Catalog,
    *,
    settings: Settings | None = None,
    inbox: console.InboxReader | None = None,
) -> Flask:
    """A Flask app serving `catalog` with Song's REST API, and the web console under /ui
    (`inbox` reads the watcher's pending, rejected and receipts for its inbox page)."""
    settings = settings or catalog.settings
    app = Flask(__name__, static_folder=None)
    app.json = FastJSONProvider(app)
    # Spring matches /x and /x/ alike, and the SDKs call POST /studies/{id}/ with the slash
    app.url_map.strict_slashes = False
    app.json.sort_keys = False  # keep Song's field order
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    app.extensions[EXTENSION] = catalog
    app.extensions[SETTINGS] = settings
    app.before_request(refuse_large_body)
    gate = app.extensions[REFRESH] = RefreshGate(catalog, settings.refresh_interval)
    app.before_request(gate)
    app.before_request(check_path_args)
    register_error_handlers(app)
    auth.init_app(app, settings)
    app.extensions[COMMITTER] = GroupCommitter(
        lambda batch: catalog.change_states(batch, storage_checked=True)
    )
    for module in (system, studies, analyses, analysis_types, entities, export, legacy, search):
        app.register_blueprint(module.bp)
    app.register_blueprint(sql.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(events.bp)  # GET /events (SSE)
    app.register_blueprint(downloads.bp)  # Score downloads
    console.init_app(app, settings, inbox)  # /ui, and / for browsers
    app.register_blueprint(uploads.bp)  # Score's upload protocol
    app.register_blueprint(drs.bp)  # GA4GH DRS 1.4
    return app
