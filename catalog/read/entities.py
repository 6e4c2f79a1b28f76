"""Single entities as Song serves them: donors, specimens, samples and files by id, the study tree,
Score's legacy file entities, and the rules of file updates and deletes (song-api.md §1.2 #17-26,
§6.3).

Files are append-only like everything else: an update appends the file's next version; a delete
appends a *tombstone* (the next version with no ``file_name``), so every earlier state stays
queryable. Donors, specimens and samples are only ever created by the analyses that use them, so
deleting one that an analysis references is refused, as Song's foreign keys refuse it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import (
    DonorNotFound,
    EntityInUse,
    FileNotFound,
    NotFound,
    NotRelatedToStudy,
    SampleNotFound,
    SpecimenNotFound,
)
from .readmodel import ReadModel
from .records import EntityRow, FileRow
from .search import Filters

#: kind -> (read-model dict name, Song's not-found error, label in messages)
KINDS: dict[str, tuple[str, type[NotFound], str]] = {
    "donor": ("donors", DonorNotFound, "donorId"),
    "specimen": ("specimens", SpecimenNotFound, "specimenId"),
    "sample": ("samples", SampleNotFound, "sampleId"),
    "file": ("files", FileNotFound, "objectId"),
}


def entity_row(model: ReadModel, kind: str, study_id: str, entity_id: str) -> EntityRow:
    """An entity's row, checked to exist and to belong to the study (Song's order)."""
    table, not_found, label = KINDS[kind]
    model.check_study(study_id)
    row = getattr(model, table).get(entity_id)
    if row is None:
        if kind == "file":
            text = f"The File with objectId '{entity_id}' does not exist"
        else:
            text = f"The {label} '{entity_id}' does not exist"
        raise not_found(text, study_id=study_id)
    if row.study_id != study_id:
        raise NotRelatedToStudy(
            f"The {kind} '{entity_id}' is not related to the study '{study_id}'",
            study_id=study_id,
        )
    return row


def entity_json(model: ReadModel, kind: str, row: EntityRow) -> dict[str, Any]:
    as_json: dict[str, Callable[[Any], dict[str, Any]]] = {
        "donor": model.donor_json,
        "specimen": model.specimen_json,
        "sample": model.sample_json,
        "file": model.file_json,
    }
    return as_json[kind](row)


def file_row(model: ReadModel, study_id: str, object_id: str) -> FileRow:
    """A file's row, checked as ``entity_row`` checks it."""
    row = entity_row(model, "file", study_id, object_id)
    assert isinstance(row, FileRow)
    return row


def study_tree(model: ReadModel, study: dict[str, Any]) -> dict[str, Any]:
    """Song's GET /studies/{s}/all: the study with its donors -> specimens -> samples."""
    sid = study["studyId"]
    with model.lock:
        samples_of: dict[str, list[dict[str, Any]]] = {}
        for sample in model.samples.values():
            if sample.study_id == sid:
                samples_of.setdefault(sample.specimen_id, []).append(model.sample_json(sample))
        specimens_of: dict[str, list[dict[str, Any]]] = {}
        for specimen in model.specimens.values():
            if specimen.study_id == sid:
                doc = model.specimen_json(specimen)
                doc["samples"] = samples_of.get(specimen.specimen_id, [])
                specimens_of.setdefault(specimen.donor_id, []).append(doc)
        donors = []
        for donor in model.donors.values():
            if donor.study_id == sid:
                doc = model.donor_json(donor)
                doc["specimens"] = specimens_of.get(donor.donor_id, [])
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


def refuse_delete(kind: str, entity_id: str, analyses: list[str]) -> EntityInUse:
    shown = ", ".join(analyses[:10])
    if len(analyses) > 10:
        shown += f" and {len(analyses) - 10} more"
    return EntityInUse(
        f"The {kind} '{entity_id}' cannot be deleted: analyses {shown} use it. Analyses are never "
        "deleted; suppress them to withdraw their data",
        kind=kind,
        analysis_ids=analyses,
    )


# -- legacy entities (Score) ------------------------------------------------------------------


def legacy_entity(f: FileRow) -> dict[str, Any]:
    """Score's view of a file: ``{id, gnosId, fileName, projectCode, access}``."""
    return {
        "id": f.object_id,
        "gnosId": f.analysis_id,
        "fileName": f.file_name,
        "projectCode": f.study_id,
        "access": f.file_access,
    }


def legacy_page(
    model: ReadModel,
    index: Any,
    filters: dict[str, str],
    *,
    page: int,
    size: int,
) -> tuple[list[dict[str, Any]], int]:
    """Score's ``/entities`` listing: exact-match filters, sorted by id; (page items, total)."""

    def keep(f: FileRow) -> bool:
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
                (model.files[o] for o in candidates if o in model.files), key=lambda f: f.object_id
            )
            rows = [f for f in rows if keep(f)]
            return [legacy_entity(f) for f in rows[page * size : (page + 1) * size]], len(rows)
        if "fileName" in filters:
            rows = sorted((f for f in model.files.values() if keep(f)), key=lambda f: f.object_id)
            return [legacy_entity(f) for f in rows[page * size : (page + 1) * size]], len(rows)
    search = Filters(
        study_ids=(filters["projectCode"],) if "projectCode" in filters else (),
        file_access=(filters["access"],) if "access" in filters else (),
    )
    found = index.files(search, limit=size, offset=page * size)
    with model.lock:
        items = [legacy_entity(model.files[o]) for o in found.ids if o in model.files]
    return items, found.total
