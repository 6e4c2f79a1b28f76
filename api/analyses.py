"""Analyses: submit, read, list, page, id search, update (PUT / PATCH) and the lifecycle
(publish / unpublish / suppress, group-committed across concurrent requests).

Reads are public; every write needs the study's write scope (api/auth.py).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from catalog.errors import MalformedParameter
from catalog.model import STATES
from catalog.read.idsearch import ID_SEARCH_PARAMS
from catalog.write.lifecycle import Transition

from .auth import actor, require_write
from .docs import OBJECT, answer, array, doc, ref, request_body
from .groupcommit import GroupCommitter
from .params import COMMITTER, Csv, Flag, Int, Params, Text, current_catalog, json_body

bp = Blueprint("analyses", __name__)

#: the query parameters of this blueprint: the views read them, @doc lists them
PARAMS = Params(
    # the enum only documents: the catalog checks the states
    Csv("analysisStates", "states, default PUBLISHED", enum=STATES, default=("PUBLISHED",)),
    Int("limit", default=100, minimum=0),
    Int("offset", default=0, minimum=0),
    Flag("allowDuplicates", "accept md5s already known"),
    Flag("ignoreUndefinedMd5"),
    # GET .../analysis/search/id: each a case-insensitive substring regex
    *(Text(name, "case-insensitive POSIX regex, substring match") for name in ID_SEARCH_PARAMS),
)
#: POST .../search/id body keys (Song's IdSearchRequest, plural quirks included) -> query names
SEARCH_BODY_KEYS = {
    "donorId": "donorId",
    "sampleId": "sampleId",
    "specimenId": "specimenId",
    "objectId": "fileId",
    "submitterSampleId": "submitterSampleId",
    "submitterDonorIds": "submitterDonorId",
    "submitterSpecimenIds": "submitterSpecimenId",
}
_UPDATED = {200: answer(description="updated (empty body)")}


def committer() -> GroupCommitter:
    return current_app.extensions[COMMITTER]


# literal paths first: /paginated and /search/id must not be taken for analysis ids


@bp.get("/studies/<study_id>/analysis")
@doc(
    "Every analysis of a study in the given states",
    params=PARAMS.of("analysisStates"),
    ok=array(ref("Analysis")),
)
def list_analyses(study_id: str) -> Response:
    return jsonify(current_catalog().list_analyses(study_id, PARAMS["analysisStates"].read()))


@bp.get("/studies/<study_id>/analysis/paginated")
@doc(
    "A page of a study's analyses, sorted by analysisId",
    params=PARAMS.of("analysisStates", "limit", "offset"),
    ok=ref("AnalysisPage"),
)
def page_analyses(study_id: str) -> Response:
    states = PARAMS["analysisStates"].read()
    limit = PARAMS["limit"].read()
    offset = PARAMS["offset"].read()
    return jsonify(current_catalog().page_analyses(study_id, states, limit=limit, offset=offset))


def _search(study_id: str, terms: dict[str, str | None]) -> Response:
    catalog = current_catalog()
    ids = catalog.search_ids(study_id, **terms)
    return jsonify(catalog.get_analyses(study_id, ids))


@bp.get("/studies/<study_id>/analysis/search/id")
@doc(
    "Song's id search: analyses whose (sample x file) rows match every regex",
    params=PARAMS.of(*ID_SEARCH_PARAMS),
    ok=array(ref("Analysis")),
)
def search_ids(study_id: str) -> Response:
    return _search(study_id, {name: PARAMS[name].read() for name in ID_SEARCH_PARAMS})


@bp.post("/studies/<study_id>/analysis/search/id")
@doc(
    "Song's id search with the terms in the body",
    body=request_body(ref("IdSearchRequest")),
    ok=array(ref("Analysis")),
)
def search_ids_post(study_id: str) -> Response:
    """Song's IdSearchRequest body; list-valued keys take their first item.

    A key Song does not define, or a value that is no string (or list of strings), is refused:
    ignored, it would widen the search to the whole study.
    """
    body = json_body()
    accepted = ", ".join(SEARCH_BODY_KEYS)
    for key, value in body.items():
        if key not in SEARCH_BODY_KEYS:
            raise MalformedParameter(
                f"Unknown id search key '{key}'; the keys accepted are {accepted}",
                name=key,
                value=value,
            )
        items = value if isinstance(value, list) else [value]
        if not all(item is None or isinstance(item, str) for item in items):
            raise MalformedParameter(
                f"The id search key '{key}' takes a string or a list of strings",
                name=key,
                value=value,
            )
    terms: dict[str, str | None] = {}
    for key, name in SEARCH_BODY_KEYS.items():
        value = body.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        terms[name] = value or None
    return _search(study_id, terms)


@bp.get("/studies/<study_id>/analysis/<analysis_id>")
@doc("One analysis (Score reads its analysisState)", ok=ref("Analysis"))
def get_analysis(study_id: str, analysis_id: str) -> Response:
    return jsonify(current_catalog().get_analysis(study_id, analysis_id))


@bp.get("/studies/<study_id>/analysis/<analysis_id>/files")
@doc("The analysis' files (the source of a manifest)", ok=array(ref("File")))
def analysis_files(study_id: str, analysis_id: str) -> Response:
    return jsonify(current_catalog().analysis_files(study_id, analysis_id))


@bp.post("/submit/<study_id>")
@doc(
    "Register a payload as a new UNPUBLISHED analysis",
    scope="study",
    params=PARAMS.of("allowDuplicates"),
    body=request_body(ref("Payload")),
    ok=ref("SubmitResponse"),
)
def submit(study_id: str) -> Response:
    """Register a payload; the body is read raw, as Song reads it, whatever its content type."""
    require_write(study_id)
    allow_duplicates = PARAMS["allowDuplicates"].read()
    analysis_id = current_catalog().submit(
        request.get_data(cache=False), study_id, allow_duplicates=allow_duplicates, actor=actor()
    )
    return jsonify({"analysisId": analysis_id, "status": "OK"})


@bp.put("/studies/<study_id>/analysis/<analysis_id>")
@doc(
    "Replace the analysis' dynamic data (needs analysisType); 200, empty body",
    scope="study",
    body=request_body(OBJECT),
    responses=_UPDATED,
)
def update_analysis(study_id: str, analysis_id: str) -> Response:
    """Replace the analysis' dynamic data; Song answers 200 with an empty body."""
    require_write(study_id)
    current_catalog().update_analysis(study_id, analysis_id, json_body(), actor=actor())
    return Response(status=200)


@bp.patch("/studies/<study_id>/analysis/<analysis_id>")
@doc(
    "JSON merge patch (RFC 7386) of the dynamic data; 200, empty body",
    scope="study",
    body=request_body(OBJECT),
    responses=_UPDATED,
)
def patch_analysis(study_id: str, analysis_id: str) -> Response:
    """RFC 7386 merge patch of the dynamic data; Song answers 200 with an empty body."""
    require_write(study_id)
    current_catalog().patch_analysis(study_id, analysis_id, json_body(), actor=actor())
    return Response(status=200)


def change_state(
    study_id: str,
    analysis_id: str,
    action: str,
    *,
    reason: str | None = None,
    ignore_md5: bool = False,
) -> str:
    """Publish, unpublish or suppress through the group committer; Song's message."""
    transition = Transition(study_id, analysis_id, action, actor(), reason, ignore_md5)
    if action == "publish":
        # in this request's thread, so concurrent publishes check storage side by side, and a
        # slow store never holds up the batch; the batch re-checks the state under its lock
        current_catalog().check_publishable(transition)
    return committer().run(transition)


def _change(study_id: str, analysis_id: str, action: str, ignore_md5: bool = False) -> Response:
    return jsonify({"message": change_state(study_id, analysis_id, action, ignore_md5=ignore_md5)})


@bp.put("/studies/<study_id>/analysis/publish/<analysis_id>")
@doc(
    "Publish: every file must be in object storage with its size and md5",
    tag="lifecycle",
    scope="study",
    params=PARAMS.of("ignoreUndefinedMd5"),
    ok=ref("Message"),
)
def publish(study_id: str, analysis_id: str) -> Response:
    require_write(study_id)
    return _change(study_id, analysis_id, "publish", PARAMS["ignoreUndefinedMd5"].read())


@bp.put("/studies/<study_id>/analysis/unpublish/<analysis_id>")
@doc("Unpublish (refused for SUPPRESSED)", tag="lifecycle", scope="study", ok=ref("Message"))
def unpublish(study_id: str, analysis_id: str) -> Response:
    require_write(study_id)
    return _change(study_id, analysis_id, "unpublish")


@bp.put("/studies/<study_id>/analysis/suppress/<analysis_id>")
@doc("Suppress: withdraw the analysis for good", tag="lifecycle", scope="study", ok=ref("Message"))
def suppress(study_id: str, analysis_id: str) -> Response:
    require_write(study_id)
    return _change(study_id, analysis_id, "suppress")
