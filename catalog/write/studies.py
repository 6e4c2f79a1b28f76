"""Studies: created once (Song's POST /studies/{studyId}/), never changed or deleted."""

from __future__ import annotations

import unicodedata
from typing import Any

from ..errors import MalformedParameter, StudyAlreadyExists, StudyIdMismatch
from ..model import dumps, now
from .commit import Committer

STUDY_ID_MAX = 36
_RESERVED = ("all", ".", "..")
_BAD = ("Cc", "Cs", "Zl", "Zp")  # controls (C0, DEL, C1), surrogates, line and paragraph separators


def check_study_id(sid: Any) -> str:
    """A studyId names a folder of the inbox and a path segment of the API: 1 to 36 characters,
    none of them a control character, a line separator or a slash, and not ``all`` (``GET
    /studies/all`` is the list of studies) nor ``.`` or ``..``."""
    if not isinstance(sid, str) or not sid or len(sid) > STUDY_ID_MAX:
        raise MalformedParameter(
            f"A studyId must be a string of 1 to {STUDY_ID_MAX} characters",
            name="studyId",
            value=sid,
        )
    if sid in _RESERVED or any(c in "/\\" or unicodedata.category(c) in _BAD for c in sid):
        raise MalformedParameter(
            f"The studyId {sid!r} cannot be a study's id: 'all', '.', '..', slashes, control "
            "characters and line separators are refused",
            name="studyId",
            value=sid,
        )
    return sid


def create_study(
    committer: Committer,
    study: dict[str, Any],
    *,
    study_id: str | None = None,
    actor: str | None = None,
) -> str:
    """Check and commit a new study; returns its id."""
    if not isinstance(study, dict):
        raise MalformedParameter("A study must be a JSON object", name="study")
    sid = study.get("studyId") or study_id
    if study_id is not None and study.get("studyId") not in (None, study_id):
        raise StudyIdMismatch(
            f"The studyId '{study.get('studyId')}' in the body does not match '{study_id}'"
        )
    sid = check_study_id(sid)
    for key in ("name", "organization", "description"):
        if not isinstance(study.get(key), (str, type(None))):
            raise MalformedParameter(f"A study's {key} must be a string", name=key)
    info = study.get("info") or {}
    if not isinstance(info, dict):
        raise MalformedParameter("A study's info must be an object", name="info")

    def write() -> None:
        if sid in committer.model.studies:
            raise StudyAlreadyExists(study_id=sid)
        row = {
            "study_id": sid,
            "name": study.get("name"),
            "organization": study.get("organization"),
            "description": study.get("description"),
            "info": dumps(info) if info else None,
            "created_at": now(),
        }
        committer.commit([("studies", [row])], operation="create_study", actor=actor)

    committer.run(write)
    return sid
