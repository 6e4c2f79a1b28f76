"""Portal search beyond Song's id search: ``GET /search/analyses`` and ``GET /search/files``.

Every filter is optional and takes a comma-joined list or repeated keys (any value matches);
different filters combine with AND. Analyses default to PUBLISHED; pass ``analysisStates`` for
others. Answers are pages: ``{analyses|files, totalAnalyses|totalFiles, currentTotal..., limit,
offset}``. Reads are public, like the rest of Song's reads.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from catalog.errors import MalformedParameter
from catalog.read.search import Filters

from .params import csv_list, current_catalog, integer, time_param

bp = Blueprint("search", __name__)

MAX_LIMIT = 1000

#: query parameter -> Filters field (documented in the OpenAPI spec from this table)
LIST_PARAMS = {
    "studyId": ("study_ids", "study ids"),
    "analysisStates": ("states", "PUBLISHED (default for analyses), UNPUBLISHED, SUPPRESSED"),
    "analysisType": ("analysis_types", "analysis type names, or name:version"),
    "analysisId": ("analysis_ids", "analysis ids"),
    "donorId": ("donor_ids", "donor ids"),
    "specimenId": ("specimen_ids", "specimen ids"),
    "sampleId": ("sample_ids", "sample ids"),
    "submitterDonorId": ("submitter_donor_ids", "submitter donor ids"),
    "submitterSpecimenId": ("submitter_specimen_ids", "submitter specimen ids"),
    "submitterSampleId": ("submitter_sample_ids", "submitter sample ids"),
    "objectId": ("object_ids", "file object ids"),
    "fileType": ("file_types", "file types, e.g. VCF,BAM"),
    "dataType": ("data_types", "data types"),
    "fileAccess": ("file_access", "open or controlled"),
}
TIME_PARAMS = {
    "createdAfter": ("created_after", "created at or after (ISO-8601)"),
    "createdBefore": ("created_before", "created before (ISO-8601)"),
    "updatedAfter": ("updated_after", "updated at or after (ISO-8601)"),
    "updatedBefore": ("updated_before", "updated before (ISO-8601)"),
}
ANALYSIS_SORTS = ("analysisId", "createdAt", "updatedAt")
FILE_SORTS = ("objectId", "fileSize")


def _filters(default_states: tuple[str, ...]) -> Filters:
    values: dict[str, object] = {
        field: tuple(csv_list(name)) for name, (field, _) in LIST_PARAMS.items()
    }
    values["states"] = values["states"] or default_states
    for name, (field, _) in TIME_PARAMS.items():
        values[field] = time_param(name)
    return Filters(**values)  # type: ignore[arg-type]


def _paging(sorts: tuple[str, ...]) -> tuple[str, bool, int, int]:
    sort = (csv_list("sort") or [sorts[0]])[0]
    if sort not in sorts:
        raise MalformedParameter(
            f"sort must be one of {', '.join(sorts)}, not '{sort}'", name="sort", value=sort
        )
    order = (csv_list("order") or ["asc"])[0].lower()
    if order not in ("asc", "desc"):
        raise MalformedParameter(
            f"order must be asc or desc, not '{order}'", name="order", value=order
        )
    limit = integer("limit", 100, minimum=0)
    if limit > MAX_LIMIT:
        raise MalformedParameter(f"limit must be <= {MAX_LIMIT}", name="limit", value=limit)
    return sort, order == "desc", limit, integer("offset", 0, minimum=0)


@bp.get("/search/analyses")
def search_analyses() -> Response:
    """Analyses matching the filters (PUBLISHED unless analysisStates says otherwise), paged."""
    filters = _filters(("PUBLISHED",))
    sort, descending, limit, offset = _paging(ANALYSIS_SORTS)
    return jsonify(
        current_catalog().search_analyses(
            filters, sort=sort, descending=descending, limit=limit, offset=offset
        )
    )


@bp.get("/search/files")
def search_files() -> Response:
    """Files matching the filters; analysis filters apply to each file's analysis."""
    filters = _filters(("PUBLISHED",))
    sort, descending, limit, offset = _paging(FILE_SORTS)
    return jsonify(
        current_catalog().search_files(
            filters, sort=sort, descending=descending, limit=limit, offset=offset
        )
    )
