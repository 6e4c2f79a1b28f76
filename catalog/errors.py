"""Every error songlake raises on purpose, each carrying a Song error id.

    SonglakeError               error_id, message, context (study, analysis, path, ...)
    ├── NotFound                study.id.does.not.exist, analysis.id.not.found, file.not.found, ...
    ├── Conflict                study.already.exists, info.already.exists, mismatching.*.data, ...
    ├── BadRequest              malformed.parameter, entity.not.related.to.study, ...
    │   ├── SchemaViolation     schema.violation, with a list of problems
    │   └── StateTransitionRefused   suppressed.state.transition
    ├── PayloadParsing          payload.parsing (not JSON, not UTF-8, not an object, too large)
    ├── StorageCheckFailed      missing.storage.objects, mismatching.storage.object.* (publish)
    └── Internal                unknown.error and Song's other 5xx ids

The HTTP status of each error id lives in one table in the API layer; the CLI prints
``error [<error_id>]: <message>`` and exits 1; the watcher writes ``problems`` into the errors file.
A problem is a plain dict ``{pointer, rule, message, schema}`` (see ``problem``).
"""

from __future__ import annotations

from typing import Any


def problem(pointer: str, rule: str, message: str, schema: str | None = None) -> dict[str, Any]:
    """One validation problem: where (JSON pointer), which rule, a plain message, which schema."""
    return {"pointer": pointer, "rule": rule, "message": message, "schema": schema}


class SonglakeError(Exception):
    """Base of every deliberate error: a Song error id, a message and its context."""

    error_id = "unknown.error"
    #: the class-name part of Song's message prefix "[<Context>::<errorId>] - "
    context_name = "Songlake"

    def __init__(
        self,
        message: str,
        *,
        error_id: str | None = None,
        problems: list[dict[str, Any]] | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message)
        if error_id is not None:
            self.error_id = error_id
        self.message = message
        self.problems = list(problems or [])
        self.context = context

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"errorId": self.error_id, "message": self.message}
        if self.problems:
            out["problems"] = self.problems
        ctx = {k: v for k, v in self.context.items() if v is not None}
        if ctx:
            out["context"] = ctx
        return out


class NotFound(SonglakeError):
    error_id = "id.not.found"


class Conflict(SonglakeError):
    error_id = "info.already.exists"


class BadRequest(SonglakeError):
    error_id = "malformed.parameter"


class SchemaViolation(BadRequest):
    error_id = "schema.violation"


class StateTransitionRefused(BadRequest):
    error_id = "suppressed.state.transition"


class PayloadParsing(SonglakeError):
    error_id = "payload.parsing"


class StorageCheckFailed(SonglakeError):
    error_id = "missing.storage.objects"


class Internal(SonglakeError):
    error_id = "unknown.error"
