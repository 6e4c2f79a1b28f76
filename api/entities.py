"""Single entities of a study: donors, specimens, samples and files by id (GET), file updates
(PUT) and deletes (DELETE of a comma-joined id list; Song answers the plain string ``OK``).

Deleting a donor, specimen or sample that an analysis uses is refused (Song's foreign keys refuse
it too); files can be deleted while their analysis is UNPUBLISHED, keeping at least one.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .auth import actor, require_write
from .docs import TEXT_OK, doc, ref, request_body
from .params import current_catalog, id_list, json_body

bp = Blueprint("entities", __name__)

_PLURAL = {"donor": "donors", "specimen": "specimens", "sample": "samples"}


def _get(kind: str, study_id: str, entity_id: str) -> Response:
    return jsonify(current_catalog().get_entity(kind, study_id, entity_id))


def _delete(kind: str, study_id: str, ids: str) -> Response:
    require_write(study_id)
    current_catalog().delete_entities(kind, study_id, id_list(ids), actor=actor())
    return Response("OK", mimetype="text/plain")


@bp.get("/studies/<study_id>/donors/<donor_id>")
@doc("A donor", ok=ref("Donor"))
def get_donor(study_id: str, donor_id: str) -> Response:
    return _get("donor", study_id, donor_id)


@bp.delete("/studies/<study_id>/donors/<ids>")
@doc(
    "Delete donors: refused (donor.repository.delete.record) while in use",
    scope="study",
    responses={200: TEXT_OK},
)
def delete_donors(study_id: str, ids: str) -> Response:
    return _delete("donor", study_id, ids)


@bp.get("/studies/<study_id>/specimens/<specimen_id>")
@doc("A specimen", ok=ref("Specimen"))
def get_specimen(study_id: str, specimen_id: str) -> Response:
    return _get("specimen", study_id, specimen_id)


@bp.delete("/studies/<study_id>/specimens/<ids>")
@doc("Delete specimens: refused while analyses use them", scope="study", responses={200: TEXT_OK})
def delete_specimens(study_id: str, ids: str) -> Response:
    return _delete("specimen", study_id, ids)


@bp.get("/studies/<study_id>/samples/<sample_id>")
@doc("A sample", ok=ref("Sample"))
def get_sample(study_id: str, sample_id: str) -> Response:
    return _get("sample", study_id, sample_id)


@bp.delete("/studies/<study_id>/samples/<ids>")
@doc("Delete samples: refused while analyses use them", scope="study", responses={200: TEXT_OK})
def delete_samples(study_id: str, ids: str) -> Response:
    return _delete("sample", study_id, ids)


@bp.get("/studies/<study_id>/files/<object_id>")
@doc("A file", tag="files", ok=ref("File"))
def get_file(study_id: str, object_id: str) -> Response:
    return _get("file", study_id, object_id)


@bp.put("/studies/<study_id>/files/<object_id>")
@doc(
    "Update a file: size/md5 while UNPUBLISHED; access, dataType, info (merged)",
    tag="files",
    scope="study",
    body=request_body(ref("FileUpdateRequest")),
    ok=ref("FileUpdateResponse"),
)
def update_file(study_id: str, object_id: str) -> Response:
    """Song's file update: size / md5 (UNPUBLISHED only), access, dataType, info (merged)."""
    require_write(study_id)
    return jsonify(current_catalog().update_file(study_id, object_id, json_body(), actor=actor()))


@bp.delete("/studies/<study_id>/files/<ids>")
@doc(
    "Delete files of UNPUBLISHED analyses (each keeps at least one file)",
    tag="files",
    scope="study",
    responses={200: TEXT_OK},
)
def delete_files(study_id: str, ids: str) -> Response:
    return _delete("file", study_id, ids)
