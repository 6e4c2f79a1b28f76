"""Export of resubmittable payloads (song-api.md §9.3): by study, or by analysis ids."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .docs import array, doc, ref
from .params import current_catalog, id_list

bp = Blueprint("export", __name__)


@bp.get("/export/studies/<study_id>")
@doc("Resubmittable payloads of every analysis of a study", ok=array(ref("ExportGroup")))
def export_study(study_id: str) -> Response:
    """``[{studyId, payloads: [...]}]`` with the payloads of every analysis, any state."""
    return jsonify(current_catalog().export_study(study_id))


@bp.get("/export/analysis/<analysis_ids>")
@doc(
    "Resubmittable payloads of the listed analyses, grouped by study",
    ok=array(ref("ExportGroup")),
)
def export_analyses(analysis_ids: str) -> Response:
    """The payloads of the listed analyses, grouped by study."""
    return jsonify(current_catalog().export_analyses(id_list(analysis_ids)))
