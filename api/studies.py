"""Studies: list, show, create.

POST /studies/{studyId}/ has NO auth yet (anyone can create a study); auth comes with the API issue.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .params import current_catalog, json_body

bp = Blueprint("studies", __name__)


@bp.get("/studies/all")
def list_studies() -> Response:
    return jsonify(current_catalog().list_studies())


@bp.get("/studies/<study_id>")
def get_study(study_id: str) -> Response:
    return jsonify(current_catalog().get_study(study_id))


@bp.post("/studies/<study_id>/")
def create_study(study_id: str) -> Response:
    study = current_catalog().create_study(json_body(), study_id=study_id)
    return jsonify({"message": f"Successfully created study '{study['studyId']}'"})
