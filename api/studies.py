"""Studies: list, show, the donor tree, create (the study's write scope or the system scope)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .auth import actor, require_write
from .docs import STRING, array, doc, ref, request_body
from .params import current_catalog, json_body

bp = Blueprint("studies", __name__)


@bp.get("/studies/all")
@doc("Every studyId", ok=array(STRING))
def list_studies() -> Response:
    return jsonify(current_catalog().list_studies())


@bp.get("/studies/<study_id>")
@doc("A study", ok=ref("Study"))
def get_study(study_id: str) -> Response:
    return jsonify(current_catalog().get_study(study_id))


@bp.get("/studies/<study_id>/all")
@doc("A study with its donors, specimens and samples", ok=ref("StudyTree"))
def study_tree(study_id: str) -> Response:
    """The study with its donors, each with its specimens, each with its samples."""
    return jsonify(current_catalog().study_tree(study_id))


@bp.post("/studies/<study_id>/")
@doc(
    "Create a study (the trailing slash is optional)",
    scope="study",
    body=request_body(ref("Study")),
    ok=ref("Message"),
)
def create_study(study_id: str) -> Response:
    require_write(study_id)
    study = current_catalog().create_study(json_body(), study_id=study_id, actor=actor())
    return jsonify({"message": f"Successfully created study '{study['studyId']}'"})
