"""Changes to a registered analysis: its dynamic data (Song's PUT and PATCH) and its files.

Everything stays append-only: an update appends the analysis' next version of its data; a file
update appends the file's next version; a file delete appends a *tombstone* (the next version with
no ``file_name``), so every earlier state stays queryable (``sql --as-of``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from typing import Any

from ..errors import (
    IllegalFileUpdate,
    InvalidFileUpdate,
    MalformedParameter,
    SchemaViolation,
    StateTransitionRefused,
    problem,
)
from ..model import dumps, now
from ..read.entities import file_row
from ..settings import Settings
from .commit import Committer
from .validation import resolve_type, schema_violation

ACCESS = ("open", "controlled")
FILE_UPDATE_FIELDS = ("fileSize", "fileMd5sum", "fileAccess", "dataType", "info")
_IMMUTABLE_FILE_FIELDS = ("objectId", "studyId", "analysisId", "fileName", "fileType")
_MD5_RE = re.compile(r"^[a-fA-F0-9]{32}$")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class Updates:
    """Song's analysis and file updates, committed through the catalog's committer."""

    def __init__(self, settings: Settings, committer: Committer) -> None:
        self.settings = settings
        self.committer = committer
        self.model = committer.model

    # -- dynamic data ---------------------------------------------------------------------------

    def update_analysis(
        self, study_id: str, analysis_id: str, body: Any, *, actor: str | None = None
    ) -> None:
        """Replace an analysis' dynamic data (Song's PUT); keeps every earlier version."""
        if not isinstance(body, dict):
            raise MalformedParameter("The update must be a JSON object", name="body")

        def write() -> None:
            rec = self.model.record(study_id, analysis_id)
            if rec.state == "SUPPRESSED":
                raise StateTransitionRefused(
                    f"Cannot update the analysis '{analysis_id}': it is SUPPRESSED",
                    analysis_id=analysis_id,
                )
            compiled = resolve_type(
                body, self.committer.registry, enforce_latest=self.settings.enforce_latest
            )
            found = compiled.update_problems(body)
            if found:
                raise schema_violation(found)
            data = {k: v for k, v in body.items() if k != "analysisType"}
            row = {
                "analysis_id": analysis_id,
                "study_id": study_id,
                "version": rec.version + 1,
                "analysis_type_name": compiled.type.name,
                "analysis_type_version": compiled.type.version,
                "data": dumps(data),
                "created_at": now(),
                "actor": actor,
                "reason": "update",
            }
            self.committer.commit([("analyses", [row])], operation="update_analysis", actor=actor)

        self.committer.run(write)

    def patched(self, study_id: str, analysis_id: str, patch: Any) -> dict[str, Any]:
        """The body a merge patch makes of (data + analysisType), to be validated like a PUT."""
        rec = self.model.record(study_id, analysis_id)
        current = json.loads(rec.data)
        current["analysisType"] = {"name": rec.type_name, "version": rec.type_version}
        merged = merge_patch(current, patch)
        if not isinstance(merged, dict):
            raise SchemaViolation(
                "The patched analysis is not an object",
                problems=[problem("", "type", "expected an object")],
            )
        return merged

    # -- files ----------------------------------------------------------------------------------

    def update_file(
        self, study_id: str, object_id: str, body: Any, *, actor: str | None = None
    ) -> dict[str, Any]:
        """Song's file update: appends the file's next version unless nothing changes."""
        given = check_file_update_request(body)

        def write() -> tuple[str, str, str, dict[str, Any]]:
            row = file_row(self.model, study_id, object_id)
            original = self.model.file_json(row)
            check_file_update_request(body, original)
            aid = row.analysis_id
            state = self.model.analyses[aid].state
            if state == "SUPPRESSED":
                raise IllegalFileUpdate(
                    f"The file '{object_id}' cannot be updated: its analysis '{aid}' is SUPPRESSED",
                    analysis_id=aid,
                )
            kind = classify_file_update(original, given)
            if kind == "CONTENT_UPDATE" and state != "UNPUBLISHED":
                raise IllegalFileUpdate(
                    f"The content (size or md5) of file '{object_id}' can change only while its "
                    f"analysis '{row.analysis_id}' is UNPUBLISHED, not {state}: unpublish it first",
                    analysis_id=row.analysis_id,
                )
            if kind != "NO_UPDATE":
                info = {**original["info"], **given.get("info", {})}
                info = {k: v for k, v in info.items() if v is not None}
                new_row = {
                    "object_id": object_id,
                    "analysis_id": row.analysis_id,
                    "study_id": study_id,
                    "version": row.version + 1,
                    "file_name": row.file_name,
                    "file_size": given.get("fileSize", row.file_size),
                    "file_type": row.file_type,
                    "file_md5sum": given.get("fileMd5sum", row.file_md5sum),
                    "file_access": given.get("fileAccess", row.file_access),
                    "data_type": given.get("dataType", row.data_type),
                    "info": dumps(info) if info else None,
                    "source_path": row.source_path,
                    "created_at": now(),
                }
                self.committer.commit([("files", [new_row])], operation="update_file", actor=actor)
            return kind, state, aid, original

        kind, state, aid, original = self.committer.run(write)
        verb = "No update for" if kind == "NO_UPDATE" else "Updated"
        return {
            "fileUpdateType": kind,
            "originalAnalysisState": state,
            "unpublishedAnalysis": False,
            "message": f"{verb} file with objectId '{object_id}' and analysisId '{aid}'",
            "originalFile": original,
        }

    def delete_files(
        self, study_id: str, object_ids: Sequence[str], *, actor: str | None = None
    ) -> None:
        """Delete files of UNPUBLISHED analyses (tombstone rows); an analysis keeps >= 1 file."""

        def write() -> None:
            wanted = list(dict.fromkeys(object_ids))
            rows = [file_row(self.model, study_id, o) for o in wanted]
            per_analysis: dict[str, int] = {}
            for row in rows:
                per_analysis[row.analysis_id] = per_analysis.get(row.analysis_id, 0) + 1
            for aid, count in per_analysis.items():
                rec = self.model.analyses[aid]
                if rec.state != "UNPUBLISHED":
                    raise IllegalFileUpdate(
                        f"Files of analysis '{aid}' can be deleted only while it is UNPUBLISHED, "
                        f"not {rec.state}",
                        analysis_id=aid,
                    )
                if count >= len(rec.object_ids):
                    raise IllegalFileUpdate(
                        f"Deleting these files would leave analysis '{aid}' without files",
                        analysis_id=aid,
                    )
            at = now()
            tombstones = [
                {
                    "object_id": row.object_id,
                    "analysis_id": row.analysis_id,
                    "study_id": study_id,
                    "version": row.version + 1,
                    "file_name": None,
                    "created_at": at,
                }
                for row in rows
            ]
            self.committer.commit([("files", tombstones)], operation="delete_files", actor=actor)

        self.committer.run(write)


def check_file_update_request(body: Any, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """Song's FileUpdateRequest checks; returns the fields given (null ones dropped)."""

    if not isinstance(body, dict):
        raise InvalidFileUpdate("The file update request must be a JSON object")
    for key, value in body.items():
        if key in FILE_UPDATE_FIELDS:
            continue
        if key in _IMMUTABLE_FILE_FIELDS:
            if current is not None and value not in (None, current.get(key)):
                raise InvalidFileUpdate(f"The field '{key}' of a file cannot be changed")
            continue
        raise InvalidFileUpdate(
            f"Unknown field '{key}': a file update may set {', '.join(FILE_UPDATE_FIELDS)}"
        )
    given = {k: body[k] for k in FILE_UPDATE_FIELDS if body.get(k) is not None}
    size = given.get("fileSize")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise InvalidFileUpdate(
            f"fileSize must be an integer greater than 0, not {json.dumps(size)}"
        )
    md5 = given.get("fileMd5sum")
    if md5 is not None and (not isinstance(md5, str) or not _MD5_RE.match(md5)):
        raise InvalidFileUpdate(
            f"fileMd5sum must be 32 hexadecimal characters, not {json.dumps(md5)[:80]}"
        )
    access = given.get("fileAccess")
    if access is not None and access not in ACCESS:
        raise InvalidFileUpdate(
            f"fileAccess must be one of {', '.join(ACCESS)}, not {json.dumps(access)[:80]}"
        )
    data_type = given.get("dataType")
    if data_type is not None and not isinstance(data_type, str):
        raise InvalidFileUpdate("dataType must be a string")
    info = given.get("info")
    if info is not None and not isinstance(info, dict):
        raise InvalidFileUpdate("info must be a JSON object")
    return given


def classify_file_update(current: dict[str, Any], given: dict[str, Any]) -> str:
    """CONTENT_UPDATE, METADATA_UPDATE or NO_UPDATE, as Song decides it."""
    if any(k in given and given[k] != current[k] for k in ("fileSize", "fileMd5sum")):
        return "CONTENT_UPDATE"
    if any(k in given and given[k] != current[k] for k in ("fileAccess", "dataType")):
        return "METADATA_UPDATE"
    if "info" in given and {**current["info"], **given["info"]} != current["info"]:
        return "METADATA_UPDATE"
    return "NO_UPDATE"
