"""Read-only SQL for admins: ``POST /sql`` with the system scope, over the views of ``songlake
sql`` (catalog/sql.py: one SELECT, no file access outside the catalog), with a row limit, a time
limit (the query is interrupted when it runs out), a memory limit and a limit on the answer's
bytes (``payload.too.large``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from catalog import sql
from catalog.errors import MalformedParameter
from catalog.model import utc_iso

from .auth import require_system
from .docs import doc, ref, request_body
from .params import current_catalog, current_settings, json_body

bp = Blueprint("sql", __name__)


@bp.post("/sql")
@doc(
    "Read-only SQL over the catalog views (one SELECT, row and time limits)",
    tag="admin",
    scope="system",
    body=request_body(ref("SqlRequest"), plain_text=True),
    ok=ref("SqlResult"),
)
def run_sql() -> Response:
    """Body: ``{"query": "SELECT ...", "limit": 100, "asOf": "<version or ISO time>"}``, or the
    query alone as text/plain. Answer: ``{columns, rows, rowCount, truncated}``."""
    require_system()
    settings = current_settings()
    if request.mimetype == "text/plain":
        body: dict = {"query": request.get_data(as_text=True)}
    else:
        body = json_body()
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise MalformedParameter("The body needs a 'query' string", name="query")
    return jsonify(run_query(query, body.get("limit", settings.sql_row_limit), body.get("asOf")))


def run_query(query: str, limit: Any, as_of: Any = None) -> dict[str, Any]:
    """One read-only query with POST /sql's limits: ``{columns, rows, rowCount, truncated}``."""
    catalog = current_catalog()
    settings = current_settings()
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise MalformedParameter("'limit' must be an integer >= 0", name="limit", value=limit)
    limit = min(limit, settings.sql_row_limit)
    versions = None
    if as_of not in (None, ""):
        versions = catalog.tables.versions_as_of(
            str(as_of), retention_hours=settings.vacuum_retention
        )
    columns, rows = sql.run(
        catalog.tables,
        query,
        versions=versions,
        row_limit=limit + 1,
        timeout=settings.sql_timeout,
        memory_limit=settings.sql_memory_limit,
        max_bytes=settings.sql_max_bytes,
    )
    return {
        "columns": columns,
        "rows": [[_value(v) for v in r] for r in rows[:limit]],
        "rowCount": min(len(rows), limit),
        "truncated": len(rows) > limit,
    }


def _value(value: Any) -> Any:
    """Times in songlake's own format, as `songlake sql` prints them (UTC, milliseconds, Z)."""
    return utc_iso(value) if isinstance(value, datetime) else value
