"""Score's upload API (score-storage.md §2), the calls score-client makes, in their order:

    POST   /upload/{objectId}/uploads?fileSize=&md5=&overwrite=
                                        initiate: the ObjectSpecification, one PUT URL per part
    PUT    <part url>                   the bytes: straight to S3 (presigned), or for the local
                                        store to PUT /objects/upload/{objectId}?partNumber=&
                                        uploadId=&X-Amz-Date=&X-Amz-Expires=&X-Songlake-Signature=
                                        (answers the part's md5 as its ETag)
    POST   /upload/{objectId}/parts?partNumber=&uploadId=&md5=&etag=    a part is complete
    DELETE /upload/{objectId}/parts?partNumber=&uploadId=               forget a part's record
    POST   /upload/{objectId}?uploadId= finalize: parts, sizes and md5s checked, .meta last
    GET    /upload/{objectId}/status?fileSize=     UploadProgress {objectId, uploadId, parts}
    GET    /upload/{objectId}/parts     the upload in progress with fresh part URLs (resume)
    POST   /upload/{objectId}/recovery?fileSize=   200 when the upload can go on, else 400
    DELETE /upload/{objectId}           cancel the upload in progress
    POST   /upload/cancel               cancel every upload in progress (system scope)

and the two calls score-client makes to learn about the server:

    GET    /profile                     "s3": the client's S3 services fit both stores (their
                                        part URLs are plain signed URLs)
    GET    /listing                     [{id, lastModified, size}] of every blob under data/ whose
                                        name is a UUID (any valid token; Score's secure profile)

Rules, as Score and Song apply them: the objectId must be a file of the catalog (404
``legacy.entity.not.found``); the token needs ``score.WRITE`` or ``<prefix><studyId>.WRITE``,
compared exactly, case included (401 / 403); uploads start and finish only while the analysis is
UNPUBLISHED (400 ``illegal.analysis.state``: a PUBLISHED object is never overwritten); with
``overwrite=false`` a stored object is refused as Score refuses it (500
``object.overwrite.refused``); ``fileSize`` and ``md5`` must be the file record's (409
``mismatching.storage.object.sizes`` / ``...checksums``). No upload in progress: 404
``upload.id.not.found``; a part, finalize or recovery the upload refuses: 400 ``upload.refused``.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from catalog.errors import (
    IllegalAnalysisState,
    MalformedParameter,
    MismatchingObjectChecksum,
    MismatchingObjectSize,
)
from catalog.read.records import FileRow
from catalog.store import LocalUploads, ObjectSpec, Uploads, check_object_id, open_uploads

from . import auth, signing
from .access import entity, require_score
from .docs import OBJECT, STRING, answer, array, doc
from .params import current_catalog, current_settings, flag

bp = Blueprint("uploads", __name__)

EXTENSION = "songlake.uploads"


def _may_write(object_id: str) -> tuple[FileRow, str]:
    """The file record and its analysis' state, once the caller may write to its study."""
    row, state = entity(check_object_id(object_id))
    require_score(row.study_id, "WRITE")
    return row, state


def _writable(object_id: str) -> FileRow:
    """The file record, once the caller may write it and its analysis takes uploads."""
    row, state = _may_write(object_id)
    if state != "UNPUBLISHED":
        raise IllegalAnalysisState(
            f"Cannot complete upload for objectId '{object_id}' with analysisState '{state}' "
            f"and analysisId '{row.analysis_id}'. Can only upload objects that have the "
            "analysisState 'UNPUBLISHED'. Update the file metadata and retry.",
            object_id=object_id,
            analysis_id=row.analysis_id,
        )
    return row


def _uploads() -> Uploads:
    found = current_app.extensions.get(EXTENSION)
    if found is None:
        found = current_app.extensions[EXTENSION] = open_uploads(current_catalog().store)
    return found


# -- parameters -----------------------------------------------------------------------------------


def _required(name: str) -> str:
    value = request.args.get(name)
    if value is None or value == "":
        raise MalformedParameter(
            f"Required request parameter '{name}' is not present", name=name, value=None
        )
    return value


def _required_int(name: str) -> int:
    value = _required(name)
    try:
        return int(value)
    except ValueError:
        raise MalformedParameter(
            f"The parameter '{name}' must be an integer, not '{value}'", name=name, value=value
        ) from None


# -- the spec with URLs ---------------------------------------------------------------------------


def _part_grant(object_id: str, upload_id: str, part_number: int) -> str:
    return f"PUT {object_id} {upload_id} {part_number}"


def _with_urls(spec: ObjectSpec) -> dict:
    uploads = _uploads()
    expires = current_settings().upload_url_expiration
    body = spec.to_dict()
    upload_id = spec.upload_id or spec.object_id
    for part, out in zip(spec.parts, body["parts"], strict=True):
        url = uploads.part_url(spec, part, expires)
        if url is None:
            grant = _part_grant(spec.object_id, upload_id, part.part_number)
            url = (
                f"{signing.base_url()}objects/upload/{spec.object_id}?partNumber="
                f"{part.part_number}&uploadId={upload_id}&{signing.signed_query(grant, expires)}"
            )
        out["url"] = url
    return body


def _ok() -> Response:
    return Response(status=200)


# -- endpoints ------------------------------------------------------------------------------------


@bp.post("/upload/<object_id>/uploads")
@doc("Start an upload: the part plan with one PUT URL per part", scope="study", ok=OBJECT)
def initiate(object_id: str) -> Response:
    row = _writable(object_id)
    size = _required_int("fileSize")
    md5 = request.args.get("md5") or None
    overwrite = flag("overwrite")
    if size != row.file_size:
        raise MismatchingObjectSize(
            f"The fileSize {size} is not the size {row.file_size} registered for objectId "
            f"'{object_id}'",
            object_id=object_id,
        )
    if md5 is not None and md5.lower() != row.file_md5sum.lower():
        raise MismatchingObjectChecksum(
            f"The md5 {md5} is not the md5 {row.file_md5sum} registered for objectId '{object_id}'",
            object_id=object_id,
        )
    spec = _uploads().initiate(object_id, size, md5 or row.file_md5sum, overwrite)
    return jsonify(_with_urls(spec))


@bp.get("/upload/<object_id>/status")
@doc(
    "UploadProgress: the upload in progress, completed parts with sourceMd5",
    scope="study",
    ok=OBJECT,
)
def status(object_id: str) -> Response:
    _may_write(object_id)
    spec = _uploads().progress(object_id, _required_int("fileSize"))
    body = _with_urls(spec)
    return jsonify({"objectId": spec.object_id, "uploadId": spec.upload_id, "parts": body["parts"]})


@bp.get("/upload/<object_id>/parts")
@doc("The upload in progress with fresh part URLs (resume)", scope="study", ok=OBJECT)
def parts(object_id: str) -> Response:
    _may_write(object_id)
    uploads = _uploads()
    current = uploads.current(object_id)
    return jsonify(_with_urls(uploads.progress(object_id, current.object_size)))


@bp.post("/upload/<object_id>/parts")
@doc("Record a part the store holds with that ETag", scope="study")
def finalize_part(object_id: str) -> Response:
    _may_write(object_id)
    _uploads().finalize_part(
        object_id,
        _required("uploadId"),
        _required_int("partNumber"),
        _required("md5"),
        _required("etag"),
    )
    return _ok()


@bp.delete("/upload/<object_id>/parts")
@doc("Forget a part's record (not its bytes)", scope="study")
def delete_part(object_id: str) -> Response:
    _may_write(object_id)
    _uploads().delete_part(object_id, _required("uploadId"), _required_int("partNumber"))
    return _ok()


@bp.post("/upload/<object_id>")
@doc("Finalize: parts, sizes and md5s checked, the .meta written last", scope="study")
def finalize(object_id: str) -> Response:
    _writable(object_id)
    _uploads().finalize(object_id, _required("uploadId"))
    return _ok()


@bp.post("/upload/<object_id>/recovery")
@doc("200 when the upload in progress is for a file of this size", scope="study")
def recovery(object_id: str) -> Response:
    _may_write(object_id)
    _uploads().recover(object_id, _required_int("fileSize"))
    return _ok()


@bp.delete("/upload/<object_id>")
@doc("Cancel the upload in progress", scope="study")
def cancel(object_id: str) -> Response:
    _may_write(object_id)
    _uploads().cancel(object_id)
    return _ok()


@bp.post("/upload/cancel")
@doc("Cancel every upload in progress", scope="system")
def cancel_all() -> Response:
    require_score(None, "WRITE")
    _uploads().cancel_all()
    return _ok()


@bp.get("/profile")
@doc(
    "The storage profile score-client picks its services by",
    responses={200: answer(STRING, "s3", "text/plain")},
)
def profile() -> Response:
    return Response("s3", mimetype="text/plain")


@bp.get("/listing")
@doc("Every stored blob: id, lastModified, size", ok=array(OBJECT))
def listing() -> Response:
    if auth.authenticator().enabled and auth.current_caller() is None:
        raise auth.UnauthorizedToken("The listing needs 'Authorization: Bearer <token>'")
    store = current_catalog().store
    found = store.inventory()
    return jsonify(
        [
            {"id": oid, "lastModified": store.last_modified(oid), "size": entry.blob_size}
            for oid, entry in sorted(found.items())
            if entry.blob_size is not None
        ]
    )


@bp.put("/objects/upload/<object_id>")
@doc("A part's bytes, behind the signed URL initiate handed out (local store)")
def put_part(object_id: str) -> Response:
    """The local store's part PUT, behind the signed URL initiate handed out."""
    check_object_id(object_id)
    upload_id = _required("uploadId")
    number = _required_int("partNumber")
    signing.check_signed(_part_grant(object_id, upload_id, number))
    uploads = _uploads()
    if not isinstance(uploads, LocalUploads):
        raise MalformedParameter("Parts of this store go to its own URLs", name="partNumber")
    request.max_content_length = 1 << 40  # a part is no payload: it streams to disk
    digest = uploads.write_part(
        object_id, upload_id, number, request.stream, request.content_length
    )
    return Response(status=200, headers={"ETag": f'"{digest}"'})
