"""Score's legacy file entities (song-api.md §6.3): ``GET /entities/{id}`` and ``GET /entities``.

score-server asks ``/entities/{objectId}`` who owns a file and whether it is open or controlled;
score-client pages ``/entities?gnosId=<analysisId>&projectCode=<studyId>&size=2000&page=N`` until
``last``. Both are public and cover files of every analysis state. The list answers with a Spring
Data Page; unknown query keys are ``illegal.query.parameter``, unknown ``fields`` values
``illegal.filter.parameter``.
"""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, Response, jsonify, request

from catalog.errors import IllegalFilterParameter, IllegalQueryParameter
from catalog.read.entities import legacy_page

from .docs import doc, ref
from .params import Csv, Int, Params, Text, current_catalog

bp = Blueprint("legacy", __name__)

FILTERS = ("id", "gnosId", "fileName", "projectCode", "access")
FIELDS = FILTERS
#: the query parameters of GET /entities: the view reads them, @doc lists them
PARAMS = Params(
    *(Text(name, "exact match") for name in FILTERS[:-1]),
    Text("access", enum=("open", "controlled")),
    Int("page", default=0, minimum=0),
    Int("size", default=20, minimum=1),
    Csv("fields", "keys to keep in each item"),
)
_SORT = {"sorted": True, "unsorted": False, "empty": False}


@bp.get("/entities/<entity_id>")
@doc("Score's legacy view of one file", tag="score", ok=ref("LegacyEntity"))
def get_entity(entity_id: str) -> Response:
    return jsonify(current_catalog().legacy_entity(entity_id))


@bp.get("/entities")
@doc(
    "Score's legacy file listing (Spring Page), sorted by id",
    tag="score",
    params=PARAMS.of(*PARAMS),
    ok=ref("LegacyEntityPage"),
)
def list_entities() -> Response:
    # sort is taken and ignored: the page is always sorted by id
    unknown = sorted(set(request.args) - set(PARAMS) - {"sort"})
    if unknown:
        raise IllegalQueryParameter(
            f"Unknown query parameters {', '.join(unknown)}: the filters are "
            f"{', '.join(FILTERS)}, with page, size and fields",
            name=",".join(unknown),
        )
    fields = PARAMS["fields"].read()
    bad = [f for f in fields if f not in FIELDS]
    if bad:
        raise IllegalFilterParameter(
            f"Unknown fields {', '.join(bad)}: fields are {', '.join(FIELDS)}",
            name="fields",
            value=",".join(bad),
        )
    page = PARAMS["page"].read()
    size = min(PARAMS["size"].read(), 10_000)
    filters = {k: value for k in FILTERS if (value := PARAMS[k].read()) is not None}
    catalog = current_catalog()
    items, total = legacy_page(catalog.model, catalog.search_index(), filters, page=page, size=size)
    if fields:
        items = [{k: v for k, v in item.items() if k in fields} for item in items]
    return jsonify(spring_page(items, total, page, size))


def spring_page(content: list[Any], total: int, page: int, size: int) -> dict[str, Any]:
    """Spring Data's Page JSON, as Score's client reads it."""
    pages = math.ceil(total / size) if size else 0
    return {
        "content": content,
        "pageable": {
            "sort": dict(_SORT),
            "offset": page * size,
            "pageNumber": page,
            "pageSize": size,
            "paged": True,
            "unpaged": False,
        },
        "totalElements": total,
        "totalPages": pages,
        "last": page >= pages - 1,
        "first": page == 0,
        "size": size,
        "number": page,
        "numberOfElements": len(content),
        "sort": dict(_SORT),
        "empty": not content,
    }
