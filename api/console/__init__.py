"""The web console for data administrators, under ``/ui``: server-rendered pages (Jinja, no
JavaScript needed to read, no build step, nothing fetched from elsewhere) over the same Catalog
and the same rules as the API.

    session   the /ui blueprint: sign in with a token, the session cookie, CSRF, error pages
    pages     overview, inbox, analyses (portal search), an analysis, lifecycle actions
    admin     SQL console, events and storage (system scope)
    render    a sidecar with pointers marked, version diffs, the per-day SVG chart

The console never imports the watcher: ``songlake serve`` hands ``create_app`` an inbox reader
(a callable answering the watcher's pending, rejected and receipts as plain data).
"""

from __future__ import annotations

from flask import Flask, redirect, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from catalog.settings import Settings

from . import admin, pages, session
from .pages import INBOX, InboxReader

session.bp.register_blueprint(pages.bp)
session.bp.register_blueprint(admin.bp)


def init_app(app: Flask, settings: Settings, inbox: InboxReader | None = None) -> None:
    """Serve the console under /ui, and send browsers that open / there."""
    session.configure(app, settings)
    if inbox is not None:
        app.extensions[INBOX] = inbox
    app.register_blueprint(session.bp)
    app.add_url_rule("/", "root", _root, methods=["GET"])


def _root() -> ResponseReturnValue:
    """A browser (which asks for HTML) goes to the console; JSON clients get the 404 as before."""
    accept = request.accept_mimetypes
    if accept.best_match(["application/json", "text/html"]) == "text/html" and accept["text/html"]:
        return redirect("/ui/", 302)
    raise NotFound()


__all__ = ["InboxReader", "init_app"]
