"""Studies: list, show, the donor tree, create (the study's write scope or the system scope)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .auth import actor, require_write
from .params import current_catalog, json_body

bp = Blueprint("studies", __name__)


@bp.get("/studies/all")
def list_studies() -> Response:
    return jsonify(current_catalog().list_studies())


@bp.get("/studies/<study_id>")
def get_study(study_id: str) -> Response:
    return jsonify(current_catalog().get_study(study_id))


@bp.get("/studies/<study_id>/all")
def study_tree(study_id: str) -> Response:
    """The study with its donors, each with its specimens, each with its samples."""
    return jsonify(current_catalog().study_tree(study_id))


@bp.post("/studies/<study_id>/")
def create_study(study_id: str) -> Response:
    require_write(study_id)
    study = current_catalog().create_study(json_body(), study_id=study_id, actor=actor())
    return jsonify({"message": f"Successfully created study '{study['studyId']}'"})
