"""The console's system-scope pages: the SQL console (POST /sql's limits, an as-of picker, paged
results and a CSV download) and the events and storage page (``songlake events status`` and the
last ``storage verify`` report, with a button that runs it)."""

from __future__ import annotations

import csv
import io
from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from catalog import sql as catalog_sql
from catalog.errors import MalformedParameter, SonglakeError
from catalog.events import status as events_status

from ..auth import AuthError, require_system
from ..errors import status_of
from ..params import current_catalog, current_settings
from ..sql import run_query
from .session import may_write, require_sign_in

bp = Blueprint("admin", __name__)

PAGE_ROWS = 100
EXAMPLE = "SELECT study_id, analysis_state, count(*) AS analyses FROM analyses GROUP BY ALL"


def _form() -> tuple[str, str, int]:
    query = request.form.get("query", "").strip()
    as_of = request.form.get("asOf", "").strip()
    page = request.form.get("page", "1").strip() or "1"
    if not page.isdigit() or int(page) < 1:
        raise MalformedParameter(f"The page must be a number >= 1, not '{page}'", name="page")
    if not query:
        raise MalformedParameter("The query box is empty", name="query")
    return query, as_of, int(page)


def _sql_page(**extra: Any) -> str:
    catalog = current_catalog()
    versions = catalog.tables.versions()
    return render_template(
        "console/sql.html",
        views=sorted(catalog_sql.VIEWS),
        catalog_version=versions.get("commits"),
        row_limit=current_settings().sql_row_limit,
        timeout=current_settings().sql_timeout,
        page_rows=PAGE_ROWS,
        **{"query": EXAMPLE, "as_of": "", "result": None, "error": None, **extra},
    )


@bp.get("/sql")
def sql_form() -> ResponseReturnValue:
    require_system()
    return _sql_page()


@bp.post("/sql")
def sql_run() -> ResponseReturnValue:
    """Run the query; the page of rows asked for is shown, up to the row limit in all."""
    require_system()
    query, as_of, page = request.form.get("query", ""), request.form.get("asOf", ""), 1
    try:
        query, as_of, page = _form()
        result = run_query(query, current_settings().sql_row_limit, as_of)
    except SonglakeError as exc:
        if isinstance(exc, AuthError):
            raise
        return _sql_page(query=query, as_of=as_of, error=exc), status_of(exc)
    pages = max(1, -(-result["rowCount"] // PAGE_ROWS))
    page = min(page, pages)
    start = (page - 1) * PAGE_ROWS
    return _sql_page(
        query=query,
        as_of=as_of,
        result=result,
        rows=result["rows"][start : start + PAGE_ROWS],
        page=page,
        pages=pages,
        first_row=start + 1,
    )


@bp.post("/sql.csv")
def sql_csv() -> ResponseReturnValue:
    """Every row of the query (up to the row limit) as CSV."""
    require_system()
    query, as_of, _ = _form()
    result = run_query(query, current_settings().sql_row_limit, as_of)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(result["columns"])
    writer.writerows(result["rows"])
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="songlake-query.csv"'},
    )


@bp.get("/events")
def events() -> ResponseReturnValue:
    """Each sink as ``songlake events status`` shows it, and the last storage report."""
    require_sign_in()
    catalog = current_catalog()
    dispatcher, sinks = events_status(catalog.settings)
    return render_template(
        "console/events.html",
        dispatcher=dispatcher,
        sinks=sinks,
        report=catalog.last_storage_report(),
        store=catalog.store.describe(),
        may_verify=may_write(None),
    )


@bp.post("/storage/verify")
def verify() -> ResponseReturnValue:
    """Run ``storage verify`` over the whole store; its report replaces the last one."""
    require_system()
    report = current_catalog().verify_storage()
    flash(
        f"storage verify: {report.checked} registered file(s) checked, "
        f"{len(report.findings)} problem(s)"
    )
    return redirect(url_for("console.admin.events"), 303)
