"""Score's rules for an object, shared by its downloads, its uploads and DRS: the file record
and analysis state behind an objectId (Score asks Song's ``/entities`` for them), and the scopes
a caller needs (``score.<ACTION>`` or ``<prefix><studyId>.<ACTION>``, compared exactly)."""

from __future__ import annotations

from catalog.errors import LegacyEntityNotFound
from catalog.read.records import FileRow

from . import auth
from .params import current_catalog


def require_score(study_id: str | None, action: str) -> None:
    """Score's scope rule: ``score.<action>`` or ``<prefix><studyId>.<action>``, compared
    exactly; the admin token passes; nothing is checked with auth off."""
    authn = auth.authenticator()
    if not authn.enabled:
        return
    caller = auth.current_caller()
    if caller is None:
        raise auth.UnauthorizedToken("This call needs 'Authorization: Bearer <token>'")
    wanted = {f"score.{action}"}
    if study_id is not None:
        wanted.add(f"{authn.study_prefix}{study_id}.{action}")
    if caller.source == "admin" or wanted & caller.scopes:
        return
    raise auth.ForbiddenToken(
        f"The token's scopes include none of {sorted(wanted)} (compared exactly, case included)"
    )


def entity(object_id: str) -> tuple[FileRow, str]:
    """The file record of an objectId and its analysis' state; 404 when it is not registered."""
    model = current_catalog().model
    with model.lock:
        row = model.files.get(object_id)
        rec = model.analyses.get(row.analysis_id) if row is not None else None
        if row is None or rec is None:
            raise LegacyEntityNotFound(
                f"The entity with objectId '{object_id}' is not registered", object_id=object_id
            )
        return row, rec.state
