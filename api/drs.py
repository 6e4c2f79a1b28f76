"""GA4GH Data Repository Service 1.4 over the catalog's files (``/ga4gh/drs/v1/``).

    GET  /ga4gh/drs/v1/service-info                     GA4GH service-info, type drs 1.4.0
    GET  /ga4gh/drs/v1/objects/{object_id}              a DrsObject (POST: the same, with a
    POST /ga4gh/drs/v1/objects/{object_id}              passports body, which is not read)
    GET  /ga4gh/drs/v1/objects/{object_id}/access/{access_id}     an AccessURL (POST: same)

A DRS id is the file's objectId; ``self_uri`` is ``drs://<host>/<objectId>``. Each object has an
``https`` access method (a signed songlake URL, or a presigned S3 GET on an S3 store) and, on S3,
an ``s3`` one naming the blob.

Rules, those of Score's downloads: objects of PUBLISHED analyses are served; UNPUBLISHED ones
only to a token with ``score.READ`` or ``<prefix><studyId>.READ`` (else 404, as if absent);
SUPPRESSED ones to nobody (404). ``controlled`` files need one of those scopes (401 without a
token, 403 without the scope), compared exactly. Every error is DRS's ``{msg, status_code}``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify

from catalog.errors import NotFound, SonglakeError, StorageObjectNotFound
from catalog.store import check_object_id, is_object_id

from . import auth, downloads, signing
from .access import entity, require_score
from .docs import OBJECT, doc
from .errors import status_of
from .params import current_catalog, current_settings

bp = Blueprint("drs", __name__, url_prefix="/ga4gh/drs/v1")

DRS_VERSION = "1.4.0"


def _error(status: int, message: str) -> Response:
    response = jsonify({"msg": message, "status_code": status})
    response.status_code = status
    return response


@bp.errorhandler(SonglakeError)
def _drs_error(error: SonglakeError) -> Response:
    return _error(status_of(error), error.message)


@bp.errorhandler(auth.AuthError)
def _drs_auth_error(error: auth.AuthError) -> Response:
    response = _error(status_of(error), error.message)
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="songlake"'
    return response


def _servable(object_id: str) -> tuple[Any, Any]:
    """The file record and its analysis, once this caller may have them; else 404/401/403."""
    if not is_object_id(object_id):
        raise NotFound(f"No DRS object '{object_id}'")
    try:
        row, state = entity(object_id)
    except NotFound:
        raise NotFound(f"No DRS object '{object_id}'") from None
    if state == "SUPPRESSED":
        raise NotFound(f"No DRS object '{object_id}'")
    if state != "PUBLISHED":
        try:
            require_score(row.study_id, "READ")
        except auth.AuthError:
            raise NotFound(f"No DRS object '{object_id}'") from None
    if row.file_access != "open":
        require_score(row.study_id, "READ")
    model = current_catalog().model
    with model.lock:
        rec = model.analyses.get(row.analysis_id)
    return row, rec


def _host() -> str:
    return urlsplit(signing.base_url()).netloc


def _access_url(object_id: str, state: str, access: str | None) -> str:
    store = current_catalog().store
    if not store.exists(object_id) and store.blob_spec(object_id) is None:
        raise StorageObjectNotFound(object_id=object_id)
    expires = current_settings().s3_url_expiration
    url = store.presigned_url(object_id, expires=expires)
    if url is not None:
        return url
    return downloads.local_url(object_id, expires, downloads.object_grant(object_id, state, access))


def _s3_uri(object_id: str) -> str | None:
    store = current_catalog().store
    bucket_of = getattr(store, "object_bucket", None)
    if bucket_of is None:
        return None
    return f"s3://{bucket_of(object_id)}/{store.data_key(object_id)}"  # type: ignore[attr-defined]


@bp.get("/service-info")
@doc("GA4GH service-info of the DRS 1.4 service", tag="drs", ok=OBJECT)
def service_info() -> Response:
    settings = current_settings()
    return jsonify(
        {
            "id": f"org.songlake.{settings.song_server_id}.drs",
            "name": "songlake DRS",
            "type": {"group": "org.ga4gh", "artifact": "drs", "version": DRS_VERSION},
            "description": "GA4GH DRS over the files of a songlake catalog",
            "organization": {"name": "songlake", "url": signing.base_url()},
            "version": DRS_VERSION,
        }
    )


@bp.route("/objects/<object_id>", methods=["GET", "POST"])
@doc("A DrsObject: size, times, md5, access methods", tag="drs", ok=OBJECT)
def drs_object(object_id: str) -> Response:
    row, rec = _servable(object_id)
    methods: list[dict[str, Any]] = [{"type": "https", "access_id": "https"}]
    s3 = _s3_uri(object_id)
    if s3 is not None:
        methods.append({"type": "s3", "access_url": {"url": s3}})
    created = rec.created_at.isoformat()
    return jsonify(
        {
            "id": object_id,
            "name": row.file_name,
            "self_uri": f"drs://{_host()}/{object_id}",
            "size": row.file_size,
            "created_time": created,
            "updated_time": rec.updated_at.isoformat(),
            "version": str(rec.version),
            "mime_type": "application/octet-stream",
            "checksums": [{"checksum": row.file_md5sum, "type": "md5"}],
            "access_methods": methods,
            "description": f"{row.file_type or 'file'} of analysis {row.analysis_id} "
            f"in study {row.study_id}",
        }
    )


@bp.route("/objects/<object_id>/access/<access_id>", methods=["GET", "POST"])
@doc("An AccessURL: a signed or presigned URL of the bytes", tag="drs", ok=OBJECT)
def access(object_id: str, access_id: str) -> Response:
    row, rec = _servable(object_id)
    if access_id != "https":
        raise NotFound(f"No access method '{access_id}' for DRS object '{object_id}'")
    check_object_id(object_id)
    return jsonify({"url": _access_url(object_id, rec.state, row.file_access)})
