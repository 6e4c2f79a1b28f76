"""The shared schemas of the OpenAPI document (``#/components/schemas``): Song's entities, the
answers' pages, the request bodies, and the payload, which is ``schemas/analysisBase.json``
itself, translated from JSON Schema (draft-07) to OpenAPI 3.0's dialect.
"""

from __future__ import annotations

from typing import Any

from catalog.model import STATES
from catalog.write.registry import base_schema

from .docs import BOOLEAN, INTEGER, OBJECT, STRING, array, ref

_TIME = {"type": "string", "nullable": True, "description": "naive ISO-8601, server local time"}
_STATE = {"type": "string", "enum": list(STATES)}


def _object(**props: Any) -> dict[str, Any]:
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
            "errorId": {**STRING, "example": "analysis.id.not.found"},
            "httpStatusCode": INTEGER,
            "httpStatusName": {**STRING, "example": "NOT_FOUND"},
            "message": STRING,
            "requestUrl": STRING,
            "debugMessage": STRING,
            "timestamp": {**INTEGER, "description": "epoch milliseconds"},
            "stackTrace": array(STRING),
            "datetime": STRING,
            "problems": array(ref("Problem")),
        },
    },
    "Problem": _object(
        pointer=STRING, rule=STRING, message=STRING, schema={**STRING, "nullable": True}
    ),
    "Study": _object(
        studyId=STRING, name=STRING, organization=STRING, description=STRING, info=OBJECT
    ),
    "Donor": _object(
        donorId=STRING, studyId=STRING, submitterDonorId=STRING, gender=STRING, info=OBJECT
    ),
    "Specimen": _object(
        specimenId=STRING,
        donorId=STRING,
        submitterSpecimenId=STRING,
        tumourNormalDesignation=STRING,
        specimenTissueSource=STRING,
        specimenType=STRING,
        info=OBJECT,
    ),
    "Sample": _object(
        sampleId=STRING,
        specimenId=STRING,
        submitterSampleId=STRING,
        sampleType=STRING,
        matchedNormalSubmitterSampleId={**STRING, "nullable": True},
        info=OBJECT,
    ),
    "CompositeSample": {
        "allOf": [ref("Sample"), _object(specimen=ref("Specimen"), donor=ref("Donor"))]
    },
    "StudyTree": {
        "allOf": [
            ref("Study"),
            _object(
                donors=array(
                    {
                        "allOf": [
                            ref("Donor"),
                            _object(
                                specimens=array(
                                    {
                                        "allOf": [
                                            ref("Specimen"),
                                            _object(samples=array(ref("Sample"))),
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
    "File": _object(
        objectId=STRING,
        studyId=STRING,
        analysisId=STRING,
        fileName=STRING,
        fileSize=INTEGER,
        fileType=STRING,
        fileMd5sum=STRING,
        fileAccess={"type": "string", "enum": ["open", "controlled"]},
        dataType=STRING,
        info=OBJECT,
    ),
    "StateChange": _object(
        initialState=_STATE,
        updatedState=_STATE,
        updatedAt=STRING,
    ),
    "Analysis": {
        "type": "object",
        "additionalProperties": True,
        "description": "Dynamic data (e.g. experiment) is flattened into the top level.",
        "properties": {
            "analysisId": STRING,
            "studyId": STRING,
            "analysisState": _STATE,
            "analysisType": _object(name=STRING, version=INTEGER),
            "createdAt": _TIME,
            "updatedAt": _TIME,
            "firstPublishedAt": _TIME,
            "publishedAt": _TIME,
            "analysisStateHistory": array(ref("StateChange")),
            "samples": array(ref("CompositeSample")),
            "files": array(ref("File")),
        },
    },
    "SubmitResponse": _object(analysisId=STRING, status={**STRING, "example": "OK"}),
    "Message": _object(message=STRING),
    "AnalysisPage": _object(
        analyses=array(ref("Analysis")), totalAnalyses=INTEGER, currentTotalAnalyses=INTEGER
    ),
    "SearchAnalysesPage": _object(
        analyses=array(ref("Analysis")),
        totalAnalyses=INTEGER,
        currentTotalAnalyses=INTEGER,
        limit=INTEGER,
        offset=INTEGER,
    ),
    "SearchFile": {"allOf": [ref("File"), _object(analysisState=_STATE)]},
    "SearchFilesPage": _object(
        files=array(ref("SearchFile")),
        totalFiles=INTEGER,
        currentTotalFiles=INTEGER,
        limit=INTEGER,
        offset=INTEGER,
    ),
    # any other key is refused (malformed.parameter): ignored, it would match the whole study
    "IdSearchRequest": {
        **_object(
            donorId=STRING,
            sampleId=STRING,
            specimenId=STRING,
            objectId=STRING,
            submitterSampleId=STRING,
            submitterDonorIds=array(STRING),
            submitterSpecimenIds=array(STRING),
        ),
        "additionalProperties": False,
    },
    "AnalysisType": _object(
        name=STRING,
        version=INTEGER,
        createdAt=STRING,
        options={**_object(fileTypes=array(STRING)), "nullable": True},
        schema=OBJECT,
    ),
    "AnalysisTypePage": _object(
        limit=INTEGER, offset=INTEGER, count=INTEGER, resultSet=array(ref("AnalysisType"))
    ),
    "RegisterAnalysisType": {
        "type": "object",
        "required": ["name", "schema"],
        "properties": {
            "name": STRING,
            "schema": OBJECT,
            "options": {**_object(fileTypes=array(STRING)), "nullable": True},
        },
    },
    "FileUpdateRequest": _object(
        fileSize={**INTEGER, "minimum": 1},
        fileMd5sum={**STRING, "pattern": "^[a-fA-F0-9]{32}$"},
        fileAccess={"type": "string", "enum": ["open", "controlled"]},
        dataType=STRING,
        info=OBJECT,
    ),
    "FileUpdateResponse": _object(
        fileUpdateType={
            "type": "string",
            "enum": ["NO_UPDATE", "METADATA_UPDATE", "CONTENT_UPDATE"],
        },
        originalAnalysisState=_STATE,
        unpublishedAnalysis=BOOLEAN,
        message=STRING,
        originalFile=ref("File"),
    ),
    "ExportGroup": _object(studyId=STRING, payloads=array(ref("Payload"))),
    "LegacyEntity": _object(
        id=STRING, gnosId=STRING, fileName=STRING, projectCode=STRING, access=STRING
    ),
    "SpringSort": _object(sorted=BOOLEAN, unsorted=BOOLEAN, empty=BOOLEAN),
    "LegacyEntityPage": _object(
        content=array(ref("LegacyEntity")),
        pageable=_object(
            sort=ref("SpringSort"),
            offset=INTEGER,
            pageNumber=INTEGER,
            pageSize=INTEGER,
            paged=BOOLEAN,
            unpaged=BOOLEAN,
        ),
        totalElements=INTEGER,
        totalPages=INTEGER,
        last=BOOLEAN,
        first=BOOLEAN,
        size=INTEGER,
        number=INTEGER,
        numberOfElements=INTEGER,
        sort=ref("SpringSort"),
        empty=BOOLEAN,
    ),
    "SqlRequest": {
        "type": "object",
        "required": ["query"],
        "properties": {
            "query": {
                **STRING,
                "example": "SELECT analysis_state, count(*) FROM analyses GROUP BY 1",
            },
            "limit": {**INTEGER, "minimum": 0},
            "asOf": {**STRING, "description": "a catalog version or an ISO-8601 time"},
        },
    },
    "SqlResult": _object(
        columns=array(STRING), rows=array(array({})), rowCount=INTEGER, truncated=BOOLEAN
    ),
    "Health": _object(
        status={"type": "string", "enum": ["UP"]},
        tables={"type": "object", "additionalProperties": INTEGER},
        catalogVersion=INTEGER,
        readModel=_object(
            analyses=INTEGER,
            studies=INTEGER,
            file=STRING,
            versions={"type": "object", "additionalProperties": INTEGER},
            applies=INTEGER,
            applyMaxMs={"type": "number"},
        ),
        objectStore=_object(reachable=BOOLEAN, store=STRING),
        groupCommit=_object(
            batches=INTEGER,
            transitions=INTEGER,
            largestBatch=INTEGER,
            meanBatch={"type": "number"},
            busySeconds={"type": "number"},
        ),
        writer=_object(
            lease={"type": "object", "description": "holder, epoch, since, held, kind"},
            last_commit={
                "type": "object",
                "nullable": True,
                "description": "version, committedAt, operation, writer, epoch",
            },
            process=_object(
                writer=STRING,
                commits=INTEGER,
                conflicts=INTEGER,
                holds=INTEGER,
                waits=INTEGER,
                wait_seconds={"type": "number"},
                takeovers=INTEGER,
                lost=INTEGER,
            ),
        ),
        checkedInMs={"type": "number"},
    ),
    "Version": _object(name=STRING, version=STRING, songApiVersion=STRING, python=STRING),
}


def payload_schema() -> dict[str, Any]:
    """A Song payload: the base schema every analysis type extends, open to the dynamic data."""
    base = base_schema()
    schema = from_json_schema(base)
    schema["additionalProperties"] = True
    schema["description"] = (
        "A Song payload: studyId, analysisType{name,version}, samples, files and the analysis "
        "type's dynamic data (see GET /schemas/{name}). " + base.get("description", "")
    ).strip()
    return schema


def components() -> dict[str, Any]:
    """Every component schema, the payload included."""
    return {**SCHEMAS, "Payload": payload_schema()}


# -- JSON Schema (draft-07) -> OpenAPI 3.0 --------------------------------------------------------

#: keywords whose value is one schema, a list of schemas, or a map of name -> schema
_ONE = ("items", "not", "additionalProperties")
_LIST = ("allOf", "anyOf", "oneOf")
_MAP = ("properties",)
_NULL = {"type": "null"}


def from_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` in OpenAPI 3.0's dialect: local ``$ref``s inlined, ``null`` types and branches
    as ``nullable``, ``const`` as a one-value enum, ``if/then/else`` as ``anyOf`` of the two
    cases; ``$schema`` and ``definitions`` dropped."""

    def resolve(pointer: str) -> Any:
        node: Any = schema
        for part in pointer.removeprefix("#/").split("/"):
            node = node[part]
        return node

    def convert(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return convert(resolve(node["$ref"]))
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("$schema", "definitions", "if", "then", "else"):
                continue
            if key == "type" and isinstance(value, list):
                types = [t for t in value if t != "null"]
                out["type"] = types[0]
                if len(types) < len(value):
                    out["nullable"] = True
            elif key == "const":
                out["enum"] = [value]
                if value is None:
                    out["nullable"] = True
            elif key == "anyOf" and _NULL in value:
                rest = [convert(v) for v in value if v != _NULL]
                out.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
                out["nullable"] = True
            elif key in _ONE:
                out[key] = convert(value)
            elif key in _LIST:
                out[key] = [convert(v) for v in value]
            elif key in _MAP:
                out[key] = {name: convert(v) for name, v in value.items()}
            else:
                out[key] = value
        if "if" in node:
            case = convert(node["if"])
            out["anyOf"] = [
                {"allOf": [case, convert(node.get("then", {}))]},
                {"allOf": [{"not": case}, convert(node.get("else", {}))]},
            ]
        return out

    return convert(schema)
