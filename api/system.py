"""Liveness, health and version: ``/isAlive`` (Song's ping), ``/health``, ``/version``."""

from __future__ import annotations

import platform
import time
from importlib import metadata

from flask import Blueprint, Response, current_app, jsonify

from catalog.errors import Unavailable

from .docs import BOOLEAN, doc, ref
from .params import COMMITTER, REFRESH, current_catalog

bp = Blueprint("system", __name__)

#: the Song release whose REST API songlake answers like
SONG_API_VERSION = "5.1.2"


@bp.get("/isAlive")
@doc("Song's ping: true", ok=BOOLEAN)
def is_alive() -> Response:
    """Song's ping: the JSON boolean ``true``."""
    return jsonify(True)


@bp.get("/health")
@doc(
    "Table versions, read model and object-store reachability (503 when down)",
    ok=ref("Health"),
)
def health() -> Response:
    """Table versions, read-model state and object-store reachability; 503 when a part is down."""
    catalog = current_catalog()
    problems = []
    started = time.perf_counter()
    try:
        versions = catalog.tables.versions()
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is the health check
        versions = {}
        problems.append(f"tables unreadable: {type(exc).__name__}")
    store_error = "object store not reachable"
    try:
        reachable = bool(catalog.store.ping())
    except Exception as exc:  # noqa: BLE001
        reachable = False
        store_error = f"object store error: {type(exc).__name__}"
    if not reachable:
        problems.append(store_error)
    gate = current_app.extensions.get(REFRESH)
    failure = getattr(gate, "failure", None)
    if failure:  # the writes check against a state that no longer follows the tables
        problems.append(f"catalog refresh failing: {failure}")
    body = {
        "status": "DOWN" if problems else "UP",
        "tables": versions,
        "catalogVersion": versions.get("commits"),
        "readModel": {
            "analyses": len(catalog.model.analyses),
            "studies": len(catalog.model.studies),
            "file": str(catalog.model.path),  # this machine's file, and what it reflects
            "versions": catalog.model.versions,
            **catalog.model.apply_stats(),
        },
        "objectStore": {"reachable": reachable, "store": catalog.store.describe()},
        "groupCommit": current_app.extensions[COMMITTER].stats(),
        "writer": catalog.committer.status(),
        "checkedInMs": round((time.perf_counter() - started) * 1000, 1),
    }
    if problems:
        raise Unavailable("; ".join(problems), health=body)
    return jsonify(body)


@bp.get("/version")
@doc("songlake's version", ok=ref("Version"))
def version() -> Response:
    """songlake's version and the Song API it is compatible with."""
    try:
        own = metadata.version("songlake")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return jsonify(
        {
            "name": "songlake",
            "version": own,
            "songApiVersion": SONG_API_VERSION,
            "python": platform.python_version(),
        }
    )
