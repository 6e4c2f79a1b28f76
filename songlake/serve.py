"""``songlake serve``: the Song-compatible API, the inbox watcher and the event dispatcher, started,
run and stopped together around one Catalog (one read model for all three).

The order matters: the port is bound first (a taken port stops everything before it starts), the
watcher starts before the API announces itself, the dispatcher beside it,
and on the way out (Ctrl-C, SIGTERM, a failing server) the dispatcher and then the watcher, with
its upload processes, are stopped whatever happened.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from flask import Flask

from api.app import create_app
from api.auth import admin_token_path, auth_configured, ensure_admin_token
from api.server import ApiServer
from api.server import serve as run_server
from catalog.catalog import Catalog
from catalog.events import start_background
from catalog.settings import Settings
from catalog.tables import TableStore
from watcher import Watcher
from watcher.logs import configure as configure_watcher_logs
from watcher.status import inbox


def prepare(settings: Settings, *, no_auth: bool = False) -> tuple[Settings, list[str]]:
    """Create the root if needed and settle auth; returns the settings to serve with and the
    notices to print (auth off, or where the admin token is)."""
    if not TableStore(settings.tables_dir).exists():
        Catalog.init(settings)
    if no_auth:
        settings = dataclasses.replace(settings, auth=False)
    notices = []
    if not settings.auth:
        notices.append(
            "WARNING: API auth is OFF: anyone who can reach the port can write to the catalog"
        )
    elif not auth_configured(settings) or admin_token_path(settings).exists():
        token_path, created = ensure_admin_token(settings)
        verb = "created" if created else "in"
        notices.append(
            f"admin token (system scope) {verb} {token_path}; send it as "
            "'Authorization: Bearer <token>'"
        )
    return settings, notices


def make_app(catalog: Catalog, settings: Settings) -> Flask:
    """The API and the console over `catalog`; the console's inbox page reads the watcher's
    ledger through the reader handed in here (the API never imports the watcher)."""
    return create_app(catalog, settings=settings, inbox=functools.partial(inbox, settings))


def serve(
    catalog: Catalog,
    settings: Settings,
    *,
    host: str,
    port: int,
    threads: int,
    watch: bool = True,
    announce: Callable[[str], object] = print,
) -> None:
    """Serve until interrupted; the watcher and the dispatcher share the API's catalog.

    The port is bound first: when it is taken, OSError is raised before anything starts.
    """
    server = ApiServer(make_app(catalog, settings), host, port, threads)
    watcher = None
    dispatcher = None
    try:
        if watch:
            configure_watcher_logs()
            watcher = Watcher(catalog, settings).start()
        announce(f"songlake serving {settings.location} on http://{host}:{port}")
        dispatcher = start_background(catalog)  # Song's analysis messages, beside the API
        run_server(server)
    finally:
        if dispatcher is not None:
            dispatcher.stop()
        if watcher is not None:
            watcher.stop()
