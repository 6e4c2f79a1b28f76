"""Payload validation in Song's order, and the rows a valid payload turns into.

Song's submit order (song-api.md §1.2 #2), first failure wins: study exists → JSON parses →
``analysisType`` present → its ``name`` present → enforceLatest → per-type ``fileTypes`` → JSON
Schema (every problem at once) → payload ``studyId`` matches → duplicate md5 → entity matching
(§3.8: strict reuse of existing donors, specimens and samples).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import BadRequest, Conflict, Internal, NotFound, SchemaViolation, problem
from ..model import (
    DONOR_FIELDS,
    FILE_FIELDS,
    SAMPLE_FIELDS,
    SPECIMEN_FIELDS,
    dumps,
    dynamic_data,
    entity_id,
    object_id,
    split_entity,
)
from ..read.readmodel import ReadModel
from .registry import CompiledType, Registry


def resolve_type(
    payload: dict[str, Any], registry: Registry, *, enforce_latest: bool
) -> CompiledType:
    """Steps 3-4: the analysisType object, its name, and the version rule."""
    atype = payload.get("analysisType")
    if atype is None:
        raise BadRequest(
            "The analysisType field cannot be null",
            error_id="malformed.parameter",
            problems=[
                problem("/analysisType", "required", "The analysisType field cannot be null")
            ],
        )
    if not isinstance(atype, dict) or not isinstance(atype.get("name"), str):
        raise BadRequest(
            "The analysisType name field cannot be null",
            error_id="malformed.parameter",
            problems=[
                problem(
                    "/analysisType/name", "required", "The analysisType name field cannot be null"
                )
            ],
        )
    name = atype["name"]
    version = atype.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise BadRequest(
            f"The analysisType version '{version}' must be an integer",
            error_id="malformed.parameter",
            problems=[
                problem("/analysisType/version", "type", "version must be an integer or null")
            ],
        )
    latest = registry.latest_version(name)
    if latest is None:
        registry.get(name)  # raises analysis.type.not.found
    if enforce_latest and version is not None and version != latest:
        raise Conflict(
            f"Must use the latest version '{latest}' while enforceLatest=true, but using version "
            f"'{version}' of analysisType '{name}' instead",
            error_id="analysis.type.incorrect.version",
            analysis_type=name,
        )
    return registry.compiled(name, version)


def schema_problems(payload: dict[str, Any], compiled: CompiledType) -> list[dict[str, Any]]:
    """Steps 5-6: allowed fileTypes, the rendered JSON Schema, and our file-name safety rule."""
    found: list[dict[str, Any]] = []
    label = compiled.type.label
    allowed = compiled.type.file_types
    files = payload.get("files")
    if isinstance(files, list):
        for i, f in enumerate(files):
            if not isinstance(f, dict):
                continue
            if allowed and isinstance(f.get("fileType"), str) and f["fileType"] not in allowed:
                found.append(
                    problem(
                        f"/files/{i}/fileType",
                        "fileTypes",
                        f"{f.get('fileName')} name is not supported, supported formats are "
                        f"{', '.join(allowed)}",
                        label,
                    )
                )
            if f.get("fileName") in (".", ".."):
                found.append(
                    problem(
                        f"/files/{i}/fileName",
                        "fileName",
                        "a fileName cannot be '.' or '..'",
                        label,
                    )
                )
            size = f.get("fileSize")
            # the files table stores a 64-bit size (Song's Java Long): a larger one would fail
            # the whole batch's commit
            if isinstance(size, int) and not -(2**63) <= size < 2**63:
                found.append(
                    problem(
                        f"/files/{i}/fileSize",
                        "maximum",
                        f"{size} does not fit in a 64-bit integer",
                        label,
                    )
                )
    found.extend(compiled.problems(payload))
    return found


def schema_violation(found: list[dict[str, Any]]) -> SchemaViolation:
    def where(p: dict[str, Any]) -> str:
        # Song words a missing key at its parent: "#/samples/0: required key [x] not found"
        ptr = p["pointer"].rsplit("/", 1)[0] if p["rule"] == "required" else p["pointer"]
        return f"#{ptr}"

    text = ",".join(f"{where(p)}: {p['message']}" for p in found)
    return SchemaViolation(text, problems=found)


@dataclass
class Plan:
    """The rows one accepted payload adds, keyed by table."""

    analysis_id: str
    study_id: str
    type_name: str
    type_version: int
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class Planner:
    """Validates the payloads of a batch and plans their rows; later payloads see earlier ones."""

    def __init__(
        self, model: ReadModel, registry: Registry, *, enforce_latest: bool = True
    ) -> None:
        self.model = model
        self.registry = registry
        self.enforce_latest = enforce_latest
        # entities and md5s created by earlier payloads of this batch
        self.new_donors: dict[str, tuple] = {}
        self.new_specimens: dict[str, tuple] = {}
        self.new_samples: dict[str, tuple] = {}
        self.batch_md5s: set[str] = set()

    def plan(
        self,
        payload: dict[str, Any],
        study_id: str,
        analysis_id: str,
        *,
        allow_duplicates: bool = False,
        created_at: datetime,
        actor: str | None = None,
        source_paths: dict[str, str] | None = None,
    ) -> Plan:
        if study_id not in self.model.studies:
            raise NotFound(
                f"The studyId '{study_id}' does not exist",
                error_id="study.id.does.not.exist",
                study_id=study_id,
            )
        compiled = resolve_type(payload, self.registry, enforce_latest=self.enforce_latest)
        found = schema_problems(payload, compiled)
        if found:
            raise schema_violation(found)
        payload_study = payload.get("studyId")
        if not payload_study:
            raise BadRequest("The studyId in the payload is missing", error_id="study.id.missing")
        if payload_study != study_id:
            raise Conflict(
                f"The studyId '{payload_study}' in the payload does not match the studyId "
                f"'{study_id}' of the request",
                error_id="study.id.mismatch",
                study_id=study_id,
            )
        files = _unique_files(payload["files"])
        if not allow_duplicates:
            dupes = sorted(
                {
                    f["fileMd5sum"]
                    for f in files
                    if self.model.md5s.get(f["fileMd5sum"]) or f["fileMd5sum"] in self.batch_md5s
                }
            )
            if dupes:
                raise Conflict(
                    "File already exist",
                    error_id="info.already.exists",
                    study_id=study_id,
                    md5s=dupes,
                    problems=[
                        problem(
                            f"/files/{i}/fileMd5sum",
                            "duplicateMd5",
                            f"a file with md5 {f['fileMd5sum']} is already registered",
                            compiled.type.label,
                        )
                        for i, f in enumerate(files)
                        if f["fileMd5sum"] in dupes
                    ],
                )
        plan = Plan(analysis_id, study_id, compiled.type.name, compiled.type.version)
        donors: dict[str, tuple] = {}
        specimens: dict[str, tuple] = {}
        samples: dict[str, tuple] = {}
        sample_ids: list[str] = []
        for sample in payload["samples"]:
            sid = self._match_sample(study_id, sample, donors, specimens, samples)
            if sid not in sample_ids:
                sample_ids.append(sid)
        base = {"study_id": study_id, "analysis_id": analysis_id, "created_at": created_at}
        plan.rows["donors"] = [
            {"donor_id": d[0], "submitter_donor_id": d[2], "gender": d[3], "info": d[4], **base}
            for d in donors.values()
        ]
        plan.rows["specimens"] = [
            {
                "specimen_id": s[0],
                "donor_id": s[1],
                "submitter_specimen_id": s[3],
                "tumour_normal_designation": s[4],
                "specimen_tissue_source": s[5],
                "specimen_type": s[6],
                "info": s[7],
                **base,
            }
            for s in specimens.values()
        ]
        plan.rows["samples"] = [
            {
                "sample_id": s[0],
                "specimen_id": s[1],
                "submitter_sample_id": s[3],
                "sample_type": s[4],
                "matched_normal_submitter_sample_id": s[5],
                "info": s[6],
                **base,
            }
            for s in samples.values()
        ]
        plan.rows["analysis_samples"] = [
            {
                "analysis_id": analysis_id,
                "sample_id": sid,
                "study_id": study_id,
                "created_at": created_at,
            }
            for sid in sample_ids
        ]
        file_rows = []
        for f in files:
            cols, info = split_entity(f, "file", FILE_FIELDS)
            # JSON Schema counts 52.0 as an integer; store 52, as a re-read of the table would
            cols["file_size"] = int(cols["file_size"])
            file_rows.append(
                {
                    "object_id": object_id(analysis_id, cols["file_name"]),
                    "version": 1,
                    **cols,
                    "info": dumps(info) if info else None,
                    "source_path": (source_paths or {}).get(cols["file_name"]),
                    **base,
                }
            )
        plan.rows["files"] = file_rows
        plan.rows["analyses"] = [
            {
                "analysis_id": analysis_id,
                "study_id": study_id,
                "version": 1,
                "analysis_type_name": compiled.type.name,
                "analysis_type_version": compiled.type.version,
                "data": dumps(dynamic_data(payload)),
                "created_at": created_at,
                "actor": actor,
                "reason": "submit",
            }
        ]
        # the payload is accepted: make its entities and md5s visible to the rest of the batch
        self.new_donors.update(donors)
        self.new_specimens.update(specimens)
        self.new_samples.update(samples)
        self.batch_md5s.update(f["fileMd5sum"] for f in files)
        return plan

    # -- entity matching (song-api.md §3.8) ----------------------------------------------------

    def _find(self, kind: str, key: str, local: dict[str, tuple]) -> tuple | None:
        if key in local:
            return local[key]
        batch = {
            "donor": self.new_donors,
            "specimen": self.new_specimens,
            "sample": self.new_samples,
        }[kind]
        if key in batch:
            return batch[key]
        return {
            "donor": self.model.donors,
            "specimen": self.model.specimens,
            "sample": self.model.samples,
        }[kind].get(key)

    def _match_sample(
        self, study_id: str, sample: dict[str, Any], donors: dict, specimens: dict, samples: dict
    ) -> str:
        d_cols, d_info = split_entity(sample["donor"], "donor", DONOR_FIELDS)
        p_cols, p_info = split_entity(sample["specimen"], "specimen", SPECIMEN_FIELDS)
        s_cols, s_info = split_entity(sample, "sample", SAMPLE_FIELDS)
        donor_id = entity_id(study_id, d_cols["submitter_donor_id"])
        specimen_id = entity_id(study_id, p_cols["submitter_specimen_id"])
        sample_id = entity_id(study_id, s_cols["submitter_sample_id"])
        for kind, given, computed in (
            ("donor", sample["donor"].get("donorId"), donor_id),
            ("specimen", sample["specimen"].get("specimenId"), specimen_id),
            ("sample", sample.get("sampleId"), sample_id),
        ):
            if given is not None and given != computed:
                raise Internal(
                    f"The {kind}Id '{given}' in the payload is not the id Song computes for it "
                    f"('{computed}')",
                    error_id=f"{kind}.id.is.corrupted",
                    study_id=study_id,
                )
        donor = (
            donor_id,
            study_id,
            d_cols["submitter_donor_id"],
            d_cols["gender"],
            dumps(d_info) if d_info else None,
        )
        specimen = (
            specimen_id,
            donor_id,
            study_id,
            p_cols["submitter_specimen_id"],
            p_cols["tumour_normal_designation"],
            p_cols["specimen_tissue_source"],
            p_cols["specimen_type"],
            dumps(p_info) if p_info else None,
        )
        new_sample = (
            sample_id,
            specimen_id,
            study_id,
            s_cols["submitter_sample_id"],
            s_cols["sample_type"],
            s_cols["matched_normal_submitter_sample_id"],
            dumps(s_info) if s_info else None,
        )

        existing_specimen = self._find("specimen", specimen_id, specimens)
        if existing_specimen is not None:
            owner = self._find("donor", existing_specimen[1], donors)
            if owner is not None and owner[2] != donor[2]:
                raise Conflict(
                    f"The existing specimen with submitterSpecimenId '{specimen[3]}' belongs to "
                    f"the donor with submitterDonorId '{owner[2]}', not '{donor[2]}'",
                    error_id="specimen.to.donor.id.mismatch",
                    study_id=study_id,
                )
        self._check_or_add("donor", donor, donors, 1, "Donor", "submitterDonorId")
        if existing_specimen is None:
            specimens[specimen_id] = specimen
        else:
            self._check_or_add(
                "specimen", specimen, specimens, 1, "Specimen", "submitterSpecimenId"
            )
        existing_sample = self._find("sample", sample_id, samples)
        if existing_sample is not None:
            parent = self._find("specimen", existing_sample[1], specimens)
            if parent is not None and parent[3] != specimen[3]:
                raise Conflict(
                    f"The existing sample with submitterSampleId '{new_sample[3]}' belongs to the "
                    f"specimen with submitterSpecimenId '{parent[3]}', not '{specimen[3]}'",
                    error_id="sample.to.specimen.id.mismatch",
                    study_id=study_id,
                )
        self._check_or_add("sample", new_sample, samples, 1, "Sample", "submitterSampleId")
        return sample_id

    def _check_or_add(
        self,
        kind: str,
        entity: tuple,
        local: dict[str, tuple],
        _start: int,
        label: str,
        id_name: str,
    ) -> None:
        existing = self._find(kind, entity[0], local)
        if existing is None:
            local[entity[0]] = entity
            return
        if tuple(existing) != entity:
            submitter = entity[3] if kind != "donor" else entity[2]
            raise Conflict(
                f"Input {label} data does not match the existing {label} data for {id_name} "
                f"'{submitter}'. Ensure the data matches.",
                error_id=f"mismatching.{kind}.data",
                problems=[
                    problem(
                        "",
                        f"mismatching.{kind}.data",
                        f"{label} '{submitter}' differs from the registered one",
                    )
                ],
            )


def _unique_files(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Song collapses files with the same fileName within one payload to one file."""
    seen: dict[str, dict[str, Any]] = {}
    for f in files:
        seen.setdefault(f["fileName"], f)
    return list(seen.values())
