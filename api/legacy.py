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

from .params import current_catalog, integer

bp = Blueprint("legacy", __name__)

FILTERS = ("id", "gnosId", "fileName", "projectCode", "access")
FIELDS = FILTERS
_SORT = {"sorted": True, "unsorted": False, "empty": False}


@bp.get("/entities/<entity_id>")
def get_entity(entity_id: str) -> Response:
    return jsonify(current_catalog().legacy_entity(entity_id))


@bp.get("/entities")
def list_entities() -> Response:
    unknown = sorted(set(request.args) - set(FILTERS) - {"page", "size", "fields", "sort"})
    if unknown:
        raise IllegalQueryParameter(
            f"Unknown query parameters {', '.join(unknown)}: the filters are "
            f"{', '.join(FILTERS)}, with page, size and fields",
            name=",".join(unknown),
        )
    fields = [f for value in request.args.getlist("fields") for f in value.split(",") if f]
    bad = [f for f in fields if f not in FIELDS]
    if bad:
        raise IllegalFilterParameter(
            f"Unknown fields {', '.join(bad)}: fields are {', '.join(FIELDS)}",
            name="fields",
            value=",".join(bad),
        )
    page = integer("page", 0, minimum=0)
    size = integer("size", 20, minimum=1)
    size = min(size, 10_000)
    filters = {k: request.args[k] for k in FILTERS if request.args.get(k)}
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
