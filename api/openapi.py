"""The OpenAPI 3 document (``GET /openapi.json``) and a docs page rendered from it (``GET /docs``,
plain HTML, no CDN).

The document is built from the app's own URL map, so every route is in it. Each view says what
the document should tell about it with ``@doc`` (api/docs.py): summary, query parameters (from
its blueprint's parameter table), body, answers, scope. A route without ``@doc`` (a blueprint
added later) still appears, described from its view's docstring. The shared schemas live in
api/components.py. ``/swagger-ui.html`` and ``/api-docs`` (Song's docs paths) redirect to
``/docs``.
"""

from __future__ import annotations

import html
import re
from importlib import metadata
from typing import Any

from flask import Blueprint, Flask, Response, current_app, redirect

from .components import components
from .docs import OBJECT, STRING, Doc, answer, doc, doc_of, ref
from .jsonio import dumps_bytes

bp = Blueprint("openapi", __name__)

_ERR = {"$ref": "#/components/responses/Error"}

#: path variable -> (its name in the document, its description)
_PATH_NAMES = {
    "study_id": ("studyId", "a study id"),
    "analysis_id": ("analysisId", "an analysis id"),
    "analysis_ids": ("analysisIds", "comma-joined analysis ids"),
    "object_id": ("objectId", "a file's objectId"),
    "donor_id": ("donorId", "a donor id"),
    "specimen_id": ("specimenId", "a specimen id"),
    "sample_id": ("sampleId", "a sample id"),
    "entity_id": ("id", "a file's objectId"),
    "ids": ("ids", "comma-joined ids"),
    "name": ("name", "an analysis type name"),
}
#: what a path id may hold (api/params.py check_path_args): no control character, DEL included
ID_PATTERN = "^[^\\x00-\\x1f\\x7f]+$"
_VAR_RE = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def openapi_path(rule: str) -> str:
    return _VAR_RE.sub(lambda m: "{" + _PATH_NAMES.get(m[1], (_camel(m[1]), ""))[0] + "}", rule)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _operation(app: Flask, method: str, rule: Any) -> dict[str, Any]:
    view = app.view_functions.get(rule.endpoint)
    record = doc_of(view)
    if record is None:
        text = (view.__doc__ or "").strip() if view else ""
        record = Doc(text.splitlines()[0] if text else rule.endpoint, responses={"200": answer()})
    params = [
        {
            "name": _PATH_NAMES.get(arg, (_camel(arg), ""))[0],
            "in": "path",
            "required": True,
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": 256 if arg not in ("ids", "analysis_ids") else 65536,
                "pattern": ID_PATTERN,  # check_path_args refuses control characters
            },
            "description": _PATH_NAMES.get(arg, ("", arg))[1],
        }
        for arg in _VAR_RE.findall(rule.rule)
    ]
    op: dict[str, Any] = {
        "operationId": f"{rule.endpoint}.{method.lower()}",
        "summary": record.summary,
        "tags": [record.tag or rule.endpoint.split(".")[0]],
        "parameters": params + [p.spec() for p in record.params],
        "responses": {**record.responses, "default": _ERR},
    }
    if params or record.params:
        # a path or query value no id or parameter can have: malformed.parameter
        op["responses"].setdefault("400", _ERR)
    if record.description:
        op["description"] = record.description
    elif view is not None and view.__doc__ and record.summary not in view.__doc__:
        op["description"] = " ".join(view.__doc__.split())
    if record.body is not None:
        op["requestBody"] = record.body
    scope = record.scope
    if scope:
        op["security"] = [{"bearer": []}]
        op["responses"]["401"] = _ERR
        op["responses"]["403"] = _ERR
        needs = "the system scope (song.WRITE)"
        if scope == "study":
            needs += " or the study scope (PROGRAMDATA-<studyId>.WRITE)"
        elif scope == "events":
            needs += (
                " for every study, or a study scope (PROGRAMDATA-<studyId>.READ or .WRITE) for "
                "that study's events, unless the events_public setting opens them"
            )
        op["description"] = f"Needs {needs}." + (
            " " + op["description"] if "description" in op else ""
        )
    if not op["parameters"]:
        del op["parameters"]
    return op


#: endpoints that are pages for people, not API: the web console (api/console/) and its way in
PAGES = ("static", "root", "console")


def documented(rule: Any) -> bool:
    """Whether a route belongs in the API's description (the console's pages do not)."""
    return rule.endpoint.split(".")[0] not in PAGES


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.0 document of every route of `app`."""
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not documented(rule):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op = _operation(app, method, rule)
            while op["operationId"] in seen:
                op["operationId"] += "_"
            seen.add(op["operationId"])
            paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = op
    try:
        version = metadata.version("songlake")
    except metadata.PackageNotFoundError:
        version = "0"
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "songlake: a Song-compatible metadata catalog",
            "version": version,
            "description": "Overture Song's REST API (paths, shapes and SongError answers), plus "
            "portal search, health and read-only SQL. Reads are public; writes need "
            "'Authorization: Bearer <token>' with Song's scopes. Every non-2xx answer is a "
            "SongError.",
        },
        "paths": paths,
        "components": {
            "schemas": components(),
            "responses": {
                "Error": {
                    "description": "SongError (every non-2xx answer)",
                    "content": {"application/json": {"schema": ref("SongError")}},
                }
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a JWT (scopes in context.scope or scope) or a static token",
                }
            },
        },
    }


_SPEC_KEY = "songlake.openapi"


def _spec() -> dict[str, Any]:
    spec = current_app.extensions.get(_SPEC_KEY)
    if spec is None:
        spec = current_app.extensions[_SPEC_KEY] = build_spec(current_app)
    return spec


@bp.get("/openapi.json")
@doc("This document", tag="system", ok=OBJECT)
def openapi_json() -> Response:
    return Response(dumps_bytes(_spec()), mimetype="application/json")


@bp.get("/docs")
@doc("This document as a page", tag="system", responses={200: answer(STRING, "HTML", "text/html")})
def docs() -> Response:
    return Response(render_html(_spec()), mimetype="text/html")


@bp.get("/swagger-ui.html")
@bp.get("/api-docs")
@doc(
    "Song's docs paths: a redirect to /docs",
    tag="system",
    responses={302: answer(STRING, "a redirect to /docs (Location)", "text/html")},
)
def song_docs_paths() -> Response:
    """Song's docs paths: redirect to /docs."""
    return redirect("/docs", code=302)  # type: ignore[return-value]


def render_html(spec: dict[str, Any]) -> str:
    """A self-contained page listing every operation with its parameters and scope."""
    e = html.escape
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            by_tag.setdefault(op["tags"][0], []).append((method.upper(), path, op))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(spec['info']['title'])}</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em}",
        "code,.m{font-family:ui-monospace,monospace}.m{display:inline-block;width:5em;"
        "font-weight:bold}.op{border-top:1px solid #ddd;padding:.5em 0}"
        ".p{color:#555;margin-left:5em;font-size:90%}.s{color:#a40}",
        "</style></head><body>",
        f"<h1>{e(spec['info']['title'])}</h1><p>{e(spec['info']['description'])}</p>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a></p>",
    ]
    for tag in sorted(by_tag):
        parts.append(f"<h2>{e(tag)}</h2>")
        for method, path, op in sorted(by_tag[tag], key=lambda x: (x[1], x[0])):
            parts.append(
                f"<div class='op'><span class='m'>{method}</span><code>{e(path)}</code> "
                f"&mdash; {e(op['summary'])}"
            )
            if "description" in op:
                parts.append(f"<div class='p'>{e(op['description'])}</div>")
            if op.get("security"):
                parts.append("<div class='p s'>needs a bearer token</div>")
            for p in op.get("parameters", []):
                desc = p.get("description", "")
                parts.append(
                    f"<div class='p'><code>{e(p['name'])}</code> ({e(p['in'])}) {e(desc)}</div>"
                )
            parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
