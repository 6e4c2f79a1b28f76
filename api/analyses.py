"""Analyses: submit, read, list, page, id search, and the lifecycle (publish/unpublish/suppress).

Writes (submit and the lifecycle PUTs) have NO auth yet; auth comes with the API issue.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from .params import csv_list, current_catalog, flag, integer

bp = Blueprint("analyses", __name__)

#: the query parameters of GET .../analysis/search/id, each a case-insensitive substring regex
SEARCH_PARAMS = (
    "donorId",
    "sampleId",
    "specimenId",
    "fileId",
    "submitterSampleId",
    "submitterDonorId",
    "submitterSpecimenId",
)


def _states() -> list[str]:
    """`analysisStates`, default PUBLISHED; the catalog refuses unknown states."""
    return csv_list("analysisStates") or ["PUBLISHED"]


# literal paths first: /paginated and /search/id must not be taken for analysis ids


@bp.get("/studies/<study_id>/analysis")
def list_analyses(study_id: str) -> Response:
    return jsonify(current_catalog().list_analyses(study_id, _states()))


@bp.get("/studies/<study_id>/analysis/paginated")
def page_analyses(study_id: str) -> Response:
    states = _states()
    limit = integer("limit", 100, minimum=0)
    offset = integer("offset", 0, minimum=0)
    return jsonify(current_catalog().page_analyses(study_id, states, limit=limit, offset=offset))


@bp.get("/studies/<study_id>/analysis/search/id")
def search_ids(study_id: str) -> Response:
    catalog = current_catalog()
    terms = {name: request.args.get(name) or None for name in SEARCH_PARAMS}
    ids = catalog.search_ids(study_id, **terms)
    return jsonify([catalog.get_analysis(study_id, a) for a in ids])


@bp.get("/studies/<study_id>/analysis/<analysis_id>")
def get_analysis(study_id: str, analysis_id: str) -> Response:
    return jsonify(current_catalog().get_analysis(study_id, analysis_id))


@bp.get("/studies/<study_id>/analysis/<analysis_id>/files")
def analysis_files(study_id: str, analysis_id: str) -> Response:
    return jsonify(current_catalog().analysis_files(study_id, analysis_id))


@bp.post("/submit/<study_id>")
def submit(study_id: str) -> Response:
    """Register a payload; the body is read raw, as Song reads it, whatever its content type."""
    allow_duplicates = flag("allowDuplicates")
    analysis_id = current_catalog().submit(
        request.get_data(cache=False), study_id, allow_duplicates=allow_duplicates
    )
    return jsonify({"analysisId": analysis_id, "status": "OK"})


@bp.put("/studies/<study_id>/analysis/publish/<analysis_id>")
def publish(study_id: str, analysis_id: str) -> Response:
    ignore = flag("ignoreUndefinedMd5")
    message = current_catalog().publish(study_id, analysis_id, ignore_undefined_md5=ignore)
    return jsonify({"message": message})


@bp.put("/studies/<study_id>/analysis/unpublish/<analysis_id>")
def unpublish(study_id: str, analysis_id: str) -> Response:
    return jsonify({"message": current_catalog().unpublish(study_id, analysis_id)})


@bp.put("/studies/<study_id>/analysis/suppress/<analysis_id>")
def suppress(study_id: str, analysis_id: str) -> Response:
    return jsonify({"message": current_catalog().suppress(study_id, analysis_id)})
