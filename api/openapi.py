"""The OpenAPI 3 document (``GET /openapi.json``) and a docs page rendered from it (``GET /docs``,
plain HTML, no CDN).

The document is built from the app's own URL map, so every route is in it: the routes below are
described by hand (parameters, bodies, answers, scopes); any other route (a blueprint added
later) still appears, described from its view's docstring. ``/swagger-ui.html`` and ``/api-docs``
(Song's docs paths) redirect to ``/docs``.
"""

from __future__ import annotations

import html
import re
from typing import Any

from flask import Blueprint, Flask, Response, current_app, redirect

from catalog.model import STATES
from catalog.read.idsearch import ID_SEARCH_PARAMS

from . import analyses, analysis_types, legacy, search
from .jsonio import dumps_bytes
from .params import Params, Query

bp = Blueprint("openapi", __name__)

_ERR = {"$ref": "#/components/responses/Error"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _arr(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


_S = {"type": "string"}
_I = {"type": "integer"}
_B = {"type": "boolean"}
_OBJ = {"type": "object", "additionalProperties": True}
_DT = {"type": "string", "nullable": True, "description": "naive ISO-8601, server local time"}
_STATE = {"type": "string", "enum": list(STATES)}


def _props(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


SCHEMAS: dict[str, Any] = {
    "SongError": {
        "type": "object",
        "required": [
            "errorId",
            "httpStatusCode",
            "httpStatusName",
            "message",
            "requestUrl",
            "debugMessage",
            "timestamp",
            "stackTrace",
        ],
        "properties": {
            "errorId": {**_S, "example": "analysis.id.not.found"},
            "httpStatusCode": _I,
            "httpStatusName": {**_S, "example": "NOT_FOUND"},
            "message": _S,
            "requestUrl": _S,
            "debugMessage": _S,
            "timestamp": {**_I, "description": "epoch milliseconds"},
            "stackTrace": _arr(_S),
            "datetime": _S,
            "problems": _arr(_ref("Problem")),
        },
    },
    "Problem": _props(pointer=_S, rule=_S, message=_S, schema={**_S, "nullable": True}),
    "Study": _props(studyId=_S, name=_S, organization=_S, description=_S, info=_OBJ),
    "Donor": _props(donorId=_S, studyId=_S, submitterDonorId=_S, gender=_S, info=_OBJ),
    "Specimen": _props(
        specimenId=_S,
        donorId=_S,
        submitterSpecimenId=_S,
        tumourNormalDesignation=_S,
        specimenTissueSource=_S,
        specimenType=_S,
        info=_OBJ,
    ),
    "Sample": _props(
        sampleId=_S,
        specimenId=_S,
        submitterSampleId=_S,
        sampleType=_S,
        matchedNormalSubmitterSampleId={**_S, "nullable": True},
        info=_OBJ,
    ),
    "CompositeSample": {
        "allOf": [_ref("Sample"), _props(specimen=_ref("Specimen"), donor=_ref("Donor"))]
    },
    "StudyTree": {
        "allOf": [
            _ref("Study"),
            _props(
                donors=_arr(
                    {
                        "allOf": [
                            _ref("Donor"),
                            _props(
                                specimens=_arr(
                                    {
                                        "allOf": [
                                            _ref("Specimen"),
                                            _props(samples=_arr(_ref("Sample"))),
                                        ]
                                    }
                                )
                            ),
                        ]
                    }
                )
            ),
        ]
    },
    "File": _props(
        objectId=_S,
        studyId=_S,
        analysisId=_S,
        fileName=_S,
        fileSize=_I,
        fileType=_S,
        fileMd5sum=_S,
        fileAccess={"type": "string", "enum": ["open", "controlled"]},
        dataType=_S,
        info=_OBJ,
    ),
    "StateChange": _props(
        initialState=_STATE,
        updatedState=_STATE,
        updatedAt=_S,
    ),
    "Analysis": {
        "type": "object",
        "additionalProperties": True,
        "description": "Dynamic data (e.g. experiment) is flattened into the top level.",
        "properties": {
            "analysisId": _S,
            "studyId": _S,
            "analysisState": _STATE,
            "analysisType": _props(name=_S, version=_I),
            "createdAt": _DT,
            "updatedAt": _DT,
            "firstPublishedAt": _DT,
            "publishedAt": _DT,
            "analysisStateHistory": _arr(_ref("StateChange")),
            "samples": _arr(_ref("CompositeSample")),
            "files": _arr(_ref("File")),
        },
    },
    "Payload": {
        "type": "object",
        "additionalProperties": True,
        "description": "A Song payload: studyId, analysisType{name,version}, samples, files and "
        "the analysis type's dynamic data (see GET /schemas/{name}).",
    },
    "SubmitResponse": _props(analysisId=_S, status={**_S, "example": "OK"}),
    "Message": _props(message=_S),
    "AnalysisPage": _props(
        analyses=_arr(_ref("Analysis")), totalAnalyses=_I, currentTotalAnalyses=_I
    ),
    "SearchAnalysesPage": _props(
        analyses=_arr(_ref("Analysis")),
        totalAnalyses=_I,
        currentTotalAnalyses=_I,
        limit=_I,
        offset=_I,
    ),
    "SearchFile": {"allOf": [_ref("File"), _props(analysisState=_STATE)]},
    "SearchFilesPage": _props(
        files=_arr(_ref("SearchFile")), totalFiles=_I, currentTotalFiles=_I, limit=_I, offset=_I
    ),
    "IdSearchRequest": _props(
        donorId=_S,
        sampleId=_S,
        specimenId=_S,
        objectId=_S,
        submitterSampleId=_S,
        submitterDonorIds=_arr(_S),
        submitterSpecimenIds=_arr(_S),
    ),
    "AnalysisType": _props(
        name=_S,
        version=_I,
        createdAt=_S,
        options={**_props(fileTypes=_arr(_S)), "nullable": True},
        schema=_OBJ,
    ),
    "AnalysisTypePage": _props(limit=_I, offset=_I, count=_I, resultSet=_arr(_ref("AnalysisType"))),
    "RegisterAnalysisType": {
        "type": "object",
        "required": ["name", "schema"],
        "properties": {
            "name": _S,
            "schema": _OBJ,
            "options": {**_props(fileTypes=_arr(_S)), "nullable": True},
        },
    },
    "FileUpdateRequest": _props(
        fileSize={**_I, "minimum": 1},
        fileMd5sum={**_S, "pattern": "^[a-fA-F0-9]{32}$"},
        fileAccess={"type": "string", "enum": ["open", "controlled"]},
        dataType=_S,
        info=_OBJ,
    ),
    "FileUpdateResponse": _props(
        fileUpdateType={
            "type": "string",
            "enum": ["NO_UPDATE", "METADATA_UPDATE", "CONTENT_UPDATE"],
        },
        originalAnalysisState=_STATE,
        unpublishedAnalysis=_B,
        message=_S,
        originalFile=_ref("File"),
    ),
    "ExportGroup": _props(studyId=_S, payloads=_arr(_ref("Payload"))),
    "LegacyEntity": _props(id=_S, gnosId=_S, fileName=_S, projectCode=_S, access=_S),
    "SpringSort": _props(sorted=_B, unsorted=_B, empty=_B),
    "LegacyEntityPage": _props(
        content=_arr(_ref("LegacyEntity")),
        pageable=_props(
            sort=_ref("SpringSort"),
            offset=_I,
            pageNumber=_I,
            pageSize=_I,
            paged=_B,
            unpaged=_B,
        ),
        totalElements=_I,
        totalPages=_I,
        last=_B,
        first=_B,
        size=_I,
        number=_I,
        numberOfElements=_I,
        sort=_ref("SpringSort"),
        empty=_B,
    ),
    "SqlRequest": {
        "type": "object",
        "required": ["query"],
        "properties": {
            "query": {**_S, "example": "SELECT analysis_state, count(*) FROM analyses GROUP BY 1"},
            "limit": {**_I, "minimum": 0},
            "asOf": {**_S, "description": "a catalog version or an ISO-8601 time"},
        },
    },
    "SqlResult": _props(columns=_arr(_S), rows=_arr(_arr({})), rowCount=_I, truncated=_B),
    "Health": _props(
        status={"type": "string", "enum": ["UP"]},
        tables={"type": "object", "additionalProperties": _I},
        catalogVersion=_I,
        readModel=_props(analyses=_I, studies=_I, pendingRows=_I),
        objectStore=_props(reachable=_B, store=_S),
        groupCommit=_props(
            batches=_I,
            transitions=_I,
            largestBatch=_I,
            meanBatch={"type": "number"},
            busySeconds={"type": "number"},
        ),
        checkedInMs={"type": "number"},
    ),
    "Version": _props(name=_S, version=_S, songApiVersion=_S, python=_S),
}

# -- parameters -----------------------------------------------------------------------------------

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


def _specs(table: Params, *keys: str) -> list[dict[str, Any]]:
    return [p.spec() for p in table.of(*keys)]


def _portal_params(sort: Query) -> list[dict[str, Any]]:
    return [p.spec() for p in (*search.PARAMS.of(*search.FILTER_FIELDS), sort)] + _specs(
        search.PARAMS, "order", "limit", "offset"
    )


def _body(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"required": True, "content": {"application/json": {"schema": schema}}}
    if description:
        out["description"] = description
    return out


def _ok(schema: dict[str, Any] | None, description: str = "OK") -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_TEXT_OK = {"description": "the plain string OK", "content": {"text/plain": {"schema": _S}}}

#: (METHOD, flask rule) -> operation: summary, tag, scope ("study" / "system"), params, body, ok
ROUTES: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/isAlive"): {"summary": "Song's ping: true", "tag": "system", "ok": _ok(_B)},
    ("GET", "/health"): {
        "summary": "Table versions, read model and object-store reachability (503 when down)",
        "tag": "system",
        "ok": _ok(_ref("Health")),
    },
    ("GET", "/version"): {
        "summary": "songlake's version",
        "tag": "system",
        "ok": _ok(_ref("Version")),
    },
    ("POST", "/submit/<study_id>"): {
        "summary": "Register a payload as a new UNPUBLISHED analysis",
        "tag": "analyses",
        "scope": "study",
        "params": _specs(analyses.PARAMS, "allowDuplicates"),
        "body": _body(_ref("Payload")),
        "ok": _ok(_ref("SubmitResponse")),
    },
    ("GET", "/studies/<study_id>/analysis"): {
        "summary": "Every analysis of a study in the given states",
        "tag": "analyses",
        "params": _specs(analyses.PARAMS, "analysisStates"),
        "ok": _ok(_arr(_ref("Analysis"))),
    },
    ("GET", "/studies/<study_id>/analysis/paginated"): {
        "summary": "A page of a study's analyses, sorted by analysisId",
        "tag": "analyses",
        "params": _specs(analyses.PARAMS, "analysisStates", "limit", "offset"),
        "ok": _ok(_ref("AnalysisPage")),
    },
    ("GET", "/studies/<study_id>/analysis/search/id"): {
        "summary": "Song's id search: analyses whose (sample x file) rows match every regex",
        "tag": "analyses",
        "params": _specs(analyses.PARAMS, *ID_SEARCH_PARAMS),
        "ok": _ok(_arr(_ref("Analysis"))),
    },
    ("POST", "/studies/<study_id>/analysis/search/id"): {
        "summary": "Song's id search with the terms in the body",
        "tag": "analyses",
        "body": _body(_ref("IdSearchRequest")),
        "ok": _ok(_arr(_ref("Analysis"))),
    },
    ("GET", "/studies/<study_id>/analysis/<analysis_id>"): {
        "summary": "One analysis (Score reads its analysisState)",
        "tag": "analyses",
        "ok": _ok(_ref("Analysis")),
    },
    ("PUT", "/studies/<study_id>/analysis/<analysis_id>"): {
        "summary": "Replace the analysis' dynamic data (needs analysisType); 200, empty body",
        "tag": "analyses",
        "scope": "study",
        "body": _body(_OBJ),
        "ok": _ok(None, "updated (empty body)"),
    },
    ("PATCH", "/studies/<study_id>/analysis/<analysis_id>"): {
        "summary": "JSON merge patch (RFC 7386) of the dynamic data; 200, empty body",
        "tag": "analyses",
        "scope": "study",
        "body": _body(_OBJ),
        "ok": _ok(None, "updated (empty body)"),
    },
    ("GET", "/studies/<study_id>/analysis/<analysis_id>/files"): {
        "summary": "The analysis' files (the source of a manifest)",
        "tag": "analyses",
        "ok": _ok(_arr(_ref("File"))),
    },
    ("PUT", "/studies/<study_id>/analysis/publish/<analysis_id>"): {
        "summary": "Publish: every file must be in object storage with its size and md5",
        "tag": "lifecycle",
        "scope": "study",
        "params": _specs(analyses.PARAMS, "ignoreUndefinedMd5"),
        "ok": _ok(_ref("Message")),
    },
    ("PUT", "/studies/<study_id>/analysis/unpublish/<analysis_id>"): {
        "summary": "Unpublish (refused for SUPPRESSED)",
        "tag": "lifecycle",
        "scope": "study",
        "ok": _ok(_ref("Message")),
    },
    ("PUT", "/studies/<study_id>/analysis/suppress/<analysis_id>"): {
        "summary": "Suppress: withdraw the analysis for good",
        "tag": "lifecycle",
        "scope": "study",
        "ok": _ok(_ref("Message")),
    },
    ("GET", "/studies/all"): {"summary": "Every studyId", "tag": "studies", "ok": _ok(_arr(_S))},
    ("GET", "/studies/<study_id>"): {
        "summary": "A study",
        "tag": "studies",
        "ok": _ok(_ref("Study")),
    },
    ("GET", "/studies/<study_id>/all"): {
        "summary": "A study with its donors, specimens and samples",
        "tag": "studies",
        "ok": _ok(_ref("StudyTree")),
    },
    ("POST", "/studies/<study_id>/"): {
        "summary": "Create a study (the trailing slash is optional)",
        "tag": "studies",
        "scope": "study",
        "body": _body(_ref("Study")),
        "ok": _ok(_ref("Message")),
    },
    ("GET", "/studies/<study_id>/donors/<donor_id>"): {
        "summary": "A donor",
        "tag": "entities",
        "ok": _ok(_ref("Donor")),
    },
    ("DELETE", "/studies/<study_id>/donors/<ids>"): {
        "summary": "Delete donors: refused (donor.repository.delete.record) while in use",
        "tag": "entities",
        "scope": "study",
        "ok": _TEXT_OK,
    },
    ("GET", "/studies/<study_id>/specimens/<specimen_id>"): {
        "summary": "A specimen",
        "tag": "entities",
        "ok": _ok(_ref("Specimen")),
    },
    ("DELETE", "/studies/<study_id>/specimens/<ids>"): {
        "summary": "Delete specimens: refused while analyses use them",
        "tag": "entities",
        "scope": "study",
        "ok": _TEXT_OK,
    },
    ("GET", "/studies/<study_id>/samples/<sample_id>"): {
        "summary": "A sample",
        "tag": "entities",
        "ok": _ok(_ref("Sample")),
    },
    ("DELETE", "/studies/<study_id>/samples/<ids>"): {
        "summary": "Delete samples: refused while analyses use them",
        "tag": "entities",
        "scope": "study",
        "ok": _TEXT_OK,
    },
    ("GET", "/studies/<study_id>/files/<object_id>"): {
        "summary": "A file",
        "tag": "files",
        "ok": _ok(_ref("File")),
    },
    ("PUT", "/studies/<study_id>/files/<object_id>"): {
        "summary": "Update a file: size/md5 while UNPUBLISHED; access, dataType, info (merged)",
        "tag": "files",
        "scope": "study",
        "body": _body(_ref("FileUpdateRequest")),
        "ok": _ok(_ref("FileUpdateResponse")),
    },
    ("DELETE", "/studies/<study_id>/files/<ids>"): {
        "summary": "Delete files of UNPUBLISHED analyses (each keeps at least one file)",
        "tag": "files",
        "scope": "study",
        "ok": _TEXT_OK,
    },
    ("GET", "/schemas"): {
        "summary": "Analysis types, paged (PageDTO)",
        "tag": "schemas",
        "params": _specs(
            analysis_types.PARAMS,
            "names",
            "versions",
            "hideSchema",
            "unrenderedOnly",
            "offset",
            "limit",
            "sort",
            "sortOrder",
        ),
        "ok": _ok(_ref("AnalysisTypePage")),
    },
    ("GET", "/schemas/registration"): {
        "summary": "The meta-schema every analysis type must satisfy",
        "tag": "schemas",
        "ok": _ok(_OBJ),
    },
    ("GET", "/schemas/<name>"): {
        "summary": "One analysis type (default: latest version, rendered)",
        "tag": "schemas",
        "params": _specs(analysis_types.PARAMS, "version", "unrenderedOnly"),
        "ok": _ok(_ref("AnalysisType")),
    },
    ("POST", "/schemas"): {
        "summary": "Register an analysis type's next version",
        "tag": "schemas",
        "scope": "system",
        "body": _body(_ref("RegisterAnalysisType")),
        "ok": _ok(_ref("AnalysisType")),
    },
    ("GET", "/export/studies/<study_id>"): {
        "summary": "Resubmittable payloads of every analysis of a study",
        "tag": "export",
        "ok": _ok(_arr(_ref("ExportGroup"))),
    },
    ("GET", "/export/analysis/<analysis_ids>"): {
        "summary": "Resubmittable payloads of the listed analyses, grouped by study",
        "tag": "export",
        "ok": _ok(_arr(_ref("ExportGroup"))),
    },
    ("GET", "/entities/<entity_id>"): {
        "summary": "Score's legacy view of one file",
        "tag": "score",
        "ok": _ok(_ref("LegacyEntity")),
    },
    ("GET", "/entities"): {
        "summary": "Score's legacy file listing (Spring Page), sorted by id",
        "tag": "score",
        "params": _specs(legacy.PARAMS, *legacy.PARAMS),
        "ok": _ok(_ref("LegacyEntityPage")),
    },
    ("GET", "/search/analyses"): {
        "summary": "Portal search of analyses: filters, sorting, paging",
        "tag": "search",
        "params": _portal_params(search.ANALYSIS_SORT),
        "ok": _ok(_ref("SearchAnalysesPage")),
    },
    ("GET", "/search/files"): {
        "summary": "Portal search of files; analysis filters apply to each file's analysis",
        "tag": "search",
        "params": _portal_params(search.FILE_SORT),
        "ok": _ok(_ref("SearchFilesPage")),
    },
    ("POST", "/sql"): {
        "summary": "Read-only SQL over the catalog views (one SELECT, row and time limits)",
        "tag": "admin",
        "scope": "system",
        "body": {
            "required": True,
            "content": {
                "application/json": {"schema": _ref("SqlRequest")},
                "text/plain": {"schema": _S},
            },
        },
        "ok": _ok(_ref("SqlResult")),
    },
    ("GET", "/openapi.json"): {"summary": "This document", "tag": "system", "ok": _ok(_OBJ)},
    ("GET", "/docs"): {
        "summary": "This document as a page",
        "tag": "system",
        "ok": {"description": "HTML", "content": {"text/html": {"schema": _S}}},
    },
}

_VAR_RE = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def openapi_path(rule: str) -> str:
    return _VAR_RE.sub(lambda m: "{" + _PATH_NAMES.get(m[1], (_camel(m[1]), ""))[0] + "}", rule)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _operation(app: Flask, method: str, rule: Any) -> dict[str, Any]:
    doc = ROUTES.get((method, rule.rule))
    view = app.view_functions.get(rule.endpoint)
    if doc is None:
        text = (view.__doc__ or "").strip() if view else ""
        doc = {
            "summary": text.splitlines()[0] if text else rule.endpoint,
            "tag": rule.endpoint.split(".")[0],
            "ok": _ok(None, "OK"),
        }
    params = [
        {
            "name": _PATH_NAMES.get(arg, (_camel(arg), ""))[0],
            "in": "path",
            "required": True,
            "schema": {
                "type": "string",
                "maxLength": 256 if arg not in ("ids", "analysis_ids") else 65536,
            },
            "description": _PATH_NAMES.get(arg, ("", arg))[1],
        }
        for arg in _VAR_RE.findall(rule.rule)
    ]
    op: dict[str, Any] = {
        "operationId": f"{rule.endpoint}.{method.lower()}",
        "summary": doc["summary"],
        "tags": [doc["tag"]],
        "parameters": params + doc.get("params", []),
        "responses": {"200": doc["ok"], "default": _ERR},
    }
    if view is not None and view.__doc__ and doc["summary"] not in view.__doc__:
        op["description"] = " ".join(view.__doc__.split())
    if "body" in doc:
        op["requestBody"] = doc["body"]
    scope = doc.get("scope")
    if scope:
        op["security"] = [{"bearer": []}]
        op["responses"]["401"] = _ERR
        op["responses"]["403"] = _ERR
        needs = "the system scope (song.WRITE)"
        if scope == "study":
            needs += " or the study scope (PROGRAMDATA-<studyId>.WRITE)"
        op["description"] = f"Needs {needs}." + (
            " " + op["description"] if "description" in op else ""
        )
    if not op["parameters"]:
        del op["parameters"]
    return op


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.0 document of every route of `app`."""
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op = _operation(app, method, rule)
            while op["operationId"] in seen:
                op["operationId"] += "_"
            seen.add(op["operationId"])
            paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = op
    from importlib import metadata

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
            "schemas": SCHEMAS,
            "responses": {
                "Error": {
                    "description": "SongError (every non-2xx answer)",
                    "content": {"application/json": {"schema": _ref("SongError")}},
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
def openapi_json() -> Response:
    return Response(dumps_bytes(_spec()), mimetype="application/json")


@bp.get("/docs")
def docs() -> Response:
    return Response(render_html(_spec()), mimetype="text/html")


@bp.get("/swagger-ui.html")
@bp.get("/api-docs")
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
