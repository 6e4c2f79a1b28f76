"""Score's download side for portals and score-client (score-storage.md §3): object specs with
URLs, the ping, the existence check, and the bytes themselves when the store is local.

    GET /download/ping                  a URL of the sentinel (data/heliograph), plain text
    GET /download/{objectId}?offset=&length=&external=&exclude-urls=
                                        the ObjectSpecification with a URL per part: presigned S3
                                        GETs, or for the local store signed songlake URLs
    GET /upload/{objectId}              JSON boolean: does data/<id>.meta exist (Score's rule)
    GET /objects/data/{name}?X-Amz-Date=&X-Amz-Expires=&X-Songlake-Signature=
                                        the local store's bytes, with HTTP Range (206 / 416)

Access, as Score enforces it (checked before the analysis state, as Score's @PreAuthorize is):
``open`` files need no token; ``controlled`` ones (and empty access) need a token whose scopes
include ``score.READ`` or ``<prefix><studyId>.READ`` (prefix from ``auth_study_prefix``, default
``PROGRAMDATA-``); the study id is compared exactly (case-sensitive, as in Song). URLs are
handed out only for PUBLISHED analyses; ``exclude-urls=true`` (what Song sends at publish) skips
that check. ``GET /upload/{id}`` needs ``score.WRITE`` or ``<prefix><studyId>.WRITE``. The admin
token passes every check. With ``auth = false`` no token is checked. Local URLs are signed
(signing.py), valid ``s3_url_expiration`` seconds and only while the analysis state and the file's
access stay as they were. A blob without its .meta is still served, as Score does since 5.10.1:
its spec is made from the blob.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context

from catalog.errors import (
    IllegalAnalysisState,
    MalformedParameter,
    NotFound,
    RangeExceedsObject,
    StorageObjectNotFound,
)
from catalog.store.layout import SENTINEL, SENTINEL_CONTENT, ObjectSpec, check_object_id, part_plan

from . import auth, signing
from .access import entity
from .errors import error_response, http_error_id, song_error
from .params import current_catalog, flag, integer

bp = Blueprint("downloads", __name__)

READ_SCOPE = "score.READ"
WRITE_SCOPE = "score.WRITE"
PING_EXPIRES = 300  # Score's ping URL lives five minutes
SEND_BLOCK = 256 * 1024


# -- access -------------------------------------------------------------------------------------


def _authenticator() -> auth.Authenticator | None:
    return current_app.extensions.get(auth.EXTENSION)


def check_access(study_id: str, access: str | None, action: str = "READ") -> None:
    """Score's rule for a file: open needs nothing, controlled a READ (or WRITE) scope."""
    if action == "READ" and access == "open":
        return
    if action == "READ" and access not in ("controlled", "", None):
        raise MalformedParameter(
            f"The file access '{access}' is neither open nor controlled",
            name="fileAccess",
            value=access,
        )
    authn = _authenticator()
    if authn is not None and not authn.enabled:
        return  # auth = false: like Score's non-secure profile
    caller = auth.current_caller() if authn is not None else None
    if caller is None:
        raise auth.UnauthorizedToken(
            f"A {'controlled file' if action == 'READ' else 'storage write'} needs "
            "'Authorization: Bearer <token>'"
        )
    prefix = authn.study_prefix if authn is not None else "PROGRAMDATA-"
    if caller.source == "admin" or any(
        _grants(scope, prefix, study_id, action) for scope in caller.scopes
    ):
        return
    raise auth.ForbiddenToken(
        f"The token's scopes include neither 'score.{action}' nor '{prefix}{study_id}.{action}'"
    )


def _grants(scope: str, prefix: str, study_id: str, action: str) -> bool:
    """``score.<ACTION>`` or ``<prefix><studyId>.<ACTION>``: the words in any case, as before,
    but the study id exactly (study ids are case-sensitive: ``a`` is not ``A``)."""
    if scope.lower() == f"score.{action}".lower():
        return True
    head, _, act = scope.rpartition(".")
    return (
        act.upper() == action
        and head[: len(prefix)].upper() == prefix.upper()
        and head[len(prefix) :] == study_id
    )


def _entity(object_id: str) -> tuple[str, str, str | None]:
    """(studyId, analysis state, access) of a registered file; 404 when it is not registered."""
    row, state = entity(object_id)
    return row.study_id, state, row.file_access


# -- local URLs ---------------------------------------------------------------------------------


def local_url(name: str, expires: int, grant: str | None = None) -> str:
    """A signed URL of the local store's bytes (signing.py: ``grant`` defaults to the name)."""
    query = signing.signed_query(grant or name, expires)
    return f"{signing.base_url()}objects/data/{name}?{query}"


def object_grant(object_id: str, state: str, access: str | None) -> str:
    """What a download URL grants: this object while its analysis state and access stay so."""
    return f"{object_id}\n{state}\n{access or ''}"


def _url(object_id: str, expires: int, state: str, access: str | None) -> str:
    url = current_catalog().store.presigned_url(object_id, expires=expires)
    if url is not None:
        return url
    return local_url(object_id, expires, object_grant(object_id, state, access))


# -- endpoints ----------------------------------------------------------------------------------


@bp.get("/download/ping")
def ping() -> Response:
    """A URL of the sentinel that the client GETs to prove it can reach storage."""
    store = current_catalog().store
    url = store.sentinel_url(expires=PING_EXPIRES)
    if url is None:
        url = local_url(SENTINEL, PING_EXPIRES)
    return Response(url, mimetype="text/plain")


@bp.get("/download/<object_id>")
def download(object_id: str) -> Response:
    check_object_id(object_id)
    offset = integer("offset", 0)
    length = integer("length", -1)
    external = flag("external")
    exclude_urls = flag("exclude-urls")
    study_id, state, access = _entity(object_id)
    check_access(study_id, access)
    if not exclude_urls and state != "PUBLISHED":
        raise IllegalAnalysisState(
            f"Can only download objects that have the analysisState 'PUBLISHED' or when the "
            f"'exclude-urls=true' flag is set; objectId '{object_id}' belongs to a {state} "
            "analysis",
            object_id=object_id,
        )
    catalog = current_catalog()
    raw = catalog.store.read_meta(object_id) or catalog.store.blob_spec(object_id)
    if raw is None:
        raise StorageObjectNotFound(object_id=object_id)
    size = int(raw["objectSize"])
    if offset < 0:
        raise MalformedParameter(
            f"The offset {offset} is negative", name="offset", value=str(offset)
        )
    # Score's rules: offset 0 and any negative length is the whole object; otherwise a negative
    # length runs to the end, and a range past the end is its InternalUnrecoverableError (500)
    if external or offset != 0 or length >= 0:
        if not external and length < 0:
            length = size - offset
        if offset + length > size or (not external and length < 0):
            raise RangeExceedsObject(
                f"Specified parameters exceed object size (object id: {object_id}, offset: "
                f"{offset}, length: {length})",
                object_id=object_id,
            )
    expires = catalog.settings.s3_url_expiration
    url = None if exclude_urls else _url(object_id, expires, state, access)
    if external:
        body = dict(raw)
        body["uploadId"] = object_id
        body["objectSize"] = length  # Score echoes the length asked for
        body["parts"] = [{"partNumber": 1, "partSize": -1, "offset": 0, "url": url, "md5": None}]
    elif offset == 0 and length < 0:
        body = dict(raw)  # the stored spec as it is, sourceMd5 included
        body["parts"] = [dict(p, url=url) for p in raw.get("parts") or []]
    else:
        span = length
        body = dict(raw)
        body["uploadId"] = object_id
        body["objectSize"] = span
        body["parts"] = [
            {
                "partNumber": p.part_number,
                "partSize": p.part_size,
                "offset": offset + p.offset,
                "url": url,
                "md5": None,
            }
            for p in part_plan(span, catalog.store.part_size)
        ]
    body.pop("relocated", None)
    return jsonify(body)


@bp.get("/upload/<object_id>")
def exists(object_id: str) -> Response:
    """Score's existence check: whether data/<id>.meta exists (the blob is not looked at)."""
    check_object_id(object_id)
    try:
        study_id = _entity(object_id)[0]
    except NotFound:
        study_id = ""  # an unregistered object: only score.WRITE may ask
    check_access(study_id, None, action="WRITE")
    return jsonify(current_catalog().store.exists(object_id))


@bp.get("/objects/data/<name>")
def blob(name: str) -> Response:
    """The local store's bytes behind a signed URL, with one HTTP Range."""
    store = current_catalog().store
    if name == SENTINEL:
        signing.check_signed(name)
        return Response(SENTINEL_CONTENT, mimetype="application/octet-stream")
    check_object_id(name)
    # the URL holds while the analysis state and the file's access are what they were when it
    # was signed: an unpublish or a suppress takes effect at once
    _, state, access = _entity(name)
    signing.check_signed(
        object_grant(name, state, access),
        ", or the analysis state or the file's access changed since it was issued",
    )
    raw = store.read_meta(name) or store.blob_spec(name)
    if raw is None:
        raise StorageObjectNotFound(object_id=name)
    size = ObjectSpec.from_json(raw).object_size
    start, stop, status = 0, size, 200
    headers: dict[str, Any] = {"Accept-Ranges": "bytes"}
    if request.range is not None:
        span = request.range.range_for_length(size)
        if span is None:
            body = song_error(
                http_error_id(416),
                416,
                f"The range {request.headers.get('Range')} is outside objectId '{name}' "
                f"({size} bytes)",
            )
            return error_response(body, {"Content-Range": f"bytes */{size}"})
        start, stop = span
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    headers["Content-Length"] = str(stop - start)
    wrapper = request.environ.get("wsgi.file_wrapper")
    blob_file = store.open_file(name) if wrapper is not None else None
    if wrapper is not None and blob_file is not None:
        # waitress sends the file from its event loop: a client that never reads pins no worker
        # thread and no memory (it reads a block when the socket can take one)
        blob_file.seek(start)
        return Response(
            wrapper(blob_file, SEND_BLOCK),
            status=status,
            headers=headers,
            mimetype="application/octet-stream",
            direct_passthrough=True,
        )
    reader = store.open_range(name, start, stop - start)

    def chunks() -> Iterator[bytes]:
        with reader:
            while data := reader.read(1024 * 1024):
                yield data

    return Response(
        stream_with_context(chunks()),
        status=status,
        headers=headers,
        mimetype="application/octet-stream",
    )
