"""Song's id search (``/studies/{s}/analysis/search/id``): each parameter a case-insensitive,
unanchored regular expression; all must match the same (analysis x sample x file) row."""

from __future__ import annotations

from .readmodel import ReadModel

#: Song's IdSearchRequest parameters, declared once (the API parses and documents these)
ID_SEARCH_PARAMS = (
    "donorId",
    "sampleId",
    "specimenId",
    "fileId",
    "submitterSampleId",
    "submitterSpecimenId",
    "submitterDonorId",
)

# parameter -> (model table, column); fileId is matched against the analyses found
_ENTITY_COLUMNS = {
    "sampleId": ("samples", "sample_id"),
    "submitterSampleId": ("samples", "submitter_sample_id"),
    "specimenId": ("specimens", "specimen_id"),
    "submitterSpecimenId": ("specimens", "submitter_specimen_id"),
    "donorId": ("donors", "donor_id"),
    "submitterDonorId": ("donors", "submitter_donor_id"),
}


def search_ids(model: ReadModel, study_id: str, params: dict[str, str | None]) -> list[str]:
    """Matching analysis ids of the study, sorted (the study is checked by the caller)."""
    found: dict[str, list[set[str]]] = {"samples": [], "specimens": [], "donors": []}
    for name, (table, column) in _ENTITY_COLUMNS.items():
        pattern = params.get(name)
        if pattern:
            found[table].append(model.regex_ids(table, column, pattern, study_id))
    sample_sets, specimen_sets, donor_sets = found["samples"], found["specimens"], found["donors"]
    with model.lock:
        if donor_sets:
            donors = set.intersection(*donor_sets)
            specimen_sets.append(model.donor_specimens.of_all(donors))
        if specimen_sets:
            specimens = set.intersection(*specimen_sets)
            sample_sets.append(model.specimen_samples.of_all(specimens))
        if sample_sets:
            samples = set.intersection(*sample_sets)
            analyses = model.sample_analyses.of_all(samples)
        else:
            analyses = set(model.by_study.get(study_id, ()))
        if params.get("fileId"):
            files = model.regex_ids("files", "object_id", params["fileId"] or "", study_id)
            analyses &= {f.analysis_id for f in model.rows_by_ids("files", files).values()}
        return model.of_study(analyses, study_id)
