"""The console's reading pages and lifecycle actions: overview, inbox, analyses (the portal
search as a table), one analysis with its files, dynamic data, timeline and versions, and the
publish / unpublish / suppress forms, which go through the API's own group-committed path."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue

from catalog.errors import IllegalAnalysisState, MalformedParameter, SonglakeError
from catalog.events import status as events_status
from catalog.model import STATES

from ..analyses import change_state
from ..auth import AuthError, require_write
from ..downloads import check_access, local_url
from ..errors import status_of
from ..params import current_catalog
from ..search import ANALYSIS_SORT, MAX_LIMIT, PARAMS, read_filters, read_paging
from .render import day_chart, diff_lines, marked_json
from .session import may_write, require_sign_in

bp = Blueprint("pages", __name__)

#: where create_app keeps the inbox reader that the composition root hands it
INBOX = "songlake.console.inbox"
InboxReader = Callable[[], dict[str, Any]]
ACTIONS = ("publish", "unpublish", "suppress")
#: the analysis fields Song defines; the rest of a document is the type's dynamic data
BASE_FIELDS = {
    "analysisId",
    "studyId",
    "analysisState",
    "analysisStateHistory",
    "analysisType",
    "createdAt",
    "updatedAt",
    "firstPublishedAt",
    "publishedAt",
    "samples",
    "files",
}


def _inbox() -> dict[str, Any] | None:
    reader: InboxReader | None = current_app.extensions.get(INBOX)
    return None if reader is None else reader()


@bp.get("/")
def overview() -> ResponseReturnValue:
    catalog = current_catalog()
    summary = catalog.overview(days=30)
    try:
        dispatcher, sinks = events_status(catalog.settings)
    except SonglakeError as exc:
        dispatcher, sinks = f"events status unreadable: {exc.message}", []
    started = time.perf_counter()
    try:
        reachable = bool(catalog.store.ping())
    except Exception:  # noqa: BLE001 - shown on the page, as /health reports it
        reachable = False
    inbox = _inbox()
    return render_template(
        "console/overview.html",
        studies=summary["studies"],
        states=STATES,
        chart=day_chart(summary["days"]),
        days=summary["days"],
        inbox=inbox["totals"] if inbox is not None else None,
        dispatcher=dispatcher,
        sinks=sinks,
        store={
            "reachable": reachable,
            "describe": catalog.store.describe(),
            "ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )


@bp.get("/inbox")
def inbox() -> ResponseReturnValue:
    """Pending and rejected sidecars and recent receipts, of the studies the caller may write."""
    require_sign_in()
    found = _inbox()
    reader = found is not None
    data = found if found is not None else {"pending": [], "rejected": [], "receipts": []}
    study = request.args.get("studyId", "").strip()
    folder = request.args.get("folder", "").strip()

    def keep(row: dict[str, Any]) -> bool:
        return (
            may_write(row.get("studyId"))
            and (not study or row.get("studyId") == study)
            and (not folder or folder in (row.get("path") or ""))
        )

    rows = {k: [r for r in data[k] if keep(r)] for k in ("pending", "rejected", "receipts")}
    for row in rows["rejected"]:
        row["marked"] = marked_json(row.get("text"), [p.get("pointer") for p in row["problems"]])
    return render_template(
        "console/inbox.html",
        reader=reader,
        totals=data["totals"] if reader else None,
        study=study,
        folder=folder,
        **rows,
    )


# -- analyses --------------------------------------------------------------------------------------


@bp.get("/analyses")
def analyses() -> ResponseReturnValue:
    """The portal search with every filter of GET /search/analyses; all states unless chosen."""
    filters = read_filters()
    if not request.args.get("analysisStates"):
        filters = dataclasses.replace(filters, states=tuple(STATES))
    sort, descending, limit, offset = read_paging(ANALYSIS_SORT)
    page = current_catalog().search_analyses(
        filters, sort=sort, descending=descending, limit=limit, offset=offset
    )
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "offset" and v != ""]

    def page_url(at: int) -> str:
        return url_for("console.pages.analyses") + "?" + urlencode([*args, ("offset", str(at))])

    total = page["totalAnalyses"]
    return render_template(
        "console/analyses.html",
        page=page,
        total=total,
        params=PARAMS,
        args=request.args,
        states=STATES,
        chosen_states=set(filters.states),
        sorts=ANALYSIS_SORT.choices,
        sort=sort,
        descending=descending,
        limit=limit,
        offset=offset,
        max_limit=MAX_LIMIT,
        previous=page_url(max(0, offset - limit)) if offset > 0 else None,
        following=page_url(offset + limit) if offset + limit < total else None,
    )


def _analysis_page(analysis_id: str, *, error: SonglakeError | None = None) -> tuple[str, int]:
    catalog = current_catalog()
    doc = catalog.find_analysis(analysis_id)
    study_id = doc["studyId"]
    files = [
        dict(f, download=_may_download(study_id, doc["analysisState"], f.get("fileAccess")))
        for f in doc.get("files", [])
    ]
    page = render_template(
        "console/analysis.html",
        doc=doc,
        files=files,
        dynamic={k: v for k, v in doc.items() if k not in BASE_FIELDS},
        history=catalog.history(study_id, analysis_id),
        may_change=may_write(study_id),
        actions=ACTIONS,
        error=error,
    )
    return page, status_of(error) if error is not None else 200


def _may_download(study_id: str, state: str, access: str | None) -> bool:
    """Score's rules: a PUBLISHED analysis, and for a controlled file a READ scope."""
    if state != "PUBLISHED":
        return False
    try:
        check_access(study_id, access)
    except (AuthError, MalformedParameter):
        return False
    return True


@bp.get("/analyses/<analysis_id>")
def analysis(analysis_id: str) -> ResponseReturnValue:
    return _analysis_page(analysis_id)


@bp.post("/analyses/<analysis_id>/state")
def change(analysis_id: str) -> ResponseReturnValue:
    """Publish, unpublish or suppress with a reason; suppress also needs its confirmation."""
    catalog = current_catalog()
    study_id = catalog.study_of(analysis_id)
    require_write(study_id)
    action = request.form.get("action", "")
    reason = request.form.get("reason", "").strip()
    try:
        if action not in ACTIONS:
            raise MalformedParameter(
                f"The action must be one of {', '.join(ACTIONS)}, not '{action}'",
                name="action",
                value=action,
            )
        if not reason:
            raise MalformedParameter("A reason is required", name="reason")
        if action == "suppress" and request.form.get("confirm") != "yes":
            raise MalformedParameter(
                "Suppressing withdraws the analysis for good: tick the confirmation",
                name="confirm",
            )
        message = change_state(study_id, analysis_id, action, reason=reason)
    except SonglakeError as exc:
        if isinstance(exc, AuthError):
            raise
        return _analysis_page(analysis_id, error=exc)
    flash(message)
    return redirect(url_for("console.pages.analysis", analysis_id=analysis_id), 303)


@bp.get("/analyses/<analysis_id>/versions")
def versions(analysis_id: str) -> ResponseReturnValue:
    """Every version of the dynamic data, and the diff between the two chosen (default: the last
    two)."""
    catalog = current_catalog()
    study_id = catalog.study_of(analysis_id)
    found = catalog.versions(study_id, analysis_id)
    numbers = [v["version"] for v in found]
    older = _version_arg("from", numbers[-2] if len(numbers) > 1 else numbers[0], numbers)
    newer = _version_arg("to", numbers[-1], numbers)
    by_number = {v["version"]: v for v in found}
    return render_template(
        "console/versions.html",
        analysis_id=analysis_id,
        versions=found,
        older=older,
        newer=newer,
        diff=diff_lines(by_number[older]["data"], by_number[newer]["data"]),
    )


def _version_arg(name: str, default: int, numbers: list[int]) -> int:
    value = request.args.get(name, "")
    if value == "":
        return default
    if not value.isdigit() or int(value) not in numbers:
        raise MalformedParameter(
            f"The version '{value}' is not one of {', '.join(map(str, numbers))}",
            name=name,
            value=value,
        )
    return int(value)


@bp.get("/files/<object_id>/download")
def download(object_id: str) -> ResponseReturnValue:
    """A file's bytes, by Score's rules: PUBLISHED analyses, controlled files with a READ scope."""
    catalog = current_catalog()
    entity = catalog.legacy_entity(object_id)
    doc = catalog.find_analysis(catalog.model.files[object_id].analysis_id)
    check_access(doc["studyId"], entity.get("access"))
    if doc["analysisState"] != "PUBLISHED":
        raise IllegalAnalysisState(
            f"Can only download objects of PUBLISHED analyses; objectId '{object_id}' belongs "
            f"to a {doc['analysisState']} analysis",
            object_id=object_id,
        )
    expires = catalog.settings.s3_url_expiration
    url = catalog.store.presigned_url(object_id, expires=expires) or local_url(object_id, expires)
    return redirect(url, 303)
