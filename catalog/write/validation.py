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

from ..errors import (
    Conflict,
    CorruptedId,
    IncorrectTypeVersion,
    MalformedParameter,
    MismatchingDonorData,
    MismatchingSampleData,
    MismatchingSpecimenData,
    SampleToSpecimenMismatch,
    SchemaViolation,
    SonglakeError,
    SpecimenToDonorMismatch,
    StudyIdMismatch,
    StudyIdMissing,
    problem,
)
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
from ..read.records import DonorRow, SampleRow, SpecimenRow
from .registry import CompiledType, Registry


def resolve_type(
    payload: dict[str, Any], registry: Registry, *, enforce_latest: bool
) -> CompiledType:
    """Steps 3-4: the analysisType object, its name, and the version rule."""
    atype = payload.get("analysisType")
    if atype is None:
        raise MalformedParameter(
            "The analysisType field cannot be null",
            name="analysisType",
            problems=[
                problem("/analysisType", "required", "The analysisType field cannot be null")
            ],
        )
    if not isinstance(atype, dict) or not isinstance(atype.get("name"), str):
        raise MalformedParameter(
            "The analysisType name field cannot be null",
            name="analysisType.name",
            problems=[
                problem(
                    "/analysisType/name", "required", "The analysisType name field cannot be null"
                )
            ],
        )
    name = atype["name"]
    version = atype.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise MalformedParameter(
            f"The analysisType version '{version}' must be an integer",
            name="analysisType.version",
            value=version,
            problems=[
                problem("/analysisType/version", "type", "version must be an integer or null")
            ],
        )
    latest = registry.latest_version(name)
    if latest is None:
        registry.get(name)  # raises analysis.type.not.found
    if enforce_latest and version is not None and version != latest:
        raise IncorrectTypeVersion(name=name, latest=latest, version=version)
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
            found.extend(_size_problems(f.get("fileSize"), f"/files/{i}/fileSize", label))
        found.extend(_duplicate_names(files, label))
    found.extend(compiled.problems(payload))
    return found


def _size_problems(size: Any, pointer: str, label: str) -> list[dict[str, Any]]:
    """A fileSize no file can have: negative, or beyond the files table's 64-bit integer (Song's
    Java Long), which would fail the whole batch's commit."""
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        return []  # the schema reports the type
    if size < 0:
        return [
            problem(pointer, "minimum", f"{size} is negative: a file has 0 bytes or more", label)
        ]
    if size >= 2**63:
        return [problem(pointer, "maximum", f"{size} does not fit in a 64-bit integer", label)]
    return []


def _duplicate_names(files: list[Any], label: str) -> list[dict[str, Any]]:
    """Two files of one payload with the same fileName would share an objectId: refused (Song
    silently kept one of them)."""
    first: dict[str, int] = {}
    found = []
    for i, f in enumerate(files):
        name = f.get("fileName") if isinstance(f, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            found.append(
                problem(
                    f"/files/{i}/fileName",
                    "uniqueFileName",
                    f"the fileName '{name}' is also the fileName of /files/{first[name]}; the "
                    "files of an analysis need distinct names",
                    label,
                )
            )
        else:
            first[name] = i
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
    """Validates the payloads of a batch and plans their rows; later payloads see earlier ones.

    ``plan`` runs Song's steps in order, each a method below: the study, the analysis type and the
    JSON Schema, the payload's studyId, duplicate md5s, entity matching (song-api.md §3.8), and
    then the rows the accepted payload adds."""

    def __init__(
        self, model: ReadModel, registry: Registry, *, enforce_latest: bool = True
    ) -> None:
        self.model = model
        self.registry = registry
        self.enforce_latest = enforce_latest
        # entities and md5s created by earlier payloads of this batch
        self.new_donors: dict[str, DonorRow] = {}
        self.new_specimens: dict[str, SpecimenRow] = {}
        self.new_samples: dict[str, SampleRow] = {}
        self.batch_md5s: set[str] = set()
        # registered entities and md5s of the whole batch, read in a few queries (prefetch)
        self._looked_up: dict[str, set[str]] = {"donor": set(), "specimen": set(), "sample": set()}
        self._registered: dict[str, dict[str, Any]] = {"donor": {}, "specimen": {}, "sample": {}}
        self._md5s_looked_up: set[str] = set()
        self._md5s_registered: set[str] = set()

    def prefetch(self, payloads: list[tuple[dict[str, Any], str]]) -> None:
        """Read the registered donors, specimens, samples and md5s a batch names in a few
        queries rather than one per entity (the read model's file is on disk, not in a dict).
        A payload too malformed to name them is skipped here and refused by ``plan``."""
        wanted: dict[str, set[str]] = {"donor": set(), "specimen": set(), "sample": set()}
        md5s: set[str] = set()
        for payload, study_id in payloads:
            try:
                for sample in payload.get("samples") or ():
                    wanted["sample"].add(entity_id(study_id, sample["submitterSampleId"]))
                    wanted["specimen"].add(
                        entity_id(study_id, sample["specimen"]["submitterSpecimenId"])
                    )
                    wanted["donor"].add(entity_id(study_id, sample["donor"]["submitterDonorId"]))
                md5s.update(f["fileMd5sum"] for f in payload.get("files") or ())
            except (KeyError, TypeError, AttributeError):
                continue
        tables = {"donor": "donors", "specimen": "specimens", "sample": "samples"}
        for kind, ids in wanted.items():
            self._registered[kind] = self.model.rows_by_ids(tables[kind], ids)
            self._looked_up[kind] = ids
        self._md5s_registered = self.model.registered_md5s(md5s)
        self._md5s_looked_up = md5s

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
        checked: CompiledType | SonglakeError | None = None,
    ) -> Plan:
        """The rows of one payload, or Song's first error. ``checked`` is what ``precheck`` found
        before the writer lease was taken; it stands if the payload's type still resolves to the
        same (name, version), else the schema is checked again."""
        self.model.check_study(study_id)
        compiled = self._type_still(payload, checked)
        self._check_study_id(payload, study_id)
        files = _unique_files(payload["files"])
        if not allow_duplicates:
            self._check_duplicates(files, study_id, compiled.type.label)
        entities = _Entities()
        for sample in payload["samples"]:
            self._match_sample(study_id, sample, entities)
        plan = Plan(analysis_id, study_id, compiled.type.name, compiled.type.version)
        base = {"study_id": study_id, "analysis_id": analysis_id, "created_at": created_at}
        plan.rows = {
            **entities.rows(base),
            "files": _file_rows(files, analysis_id, base, source_paths or {}),
            "analyses": [
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
            ],
        }
        # the payload is accepted: make its entities and md5s visible to the rest of the batch
        self.new_donors.update(entities.donors)
        self.new_specimens.update(entities.specimens)
        self.new_samples.update(entities.samples)
        self.batch_md5s.update(f["fileMd5sum"] for f in files)
        return plan

    def precheck(self, payload: dict[str, Any]) -> CompiledType | SonglakeError:
        """Steps 3-6, which need no catalog state but the registry: done before the lease."""
        try:
            return self._valid_type(payload)
        except SonglakeError as exc:
            return exc

    def _type_still(
        self, payload: dict[str, Any], checked: CompiledType | SonglakeError | None
    ) -> CompiledType:
        if checked is None or isinstance(checked, SonglakeError):
            return self._valid_type(payload)  # raises the error found (or a newer one)
        current = resolve_type(payload, self.registry, enforce_latest=self.enforce_latest)
        if (current.type.name, current.type.version) != (checked.type.name, checked.type.version):
            return self._valid_type(payload)  # a type registered meanwhile: check it again
        return current

    # -- Song's steps, in order -----------------------------------------------------------------

    def _valid_type(self, payload: dict[str, Any]) -> CompiledType:
        """Steps 3-6: the analysis type (and enforceLatest), fileTypes, the JSON Schema."""
        compiled = resolve_type(payload, self.registry, enforce_latest=self.enforce_latest)
        found = schema_problems(payload, compiled)
        if found:
            raise schema_violation(found)
        return compiled

    def _check_study_id(self, payload: dict[str, Any], study_id: str) -> None:
        """Step 7: the payload names the study it is submitted to."""
        payload_study = payload.get("studyId")
        if not payload_study:
            raise StudyIdMissing()
        if payload_study != study_id:
            raise StudyIdMismatch(
                f"The studyId '{payload_study}' in the payload does not match the studyId "
                f"'{study_id}' of the request",
                study_id=study_id,
            )

    def _check_duplicates(self, files: list[dict[str, Any]], study_id: str, label: str) -> None:
        """Step 8: no file's md5 is registered already (nor earlier in this batch)."""
        dupes = sorted(
            {
                f["fileMd5sum"]
                for f in files
                if self._md5_registered(f["fileMd5sum"]) or f["fileMd5sum"] in self.batch_md5s
            }
        )
        if dupes:
            raise Conflict(
                "File already exist",
                study_id=study_id,
                md5s=dupes,
                problems=[
                    problem(
                        f"/files/{i}/fileMd5sum",
                        "duplicateMd5",
                        f"a file with md5 {f['fileMd5sum']} is already registered",
                        label,
                    )
                    for i, f in enumerate(files)
                    if f["fileMd5sum"] in dupes
                ],
            )

    def _md5_registered(self, md5: str) -> bool:
        if md5 in self._md5s_looked_up:
            return md5 in self._md5s_registered
        return bool(self.model.md5s.get(md5))

    # -- entity matching (song-api.md §3.8) ----------------------------------------------------

    def _find(self, kind: str, key: str, local: dict[str, Any]) -> Any:
        """The entity with this id: of this payload, of an earlier payload of the batch, or
        registered (None when new)."""
        if key in local:
            return local[key]
        batches: dict[str, dict[str, Any]] = {
            "donor": self.new_donors,
            "specimen": self.new_specimens,
            "sample": self.new_samples,
        }
        batch = batches[kind]
        if key in batch:
            return batch[key]
        if key in self._looked_up[kind]:
            return self._registered[kind].get(key)
        registered: dict[str, Any] = {  # the read model's donors, specimens, samples
            "donor": self.model.donors,
            "specimen": self.model.specimens,
            "sample": self.model.samples,
        }
        return registered[kind].get(key)

    def _match_sample(self, study_id: str, sample: dict[str, Any], found: _Entities) -> None:
        """Step 9 for one sample: its donor, specimen and sample are new, or equal to the
        registered ones, and hang together as registered."""
        donor, specimen, new_sample = _sample_entities(study_id, sample)
        existing_specimen = self._find("specimen", specimen.specimen_id, found.specimens)
        if existing_specimen is not None:
            owner = self._find("donor", existing_specimen.donor_id, found.donors)
            if owner is not None and owner.submitter_donor_id != donor.submitter_donor_id:
                raise SpecimenToDonorMismatch(
                    "The existing specimen with submitterSpecimenId "
                    f"'{specimen.submitter_specimen_id}' belongs to the donor with "
                    f"submitterDonorId '{owner.submitter_donor_id}', not "
                    f"'{donor.submitter_donor_id}'",
                    study_id=study_id,
                )
        self._check_or_add("donor", donor, found.donors)
        if existing_specimen is None:
            found.specimens[specimen.specimen_id] = specimen
        else:
            self._check_or_add("specimen", specimen, found.specimens)
        existing_sample = self._find("sample", new_sample.sample_id, found.samples)
        if existing_sample is not None:
            parent = self._find("specimen", existing_sample.specimen_id, found.specimens)
            if (
                parent is not None
                and parent.submitter_specimen_id != specimen.submitter_specimen_id
            ):
                raise SampleToSpecimenMismatch(
                    "The existing sample with submitterSampleId "
                    f"'{new_sample.submitter_sample_id}' belongs to the specimen with "
                    f"submitterSpecimenId '{parent.submitter_specimen_id}', not "
                    f"'{specimen.submitter_specimen_id}'",
                    study_id=study_id,
                )
        self._check_or_add("sample", new_sample, found.samples)
        if new_sample.sample_id not in found.sample_ids:
            found.sample_ids.append(new_sample.sample_id)

    def _check_or_add(self, kind: str, entity: Any, local: dict[str, Any]) -> None:
        """A new entity joins the payload's; a known one must be equal to it (mismatching.*)."""
        key = getattr(entity, f"{kind}_id")
        existing = self._find(kind, key, local)
        if existing is None:
            local[key] = entity
            return
        if tuple(existing) != tuple(entity):
            label, id_name, error = _MISMATCH[kind]
            submitter = getattr(entity, f"submitter_{kind}_id")
            raise error(
                f"Input {label} data does not match the existing {label} data for {id_name} "
                f"'{submitter}'. Ensure the data matches.",
                problems=[
                    problem(
                        "",
                        error.error_id,
                        f"{label} '{submitter}' differs from the registered one",
                    )
                ],
            )


#: kind -> (label in messages, submitter id name, error)
_MISMATCH: dict[str, tuple[str, str, type[Conflict]]] = {
    "donor": ("Donor", "submitterDonorId", MismatchingDonorData),
    "specimen": ("Specimen", "submitterSpecimenId", MismatchingSpecimenData),
    "sample": ("Sample", "submitterSampleId", MismatchingSampleData),
}


@dataclass
class _Entities:
    """The donors, specimens and samples one payload names, and its sample ids in order."""

    donors: dict[str, DonorRow] = field(default_factory=dict)
    specimens: dict[str, SpecimenRow] = field(default_factory=dict)
    samples: dict[str, SampleRow] = field(default_factory=dict)
    sample_ids: list[str] = field(default_factory=list)

    def rows(self, base: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """The table rows of the new entities and the sample links (``base``: study, analysis
        and creation time)."""
        return {
            "donors": [{**d._asdict(), **base} for d in self.donors.values()],
            "specimens": [{**s._asdict(), **base} for s in self.specimens.values()],
            "samples": [{**s._asdict(), **base} for s in self.samples.values()],
            "analysis_samples": [
                {
                    "analysis_id": base["analysis_id"],
                    "sample_id": sid,
                    "study_id": base["study_id"],
                    "created_at": base["created_at"],
                }
                for sid in self.sample_ids
            ],
        }


def _sample_entities(
    study_id: str, sample: dict[str, Any]
) -> tuple[DonorRow, SpecimenRow, SampleRow]:
    """A payload sample's donor, specimen and sample as rows, with the ids Song computes (a
    payload that gives another id is corrupted)."""
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
            raise CorruptedId(
                f"The {kind}Id '{given}' in the payload is not the id Song computes for it "
                f"('{computed}')",
                kind=kind,
                study_id=study_id,
            )
    donor = DonorRow(
        donor_id,
        study_id,
        d_cols["submitter_donor_id"],
        d_cols["gender"],
        dumps(d_info) if d_info else None,
    )
    specimen = SpecimenRow(
        specimen_id,
        donor_id,
        study_id,
        p_cols["submitter_specimen_id"],
        p_cols["tumour_normal_designation"],
        p_cols["specimen_tissue_source"],
        p_cols["specimen_type"],
        dumps(p_info) if p_info else None,
    )
    new_sample = SampleRow(
        sample_id,
        specimen_id,
        study_id,
        s_cols["submitter_sample_id"],
        s_cols["sample_type"],
        s_cols["matched_normal_submitter_sample_id"],
        dumps(s_info) if s_info else None,
    )
    return donor, specimen, new_sample


def _file_rows(
    files: list[dict[str, Any]],
    analysis_id: str,
    base: dict[str, Any],
    source_paths: dict[str, str],
) -> list[dict[str, Any]]:
    """The ``files`` rows of an accepted payload (version 1 of each file)."""
    rows = []
    for f in files:
        cols, info = split_entity(f, "file", FILE_FIELDS)
        # JSON Schema counts 52.0 as an integer; store 52, as a re-read of the table would
        cols["file_size"] = int(cols["file_size"])
        rows.append(
            {
                "object_id": object_id(analysis_id, cols["file_name"]),
                "version": 1,
                **cols,
                "info": dumps(info) if info else None,
                "source_path": source_paths.get(cols["file_name"]),
                **base,
            }
        )
    return rows


def _unique_files(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Song collapses files with the same fileName within one payload to one file."""
    seen: dict[str, dict[str, Any]] = {}
    for f in files:
        seen.setdefault(f["fileName"], f)
    return list(seen.values())
