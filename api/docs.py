"""What ``/openapi.json`` says about a route, written on its view: ``@doc(summary, ...)``.

    @bp.get("/studies/<study_id>/analysis/paginated")
    @doc(
        "A page of a study's analyses, sorted by analysisId",
        params=PARAMS.of("analysisStates", "limit", "offset"),
        ok=ref("AnalysisPage"),
    )
    def page_analyses(study_id): ...

The decorator only records: the view is returned unchanged. api/openapi.py turns the records of
every route in the app's URL map into the document; the path parameters come from the rule, the
query parameters from the blueprint's parameter table (api/params.py), the description from the
view's docstring. The schemas named with ``ref`` are the shared components (api/components.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .params import Query

View = TypeVar("View", bound=Callable[..., Any])

_ATTRIBUTE = "openapi_doc"

STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


def array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def answer(
    schema: dict[str, Any] | None = None,
    description: str = "OK",
    media: str = "application/json",
) -> dict[str, Any]:
    """A response object: `schema` as `media`, or no body at all when `schema` is None."""
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {media: {"schema": schema}}}


#: Song's answer to a DELETE
TEXT_OK = answer(STRING, "the plain string OK", "text/plain")


def request_body(schema: dict[str, Any], *, plain_text: bool = False) -> dict[str, Any]:
    """A required JSON body (or, with `plain_text`, a text/plain string instead)."""
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if plain_text:
        content["text/plain"] = {"schema": STRING}
    return {"required": True, "content": content}


@dataclass(frozen=True)
class Doc:
    """What the document says about one view."""

    summary: str
    tag: str | None = None
    scope: str | None = None
    params: tuple[Query, ...] = ()
    body: dict[str, Any] | None = None
    responses: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    description: str | None = None


def doc(
    summary: str,
    *,
    tag: str | None = None,
    scope: str | None = None,
    params: Sequence[Query] = (),
    body: dict[str, Any] | None = None,
    ok: dict[str, Any] | None = None,
    responses: Mapping[int, dict[str, Any]] | None = None,
    description: str | None = None,
) -> Callable[[View], View]:
    """Record the OpenAPI text of a view.

    tag          the group in the document (default: the blueprint's name)
    scope        "study" (the study's write scope or the system scope), "system", or "events"
                 (the system scope, or a study's READ or WRITE scope): the route needs a bearer
                 token, and answers 401 and 403
    params       the query parameters, from the blueprint's parameter table
    body         the request body (``request_body(...)``)
    ok           the schema of the JSON answer of a 200
    responses    response objects by status (``answer(...)``), for answers that are not JSON
    description  the longer text; by default the view's docstring, when it says more than
                 the summary
    """
    found: dict[str, dict[str, Any]] = {"200": answer(ok)}
    found.update({str(code): response for code, response in (responses or {}).items()})
    record = Doc(summary, tag, scope, tuple(params), body, found, description)

    def attach(view: View) -> View:
        setattr(view, _ATTRIBUTE, record)
        return view

    return attach


def doc_of(view: Callable[..., Any] | None) -> Doc | None:
    """The record `@doc` left on a view, if any."""
    return getattr(view, _ATTRIBUTE, None)
