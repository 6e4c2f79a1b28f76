"""Single entities as Song serves them: donors, specimens, samples and files by id, the study tree,
Score's legacy file entities, and the rules of file updates and deletes (song-api.md §1.2 #17-26,
§6.3).

Files are append-only like everything else: an update appends the file's next version; a delete
appends a *tombstone* (the next version with no ``file_name``), so every earlier state stays
queryable. Donors, specimens and samples are only ever created by the analyses that use them, so
deleting one that an analysis references is refused, as Song's foreign keys refuse it.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadRequest, NotFound, SonglakeError
from .readmodel import ReadModel
from .search import Filters

#: kind -> (read-model dict name, Song's not-found error id, label in messages, id field)
KINDS: dict[str, tuple[str, str, str, str]] = {
    "donor": ("donors", "donor.does.not.exist", "donorId", "donorId"),
    "specimen": ("specimens", "specimen.does.not.exist", "specimenId", "specimenId"),
    "sample": ("samples", "sample.does.not.exist", "sampleId", "sampleId"),
    "file": ("files", "file.not.found", "objectId", "objectId"),
}


def study_of_entity(kind: str, row: tuple) -> str:
    """The study an entity tuple belongs to (positions as in readmodel's row tuples)."""
    return row[1] if kind == "donor" else row[2]


def check_study(model: ReadModel, study_id: str) -> None:
    if study_id not in model.studies:
        raise NotFound(
            f"The studyId '{study_id}' does not exist",
            error_id="study.id.does.not.exist",
            study_id=study_id,
        )


def entity_row(model: ReadModel, kind: str, study_id: str, entity_id: str) -> tuple:
    """An entity's row tuple, checked to exist and to belong to the study (Song's order)."""
    table, missing_id, label, _ = KINDS[kind]
    check_study(model, study_id)
    row = getattr(model, table).get(entity_id)
    if row is None:
        if kind == "file":
            text = f"The File with objectId '{entity_id}' does not exist"
        else:
            text = f"The {label} '{entity_id}' does not exist"
        raise NotFound(text, error_id=missing_id, study_id=study_id)
    if study_of_entity(kind, row) != study_id:
        raise BadRequest(
            f"The {kind} '{entity_id}' is not related to the study '{study_id}'",
            error_id="entity.not.related.to.study",
            study_id=study_id,
        )
    return row


def entity_json(model: ReadModel, kind: str, row: tuple) -> dict[str, Any]:
    return {
        "donor": model.donor_json,
        "specimen": model.specimen_json,
        "sample": model.sample_json,
        "file": model.file_json,
    }[kind](row)


def study_tree(model: ReadModel, study: dict[str, Any]) -> dict[str, Any]:
    """Song's GET /studies/{s}/all: the study with its donors -> specimens -> samples."""
    sid = study["studyId"]
    with model.lock:
        samples_of: dict[str, list[dict[str, Any]]] = {}
        for row in model.samples.values():
            if row[2] == sid:
                samples_of.setdefault(row[1], []).append(model.sample_json(row))
        specimens_of: dict[str, list[dict[str, Any]]] = {}
        for row in model.specimens.values():
            if row[2] == sid:
                doc = model.specimen_json(row)
                doc["samples"] = samples_of.get(row[0], [])
                specimens_of.setdefault(row[1], []).append(doc)
        donors = []
        for row in model.donors.values():
            if row[1] == sid:
                doc = model.donor_json(row)
                doc["specimens"] = specimens_of.get(row[0], [])
                donors.append(doc)
    donors.sort(key=lambda d: d["donorId"])
    return {**study, "donors": donors}


def referencing_analyses(model: ReadModel, kind: str, entity_id: str) -> list[str]:
    """Analyses that use a donor, specimen or sample (through their samples)."""
    with model.lock:
        if kind == "sample":
            samples = {entity_id}
        elif kind == "specimen":
            samples = set(model.specimen_samples.get(entity_id, ()))
        else:
            samples = {
                s
                for p in model.donor_specimens.get(entity_id, ())
                for s in model.specimen_samples.get(p, ())
            }
        return sorted({a for s in samples for a in model.sample_analyses.get(s, ())})


def refuse_delete(kind: str, entity_id: str, analyses: list[str]) -> SonglakeError:
    shown = ", ".join(analyses[:10])
    if len(analyses) > 10:
        shown += f" and {len(analyses) - 10} more"
    return SonglakeError(
        f"The {kind} '{entity_id}' cannot be deleted: analyses {shown} use it. Analyses are never "
        "deleted; suppress them to withdraw their data",
        error_id=f"{kind}.repository.delete.record",
        analysis_ids=analyses,
    )


# -- legacy entities (Score) ------------------------------------------------------------------


def legacy_entity(f: tuple) -> dict[str, Any]:
    """Score's view of a file: ``{id, gnosId, fileName, projectCode, access}``."""
    return {"id": f[0], "gnosId": f[1], "fileName": f[4], "projectCode": f[2], "access": f[8]}


def legacy_page(
    model: ReadModel,
    index: Any,
    filters: dict[str, str],
    *,
    page: int,
    size: int,
) -> tuple[list[dict[str, Any]], int]:
    """Score's ``/entities`` listing: exact-match filters, sorted by id; (page items, total)."""
    def keep(f: tuple) -> bool:
        entity = legacy_entity(f)
        return all(entity[k] == v for k, v in filters.items())

    with model.lock:
        if "id" in filters or "gnosId" in filters:
            if "id" in filters:
                candidates = [filters["id"]]
            else:
                rec = model.analyses.get(filters["gnosId"])
                candidates = list(rec.object_ids) if rec is not None else []
            rows = sorted(
                (model.files[o] for o in candidates if o in model.files), key=lambda f: f[0]
            )
            rows = [f for f in rows if keep(f)]
            return [legacy_entity(f) for f in rows[page * size : (page + 1) * size]], len(rows)
        if "fileName" in filters:
            rows = sorted((f for f in model.files.values() if keep(f)), key=lambda f: f[0])
            return [legacy_entity(f) for f in rows[page * size : (page + 1) * size]], len(rows)
    search = Filters(
        study_ids=(filters["projectCode"],) if "projectCode" in filters else (),
        file_access=(filters["access"],) if "access" in filters else (),
    )
    found = index.files(search, limit=size, offset=page * size)
    with model.lock:
        items = [legacy_entity(model.files[o]) for o in found.ids if o in model.files]
    return items, found.total
