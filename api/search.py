"""Portal search beyond Song's id search: ``GET /search/analyses`` and ``GET /search/files``.

Every filter is optional and takes a comma-joined list or repeated keys (any value matches);
different filters combine with AND. Analyses default to PUBLISHED; pass ``analysisStates`` for
others. Answers are pages: ``{analyses|files, totalAnalyses|totalFiles, currentTotal..., limit,
offset}``. Reads are public, like the rest of Song's reads.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from flask import Blueprint, Response, jsonify

from catalog.errors import MalformedParameter
from catalog.read.search import Filters

from .docs import doc, ref
from .params import Choice, Csv, Int, Params, Query, Time, current_catalog

bp = Blueprint("search", __name__)

MAX_LIMIT = 1000
ANALYSIS_SORTS = ("analysisId", "createdAt", "updatedAt")
FILE_SORTS = ("objectId", "fileSize")
ANALYSIS_SORT = Choice("sort", choices=ANALYSIS_SORTS, default=ANALYSIS_SORTS[0])
FILE_SORT = Choice("sort", choices=FILE_SORTS, default=FILE_SORTS[0])

#: the query parameters of this blueprint; a filter's key is the Filters field it fills
PARAMS = Params(
    study_ids=Csv("studyId", "study ids"),
    states=Csv(
        "analysisStates",
        "PUBLISHED (default for analyses), UNPUBLISHED, SUPPRESSED",
        default=("PUBLISHED",),
    ),
    analysis_types=Csv("analysisType", "analysis type names, or name:version"),
    analysis_ids=Csv("analysisId", "analysis ids"),
    donor_ids=Csv("donorId", "donor ids"),
    specimen_ids=Csv("specimenId", "specimen ids"),
    sample_ids=Csv("sampleId", "sample ids"),
    submitter_donor_ids=Csv("submitterDonorId", "submitter donor ids"),
    submitter_specimen_ids=Csv("submitterSpecimenId", "submitter specimen ids"),
    submitter_sample_ids=Csv("submitterSampleId", "submitter sample ids"),
    object_ids=Csv("objectId", "file object ids"),
    file_types=Csv("fileType", "file types, e.g. VCF,BAM"),
    data_types=Csv("dataType", "data types"),
    file_access=Csv("fileAccess", "open or controlled"),
    created_after=Time("createdAfter", "created at or after (ISO-8601)"),
    created_before=Time("createdBefore", "created before (ISO-8601)"),
    updated_after=Time("updatedAfter", "updated at or after (ISO-8601)"),
    updated_before=Time("updatedBefore", "updated before (ISO-8601)"),
    analysis_sort=ANALYSIS_SORT,
    file_sort=FILE_SORT,
    order=Choice("order", choices=("asc", "desc"), default="asc"),
    limit=Int("limit", default=100, minimum=0, maximum=MAX_LIMIT),
    offset=Int("offset", default=0, minimum=0),
)
FILTER_FIELDS = tuple(f.name for f in fields(Filters))


def _params(sort: str) -> tuple[Query, ...]:
    return PARAMS.of(*FILTER_FIELDS, sort, "order", "limit", "offset")


def read_filters() -> Filters:
    values = {field: PARAMS[field].read() for field in FILTER_FIELDS}
    given: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return Filters(**given)


def read_paging(sorts: Choice) -> tuple[str, bool, int, int]:
    sort = sorts.read()
    if sort not in sorts.choices:
        raise MalformedParameter(
            f"sort must be one of {', '.join(sorts.choices)}, not '{sort}'", name="sort", value=sort
        )
    order = PARAMS["order"].read().lower()
    if order not in ("asc", "desc"):
        raise MalformedParameter(
            f"order must be asc or desc, not '{order}'", name="order", value=order
        )
    return sort, order == "desc", PARAMS["limit"].read(), PARAMS["offset"].read()


@bp.get("/search/analyses")
@doc(
    "Portal search of analyses: filters, sorting, paging",
    params=_params("analysis_sort"),
    ok=ref("SearchAnalysesPage"),
)
def search_analyses() -> Response:
    """Analyses matching the filters (PUBLISHED unless analysisStates says otherwise), paged."""
    filters = read_filters()
    sort, descending, limit, offset = read_paging(ANALYSIS_SORT)
    return jsonify(
        current_catalog().search_analyses(
            filters, sort=sort, descending=descending, limit=limit, offset=offset
        )
    )


@bp.get("/search/files")
@doc(
    "Portal search of files; analysis filters apply to each file's analysis",
    params=_params("file_sort"),
    ok=ref("SearchFilesPage"),
)
def search_files() -> Response:
    """Files matching the filters; analysis filters apply to each file's analysis."""
    filters = read_filters()
    sort, descending, limit, offset = read_paging(FILE_SORT)
    return jsonify(
        current_catalog().search_files(
            filters, sort=sort, descending=descending, limit=limit, offset=offset
        )
    )
