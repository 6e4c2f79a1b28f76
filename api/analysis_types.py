"""Analysis types under /schemas: list (PageDTO), show, the registration meta-schema, register.

(Not named schemas.py: that would shadow the top-level ``schemas`` data package; see STYLE.md.)
POST /schemas needs the system scope, as in Song.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify

from catalog.errors import MalformedParameter
from catalog.write.registry import AnalysisType, registration_schema

from .auth import actor, require_system
from .docs import OBJECT, doc, ref, request_body
from .params import Choice, Csv, Flag, Int, Params, current_catalog, json_body

bp = Blueprint("schemas", __name__)

SORT_FIELDS = ("version", "name")
#: the query parameters of this blueprint: the views read them, @doc lists them
PARAMS = Params(
    Csv("names", "type names"),
    Csv("versions", "versions >= 1", of="integer"),
    Flag("hideSchema"),
    Flag("unrenderedOnly"),
    Int("offset", default=0, minimum=0),
    Int("limit", default=20, minimum=0),
    Csv("sort", "version and/or name", enum=SORT_FIELDS, default=("version",)),
    Choice("sortOrder", choices=("ASC", "DESC"), default="DESC"),
    # the registry checks it, naming the type in its message
    Int("version", minimum=1, checked=False),
)


@bp.get("/schemas")
@doc(
    "Analysis types, paged (PageDTO)",
    params=PARAMS.of(
        "names", "versions", "hideSchema", "unrenderedOnly", "offset", "limit", "sort", "sortOrder"
    ),
    ok=ref("AnalysisTypePage"),
)
def list_types() -> Response:
    """Song's PageDTO: ``{limit, offset, count, resultSet}``; like Java, ``offset`` reads 0."""
    names = set(PARAMS["names"].read())
    versions = set(_versions())
    hide_schema = PARAMS["hideSchema"].read()
    unrendered = PARAMS["unrenderedOnly"].read()
    offset = PARAMS["offset"].read()
    limit = PARAMS["limit"].read()
    sort = PARAMS["sort"].read()
    bad = [s for s in sort if s not in SORT_FIELDS]
    if bad:
        raise MalformedParameter(
            f"The sort fields {', '.join(bad)} are not among {', '.join(SORT_FIELDS)}",
            name="sort",
            value=",".join(sort),
        )
    sort_order = PARAMS["sortOrder"]
    assert isinstance(sort_order, Choice)
    order = sort_order.values()
    if len(order) != 1 or order[0].upper() not in ("ASC", "DESC"):
        raise MalformedParameter(
            f"The sortOrder '{','.join(order)}' must be ASC or DESC",
            name="sortOrder",
            value=",".join(order),
        )
    matched = [
        t
        for t in _by_registration(current_catalog().registry.all())
        if (not names or t.name in names) and (not versions or t.version in versions)
    ]
    # "version" sorts by registration order (Song's id column), which also breaks ties
    position = {(t.name, t.version): i for i, t in enumerate(matched)}

    def key(t: AnalysisType) -> tuple[Any, ...]:
        fields = [position[(t.name, t.version)] if s == "version" else t.name for s in sort]
        return (*fields, position[(t.name, t.version)])

    matched.sort(key=key, reverse=order[0].upper() == "DESC")
    page = matched[offset : offset + limit]
    return jsonify(
        {
            "limit": limit,
            "offset": 0,
            "count": len(matched),
            "resultSet": [
                t.to_json(rendered=not unrendered, hide_schema=hide_schema) for t in page
            ],
        }
    )


@bp.get("/schemas/registration")
@doc("The meta-schema every analysis type must satisfy", ok=OBJECT)
def registration() -> Response:
    """The meta-schema every registered analysis type must satisfy, pretty-printed as Song does."""
    return Response(json.dumps(registration_schema(), indent=2), mimetype="application/json")


@bp.get("/schemas/<name>")
@doc(
    "One analysis type (default: latest version, rendered)",
    params=PARAMS.of("version", "unrenderedOnly"),
    ok=ref("AnalysisType"),
)
def get_type(name: str) -> Response:
    atype = current_catalog().registry.get(name, PARAMS["version"].read())
    return jsonify(atype.to_json(rendered=not PARAMS["unrenderedOnly"].read()))


@bp.post("/schemas")
@doc(
    "Register an analysis type's next version",
    scope="system",
    body=request_body(ref("RegisterAnalysisType")),
    ok=ref("AnalysisType"),
)
def register_type() -> Response:
    """Register a type's next version; answers with the rendered schema and the options sent."""
    require_system()
    body = json_body()
    atype = current_catalog().register_type(body, actor=actor())
    out = atype.to_json(rendered=True)
    out["options"] = body.get("options")
    return jsonify(out)


def _versions() -> list[int]:
    out = []
    for item in PARAMS["versions"].read():
        try:
            version = int(item)
        except ValueError:
            version = 0
        if version < 1:
            raise MalformedParameter(
                f"The version '{item}' must be an integer >= 1", name="versions", value=item
            )
        out.append(version)
    return out


def _by_registration(types: list[AnalysisType]) -> list[AnalysisType]:
    return sorted(types, key=lambda t: (t.created_at, t.name, t.version))
