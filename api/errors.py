"""Song's error envelope: the one table of error id -> HTTP status, and the handlers that turn
every non-2xx answer into a full SongError JSON (reference/song-api.md §2).

    what was raised                 status                  errorId
    SonglakeError (catalog)         STATUS[error_id]        the error's own id
    werkzeug HTTPException          the exception's code    Spring's status name lower-cased, "_"
      (unknown route, wrong method,                         -> "." (Song's own rule for its ids):
       body too large, ...)                                 not.found, method.not.allowed, ...
    any other Exception             500                     unknown.error

Why "not.found" for an unknown route rather than "unknown.error": in Song's table unknown.error is
a 500, and a client that maps ids to statuses should not see it on a 404. Song itself answers these
with Spring's default body; both Song SDKs need the SongError shape, so we never do that.

An unexpected exception is logged with its traceback and an incident id; the body carries only the
incident id, never the exception's text or class (they can hold paths and data).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from catalog.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadParsing,
    SonglakeError,
    StorageCheckFailed,
)

log = logging.getLogger("songlake.api")

# Song's ServerErrors, grouped by the HTTP status each one answers with (song-api.md §2.2).
_IDS_BY_STATUS: dict[int, tuple[str, ...]] = {
    400: (
        "suppressed.state.transition",
        "invalid.file.update.request",
        "illegal.file.update.request",
        "search.term.syntax",
        "illegal.filter.parameter",
        "illegal.query.parameter",
        "entity.not.related.to.study",
        "malformed.parameter",
        "study.id.missing",
        "schema.violation",
        "malformed.json.schema",
        "illegal.analysis.type.name",
        # songlake's own, beyond Song's list
        "illegal.analysis.state",  # Score: a download (with URLs) of an unpublished object
        "illegal.analysis.update.request",  # the watcher: a sidecar edit that cannot apply
        "upload.refused",  # Score's upload protocol: a part, finalize or recovery refused
    ),
    401: ("unauthorized.token",),
    403: ("forbidden.token",),
    404: (
        "study.id.does.not.exist",
        "donor.does.not.exist",
        "specimen.does.not.exist",
        "sample.does.not.exist",
        "upload.id.not.found",
        "file.not.found",
        "legacy.entity.not.found",
        "info.not.found",
        "analysis.id.not.found",
        "sequencing.read.not.found",
        "variant.call.not.found",
        "analysis.type.not.found",
        "id.not.found",
        "storage.object.not.found",
    ),
    409: (
        "upload.id.not.validated",
        "analysis.type.incorrect.version",
        "analysis.id.collision",
        "info.already.exists",
        "sample.already.exists",
        "donor.already.exists",
        "specimen.already.exists",
        "sample.to.specimen.id.mismatch",
        "mismatching.sample.data",
        "mismatching.specimen.data",
        "mismatching.donor.data",
        "specimen.to.donor.id.mismatch",
        "study.already.exists",
        "mismatching.storage.object.sizes",
        "mismatching.storage.object.checksums",
        "missing.storage.objects",
        "study.id.mismatch",
        "analysis.type.already.exists",
        # songlake's own, beyond Song's list: another process holds the root's lock
        "watcher.already.running",
        "dispatcher.already.running",
    ),
    422: (
        "upload.repository.create.record",
        "analysis.repository.create.record",
        "sequencing.read.repository.create.record",
        "variant.call.repository.create.record",
        "info.repository.create.record",
        "info.repository.update.record",
        "info.repository.delete.record",
        "file.repository.update.record",
        "donor.repository.update.record",
        "sample.repository.update.record",
        "specimen.repository.update.record",
        "study.repository.create.record",
        "file.repository.delete.record",
        "donor.repository.delete.record",
        "specimen.repository.delete.record",
        "sample.repository.delete.record",
        "payload.parsing",
    ),
    500: (
        "generator.clock.moved.backwards",
        "donor.id.is.corrupted",
        "sample.id.is.corrupted",
        "specimen.id.is.corrupted",
        "analysis.id.not.created",
        "analysis.missing.files",
        "analysis.missing.samples",
        "sample.repository.create.record",
        "file.repository.create.record",
        "specimen.record.failed",
        "donor.record.failed",
        "analysis.state.update.failed",
        "variant.call.corrupted.duplicate",
        "sequencing.read.corrupted.duplicate",
        "unregistered.type",
        "invalid.storage.download.response",
        "object.overwrite.refused",  # Score: an upload with overwrite=false of a stored object
        "storage.range.exceeds.object",  # Score: a download range past the object's end
        "unknown.error",
        "duplicate.analysis.schema",
        "duplicate.analysis.data",
    ),
    413: ("payload.too.large",),  # songlake's own: a body or a SQL answer over its limit
    501: ("not.implemented.yet",),
    502: (
        "bad.reply.from.gateway",
        "gateway.service.not.found",
        "rest.client.unexpected.response",
        "id.service.error",
        "storage.service.error",
    ),
    503: ("service.unavailable",),
    504: ("gateway.is.down", "gateway.timed.out"),
}

#: THE table: Song error id -> HTTP status.
STATUS: dict[str, int] = {eid: code for code, ids in _IDS_BY_STATUS.items() for eid in ids}

# An id songlake adds beyond Song's list answers with the status of its error class.
_CLASS_STATUS: tuple[tuple[type[SonglakeError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (PayloadParsing, 422),
    (BadRequest, 400),
    (StorageCheckFailed, 409),
)

# Spring's HttpStatus enum names where Python's HTTPStatus names differ (or may, by version).
_SPRING_NAMES = {
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    416: "REQUESTED_RANGE_NOT_SATISFIABLE",
    422: "UNPROCESSABLE_ENTITY",
}

DEFAULT_CONTEXT = "Songlake"


def status_of(error: SonglakeError) -> int:
    """The HTTP status a catalog error answers with."""
    code = STATUS.get(error.error_id)
    if code is not None:
        return code
    for cls, class_code in _CLASS_STATUS:
        if isinstance(error, cls):
            return class_code
    return 500


def status_name(code: int) -> str:
    """Spring's HttpStatus enum name for a status code, e.g. 404 -> NOT_FOUND."""
    if code in _SPRING_NAMES:
        return _SPRING_NAMES[code]
    try:
        return HTTPStatus(code).name
    except ValueError:
        return "INTERNAL_SERVER_ERROR" if code >= 500 else "BAD_REQUEST"


def http_error_id(code: int) -> str:
    """Song's rule for ids (enum name lower-cased, "_" -> ".") applied to the status name."""
    return status_name(code).lower().replace("_", ".")


def song_error(
    error_id: str,
    status: int,
    text: str,
    *,
    context: str = DEFAULT_CONTEXT,
    debug_message: str = "N/A",
    problems: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A full SongError body for the current request: Song's 8 fields, datetime, any problems."""
    body = song_error_body(
        error_id, status, text, request.url, context=context, debug_message=debug_message
    )
    if problems:
        body["problems"] = problems
    return body


def song_error_body(
    error_id: str,
    status: int,
    text: str,
    url: str,
    *,
    context: str = DEFAULT_CONTEXT,
    debug_message: str = "N/A",
) -> dict[str, Any]:
    """Song's 8 fields and a datetime, for any request (the server's own answers included)."""
    millis = time.time_ns() // 1_000_000
    return {
        "errorId": error_id,
        "httpStatusCode": status,
        "httpStatusName": status_name(status),
        "message": f"[{context}::{error_id}] - {text}",
        "requestUrl": url,
        "debugMessage": debug_message,
        "timestamp": millis,
        "stackTrace": [],
        "datetime": datetime.fromtimestamp(millis / 1000)
        .astimezone()
        .isoformat(timespec="milliseconds"),
    }


def error_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    response = jsonify(body)
    response.status_code = body["httpStatusCode"]
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def handle_songlake_error(error: SonglakeError) -> Response:
    return error_response(
        song_error(
            error.error_id,
            status_of(error),
            error.message,
            context=getattr(error, "context_name", DEFAULT_CONTEXT),
            problems=error.problems,
        )
    )


def handle_http_exception(error: HTTPException) -> Response | HTTPException:
    code = error.code or 500
    if code < 400:  # redirects and the like are answers, not errors
        return error
    headers: dict[str, str] = {}
    for key, value in error.get_headers():
        if key.lower() in ("allow", "retry-after"):
            headers[key] = value
    text = error.description or status_name(code).replace("_", " ").capitalize()
    if code == 404:
        text = f"No endpoint {request.method} {request.path}"
    elif code == 405:
        allowed = headers.get("Allow", "")
        text = f"Request method '{request.method}' is not supported by {request.path}" + (
            f"; allowed: {allowed}" if allowed else ""
        )
    return error_response(song_error(http_error_id(code), code, text), headers)


def handle_unexpected(error: Exception) -> Response:
    incident = uuid.uuid4().hex[:12]
    log.error(
        "unexpected error %s on %s %s", incident, request.method, redacted_url(), exc_info=error
    )
    return error_response(
        song_error(
            "unknown.error",
            500,
            f"An unexpected error occurred (incident {incident}); the server log has the details",
            debug_message=f"incident {incident}",
        )
    )


def redacted_url() -> str:
    """The request's path and the names of its query parameters, their values hidden: a query
    string can carry a signature or a token, which a log must not keep."""
    names = sorted(set(request.args))
    return request.path + ("?" + "&".join(f"{n}=…" for n in names) if names else "")


def refuse_large_body() -> None:
    """Refuse a body over the limit from its Content-Length, before anything reads it (and
    before the token is checked, so that a caller without one learns nothing more)."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is not None and (request.content_length or 0) > limit:
        raise RequestEntityTooLarge(
            f"The body is {request.content_length:,} bytes, over the limit of {limit:,} bytes"
        )


def register_error_handlers(app: Flask) -> None:
    """Make every non-2xx answer of `app` a SongError JSON."""
    app.register_error_handler(SonglakeError, handle_songlake_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
