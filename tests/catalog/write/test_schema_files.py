"""Checks of the JSON data files in ``schemas/`` (song-api.md §4).

The self-contained tests need nothing but the repository.  The fixture tests read the real-world
Song material from ``<repo>/../shared/fixtures/real-world`` (AGPL, never copied into this repo) and
are skipped when that folder is absent.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError, ValidationError

from tests.conftest import FIXTURES, FIXTURES_MISSING, REPO, fixtures_present

SCHEMAS = REPO / "schemas"

EN_DASH = "\u2013"
EN_DASH_SPECIMEN_TYPES = {
    f"Cell line {EN_DASH} derived from metastatic tumour",
    f"Xenograft {EN_DASH} derived from metastatic tumour",
}

needs_fixtures = pytest.mark.skipif(not fixtures_present(), reason=FIXTURES_MISSING)


# --------------------------------------------------------------------------------------------
# helpers


def load(path: Path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def base_schema() -> dict:
    return load(SCHEMAS / "analysisBase.json")


def update_schema() -> dict:
    return load(SCHEMAS / "analysisUpdate.json")


def registration_schema() -> dict:
    return load(SCHEMAS / "analysisTypeRegistration.json")


def seeded_type(name: str) -> dict:
    return load(SCHEMAS / "types" / f"{name}.json")


def render(base: dict, type_schema: dict) -> dict:
    """§4.3 step 4: base overlaid by the type's properties; required concatenated (deduplicated,
    order kept); the type's ``definitions`` are not copied."""
    rendered = copy.deepcopy(base)
    props = dict(rendered.get("properties", {}))
    props.update(copy.deepcopy(type_schema.get("properties", {})))
    rendered["properties"] = props
    required = list(rendered.get("required", []))
    for key in type_schema.get("required", []):
        if key not in required:
            required.append(key)
    rendered["required"] = required
    return rendered


def validator(schema: dict) -> Draft7Validator:
    return Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)


def errors(schema: dict, instance) -> list[ValidationError]:
    return list(validator(schema).iter_errors(instance))


def leaf_errors(errs) -> list[ValidationError]:
    """Flatten combinator errors (anyOf/oneOf/...) into the sub-errors that caused them."""
    out: list[ValidationError] = []
    for err in errs:
        if err.context:
            out.extend(leaf_errors(err.context))
        else:
            out.append(err)
    return out


def minimal_payload() -> dict:
    """The minimal valid payload of song-api.md §4.1 (variantCall)."""
    return {
        "studyId": "ABC123",
        "analysisType": {"name": "variantCall"},
        "experiment": {
            "variantCallingTool": "silver bullet",
            "matchedNormalSampleSubmitterId": "sample-x24-11a",
        },
        "samples": [
            {
                "submitterSampleId": "s1",
                "sampleType": "Total DNA",
                "matchedNormalSubmitterSampleId": "sample-x24-11a",
                "specimen": {
                    "submitterSpecimenId": "sp1",
                    "specimenType": "Primary tumour",
                    "specimenTissueSource": "Solid tissue",
                    "tumourNormalDesignation": "Tumour",
                },
                "donor": {"submitterDonorId": "d1", "gender": "Female"},
            }
        ],
        "files": [
            {
                "dataType": "Variant Calling Data",
                "fileName": "example.vcf.gz",
                "fileSize": 52,
                "fileMd5sum": "9a793e90d0d1e11301ea8da996446e59",
                "fileAccess": "open",
                "fileType": "VCF",
            }
        ],
    }


def variant_call_rendered() -> dict:
    return render(base_schema(), seeded_type("variantCall")["schema"])


# --------------------------------------------------------------------------------------------
# (a) every schema file is a valid draft-07 schema

ALL_JSON = sorted(SCHEMAS.rglob("*.json"))


def test_expected_files_exist():
    names = {p.relative_to(SCHEMAS).as_posix() for p in ALL_JSON}
    assert {
        "analysisBase.json",
        "analysisUpdate.json",
        "analysisTypeRegistration.json",
        "types/variantCall.json",
        "types/sequencingRead.json",
    } <= names
    assert not (SCHEMAS / "types" / "__init__.py").exists()


@pytest.mark.parametrize("path", ALL_JSON, ids=lambda p: p.relative_to(SCHEMAS).as_posix())
def test_schema_file_is_valid_draft7(path: Path):
    doc = load(path)
    if path.parent.name == "types":
        # POST /schemas bodies: the schema proper sits under "schema".
        assert set(doc) == {"name", "options", "schema"}
        assert doc["name"] == path.stem
        assert doc["options"] is None
        Draft7Validator.check_schema(doc["schema"])
        assert not errors(registration_schema(), doc["schema"])
        # The rendered schema must compile too (refs resolve against the base document).
        Draft7Validator.check_schema(render(base_schema(), doc["schema"]))
    else:
        assert doc["$schema"] == "http://json-schema.org/draft-07/schema#"
        Draft7Validator.check_schema(doc)


def test_all_refs_resolve():
    """Walk every $ref in the base and update schemas and resolve it against its document."""

    def refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    for schema in (base_schema(), update_schema(), registration_schema()):
        for ref in refs(schema):
            assert ref.startswith("#/definitions/")
            target = schema
            for part in ref[2:].split("/"):
                target = target[part]
            assert isinstance(target, dict) and target, ref


# --------------------------------------------------------------------------------------------
# (b) enum values byte-exact


def test_specimen_type_dashes():
    raw = (SCHEMAS / "analysisBase.json").read_text(encoding="utf-8")
    # Stored as the UTF-8 character, not a \u escape.
    assert EN_DASH in raw
    assert "\\u2013" not in raw

    values = base_schema()["definitions"]["specimen"]["specimenType"]["enum"]
    assert len(values) == 18
    assert len(set(values)) == 18
    with_en_dash = {v for v in values if EN_DASH in v}
    assert with_en_dash == EN_DASH_SPECIMEN_TYPES
    for value in EN_DASH_SPECIMEN_TYPES:
        assert value in values
        assert f" {EN_DASH} " in value
        assert "-" not in value  # no hyphen-minus anywhere in these two
    hyphenated = [v for v in values if " - " in v]
    assert len(hyphenated) == 12
    for value in values:
        if value in EN_DASH_SPECIMEN_TYPES:
            continue
        assert EN_DASH not in value
        assert all(ord(ch) < 128 for ch in value), value


def test_other_enums():
    defs = base_schema()["definitions"]
    assert defs["sample"]["sampleType"]["enum"] == [
        "Total DNA",
        "Amplified DNA",
        "ctDNA",
        "Other DNA enrichments",
        "Total RNA",
        "Ribo-Zero RNA",
        "polyA+ RNA",
        "Other RNA fractions",
    ]
    assert defs["specimen"]["tumourNormalDesignation"]["enum"] == ["Normal", "Tumour"]
    assert defs["donor"]["gender"]["enum"] == ["Male", "Female", "Other"]
    assert defs["file"]["fileAccess"]["enum"] == ["open", "controlled"]
    tissue = defs["specimen"]["specimenTissueSource"]["enum"]
    assert len(tissue) == 26 and len(set(tissue)) == 26
    assert "Blood derived - peripheral blood" in tissue
    for value in tissue:
        assert all(ord(ch) < 128 for ch in value), value


def test_no_additional_properties_restriction_in_payload_schemas():
    for schema in (base_schema(), update_schema()):
        assert "additionalProperties" not in json.dumps(schema)


# --------------------------------------------------------------------------------------------
# self-contained behaviour checks (no fixtures needed)


def test_minimal_payload_is_valid():
    assert errors(variant_call_rendered(), minimal_payload()) == []


def test_minimal_payload_is_valid_against_bare_base():
    payload = minimal_payload()
    del payload["experiment"]
    assert errors(base_schema(), payload) == []


def test_unknown_keys_are_allowed_everywhere():
    payload = minimal_payload()
    payload["whatever"] = {"x": 1}
    payload["samples"][0]["tissueCollectionMethod"] = "IV"
    payload["samples"][0]["specimen"]["extra"] = 1
    payload["samples"][0]["donor"]["ageCategory"] = "18-25"
    payload["files"][0]["compression"] = "gzip"
    assert errors(variant_call_rendered(), payload) == []


def test_normal_with_non_null_matched_normal_fails():
    payload = minimal_payload()
    sample = payload["samples"][0]
    sample["specimen"]["tumourNormalDesignation"] = "Normal"
    sample["specimen"]["specimenType"] = "Normal"
    sample["matchedNormalSubmitterSampleId"] = "sample-x24-11a"
    errs = errors(variant_call_rendered(), payload)
    assert errs
    assert any(list(e.path) == ["samples", 0, "matchedNormalSubmitterSampleId"] for e in errs)
    sample["matchedNormalSubmitterSampleId"] = None
    assert errors(variant_call_rendered(), payload) == []


def test_tumour_with_matched_normal_key_absent_fails():
    payload = minimal_payload()
    del payload["samples"][0]["matchedNormalSubmitterSampleId"]
    errs = errors(variant_call_rendered(), payload)
    assert [e.validator for e in errs] == ["required"]
    assert "matchedNormalSubmitterSampleId" in errs[0].message


def test_normal_with_matched_normal_key_absent_fails():
    payload = minimal_payload()
    sample = payload["samples"][0]
    sample["specimen"]["tumourNormalDesignation"] = "Normal"
    del sample["matchedNormalSubmitterSampleId"]
    assert errors(variant_call_rendered(), payload)


def test_tumour_matched_normal_may_be_null_but_not_empty():
    payload = minimal_payload()
    payload["samples"][0]["matchedNormalSubmitterSampleId"] = None
    assert errors(variant_call_rendered(), payload) == []
    payload["samples"][0]["matchedNormalSubmitterSampleId"] = ""
    assert errors(variant_call_rendered(), payload)
    payload["samples"][0]["matchedNormalSubmitterSampleId"] = "a" * 65
    assert errors(variant_call_rendered(), payload)


@pytest.mark.parametrize("name", ["../x", "a b.vcf", "x/y", ""])
def test_bad_file_name_fails(name):
    payload = minimal_payload()
    payload["files"][0]["fileName"] = name
    errs = errors(variant_call_rendered(), payload)
    assert errs
    assert all(list(e.path) == ["files", 0, "fileName"] for e in errs)


def test_good_file_names_pass():
    payload = minimal_payload()
    payload["files"][0]["fileName"] = "a-b_c.(1)[2].vcf.gz"
    assert errors(variant_call_rendered(), payload) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.__setitem__("analysisId", "0c1"),
        lambda p: p.__setitem__("studyId", ""),
        lambda p: p.__setitem__("samples", []),
        lambda p: p.__setitem__("files", []),
        lambda p: p["analysisType"].__setitem__("version", "1"),
        lambda p: p["analysisType"].pop("name"),
        lambda p: p["samples"][0]["specimen"].__setitem__("specimenClass", "Tumour"),
        lambda p: p["samples"][0].__setitem__("submitterSampleId", "bad id"),
        lambda p: p["samples"][0]["donor"].__setitem__("submitterDonorId", "d" * 65),
        lambda p: p["samples"][0]["specimen"].__setitem__("specimenType", "Tumour"),
        lambda p: p["samples"][0].__setitem__("info", []),
        lambda p: p["files"][0].__setitem__("fileSize", 1.5),
        lambda p: p["files"][0].__setitem__("fileAccess", "Open"),
        lambda p: p["files"][0].__setitem__("fileMd5sum", "9a793e90"),
        lambda p: p["files"][0].pop("dataType"),
        lambda p: p.pop("experiment"),
    ],
)
def test_base_rules_reject(mutate):
    payload = minimal_payload()
    mutate(payload)
    assert errors(variant_call_rendered(), payload)


def test_analysis_type_version_may_be_null_or_int():
    payload = minimal_payload()
    for version in (None, 1, 7):
        payload["analysisType"]["version"] = version
        assert errors(variant_call_rendered(), payload) == []


def test_en_dash_specimen_type_accepted_hyphen_variant_rejected():
    payload = minimal_payload()
    spec = payload["samples"][0]["specimen"]
    spec["specimenType"] = f"Xenograft {EN_DASH} derived from metastatic tumour"
    assert errors(variant_call_rendered(), payload) == []
    spec["specimenType"] = "Xenograft - derived from metastatic tumour"
    assert errors(variant_call_rendered(), payload)


def test_sequencing_read_type():
    rendered = render(base_schema(), seeded_type("sequencingRead")["schema"])
    payload = minimal_payload()
    payload["analysisType"] = {"name": "sequencingRead", "version": 1}
    payload["experiment"] = {"libraryStrategy": "WXS", "aligned": None, "insertSize": 900}
    assert errors(rendered, payload) == []
    payload["experiment"]["insertSize"] = "900"
    assert len(errors(rendered, payload)) == 1
    payload["experiment"] = {"libraryStrategy": "wxs"}
    assert len(errors(rendered, payload)) == 1


def test_render_rule():
    base = base_schema()
    type_schema = {
        "type": "object",
        "required": ["experiment", "studyId"],
        "definitions": {"mine": {"type": "string"}},
        "properties": {"experiment": {"type": "object"}, "files": {"type": "array"}},
    }
    rendered = render(base, type_schema)
    assert rendered["required"] == ["studyId", "analysisType", "samples", "files", "experiment"]
    assert rendered["properties"]["files"] == {"type": "array"}
    assert "mine" not in rendered["definitions"]
    assert rendered["definitions"] == base["definitions"]
    assert base_schema() == base  # base not mutated


def test_type_property_can_ref_base_definitions():
    type_schema = {
        "type": "object",
        "required": ["experiment"],
        "properties": {
            "experiment": {
                "type": "object",
                "properties": {"normal": {"$ref": "#/definitions/common/submitterId"}},
            }
        },
    }
    rendered = render(base_schema(), type_schema)
    payload = minimal_payload()
    payload["experiment"] = {"normal": "ok-id"}
    assert errors(rendered, payload) == []
    payload["experiment"] = {"normal": "not ok"}
    assert errors(rendered, payload)


# update schema (§4.4)


def test_update_schema():
    schema = update_schema()
    assert errors(schema, {"analysisType": {"name": "variantCall"}, "experiment": {}}) == []
    assert errors(schema, {"analysisType": {"name": "variantCall", "version": None}}) == []
    assert errors(schema, {"experiment": {}})
    assert errors(schema, {"analysisType": {"version": 1}})
    assert errors(schema, {"analysisType": "variantCall"})
    for key in ("analysisId", "studyId", "analysisState", "analysisTypeId", "samples", "files"):
        errs = errors(schema, {"analysisType": {"name": "variantCall"}, key: None})
        assert [list(e.path) for e in errs] == [[key]], key


def test_update_schema_with_type_merged():
    schema = render(update_schema(), seeded_type("variantCall")["schema"])
    body = {
        "analysisType": {"name": "variantCall", "version": 1},
        "experiment": {"variantCallingTool": "x", "matchedNormalSampleSubmitterId": "y"},
    }
    assert errors(schema, body) == []
    body["experiment"] = {}
    assert len(errors(schema, body)) == 2


# registration meta-schema (§4.2)

GOOD_TYPE = {
    "type": "object",
    "required": ["experiment"],
    "properties": {
        "experiment": {"type": "object", "properties": {"platform": {"type": "string"}}}
    },
}


def test_registration_accepts_good_type():
    assert errors(registration_schema(), GOOD_TYPE) == []
    with_defs = dict(GOOD_TYPE, definitions={"x": {"type": "string"}})
    assert errors(registration_schema(), with_defs) == []
    without_required = {k: v for k, v in GOOD_TYPE.items() if k != "required"}
    assert errors(registration_schema(), without_required) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.__setitem__("$id", "x"),
        lambda s: s.__setitem__("$schema", "http://json-schema.org/draft-07/schema#"),
        lambda s: s.__setitem__("title", "t"),
        lambda s: s.__setitem__("type", "array"),
        lambda s: s.pop("type"),
        lambda s: s.pop("properties"),
        lambda s: s.__setitem__("properties", {"other": {"type": "object"}}),
        lambda s: s["properties"].__setitem__("experiment", {"type": "string"}),
        lambda s: s["properties"].__setitem__("experiment", True),
        lambda s: s.__setitem__("required", ["other"]),
        lambda s: s.__setitem__("required", ["experiment", "experiment"]),
        lambda s: s.__setitem__("required", ["experiment", 3]),
        lambda s: s.__setitem__("required", "experiment"),
        lambda s: s.__setitem__("definitions", []),
    ],
)
def test_registration_rejects(mutate):
    schema = copy.deepcopy(GOOD_TYPE)
    mutate(schema)
    assert errors(registration_schema(), schema)


@pytest.mark.parametrize(
    "key",
    [
        "studyId",
        "analysisState",
        "analysisType",
        "analysisTypeId",
        "samples",
        "files",
        "analysisId",
    ],
)
def test_registration_rejects_base_owned_property(key):
    schema = copy.deepcopy(GOOD_TYPE)
    schema["properties"][key] = {"type": "string"}
    errs = errors(registration_schema(), schema)
    assert [list(e.path) for e in errs] == [["properties", key]]


# --------------------------------------------------------------------------------------------
# (c) real-world fixtures


@pytest.fixture(scope="module")
def manifest() -> dict:
    if not FIXTURES.is_dir():
        pytest.skip(FIXTURES_MISSING)
    return load(FIXTURES / "MANIFEST.json")


@pytest.fixture(scope="module")
def fixture_types(manifest) -> dict[str, dict]:
    """analysis type name -> registered type schema, from analysis_types/."""
    out = {}
    for path in sorted((FIXTURES / "analysis_types").glob("*.json")):
        body = load(path)
        out[body["name"]] = body["schema"]
    return out


def fixture_files(sub: str) -> list[str]:
    if not FIXTURES.is_dir():
        return []
    return sorted(p.name for p in (FIXTURES / sub).glob("*.json"))


def rendered_for(payload: dict, fixture_types: dict[str, dict]) -> dict:
    name = payload["analysisType"]["name"]
    return render(base_schema(), fixture_types[name])


@needs_fixtures
@pytest.mark.parametrize("name", fixture_files("analysis_types"))
def test_fixture_type_passes_registration(name, manifest):
    body = load(FIXTURES / "analysis_types" / name)
    schema = body["schema"]
    assert errors(registration_schema(), schema) == []
    Draft7Validator.check_schema(schema)
    Draft7Validator.check_schema(render(base_schema(), schema))


@needs_fixtures
def test_fixture_seeded_types_match_ours(fixture_types):
    # Same rules as our seeded copies (compared as data, not text).
    for name in ("variantCall", "sequencingRead"):
        assert seeded_type(name)["schema"] == fixture_types[name]


@needs_fixtures
@pytest.mark.parametrize("name", fixture_files("analysis_types_invalid"))
def test_fixture_invalid_type_rejected(name, manifest):
    entry = next(e for e in manifest["analysis_types_invalid"] if e["file"].endswith(f"/{name}"))
    schema = load(FIXTURES / "analysis_types_invalid" / name)["schema"]
    meta_errors = errors(registration_schema(), schema)
    if entry["errorId"] == "schema.violation":
        assert meta_errors
    elif entry["errorId"] == "malformed.json.schema":
        assert meta_errors == []
        with pytest.raises(SchemaError):
            Draft7Validator.check_schema(schema)
    elif entry["errorId"] == "illegal.analysis.type.name":
        # Rejected for its reserved name, not its schema: the schema itself is fine.
        assert meta_errors == []
        Draft7Validator.check_schema(schema)
    else:  # pragma: no cover - new fixture kinds need a decision
        pytest.fail(f"unexpected errorId {entry['errorId']}")


@needs_fixtures
@pytest.mark.parametrize("name", fixture_files("payloads/valid"))
def test_fixture_valid_payload(name, fixture_types):
    payload = load(FIXTURES / "payloads" / "valid" / name)
    errs = errors(rendered_for(payload, fixture_types), payload)
    assert errs == [], [e.message for e in errs]


def invalid_entries() -> list[dict]:
    if not FIXTURES.is_dir():
        return []
    return load(FIXTURES / "MANIFEST.json")["payloads_invalid"]


@needs_fixtures
@pytest.mark.parametrize("entry", invalid_entries(), ids=lambda e: Path(e["file"]).stem)
def test_fixture_invalid_payload(entry, fixture_types):
    payload = load(FIXTURES / entry["file"])
    if entry["errorId"] == "schema.violation":
        assert errors(rendered_for(payload, fixture_types), payload)
    elif entry["errorId"] == "analysis.type.incorrect.version":
        # Rejected for its pinned version; the body itself is schema-valid.
        assert errors(rendered_for(payload, fixture_types), payload) == []
    else:
        # malformed.parameter: analysisType missing or not an object — caught before validation.
        assert entry["errorId"] == "malformed.parameter"
        assert not isinstance(payload.get("analysisType"), dict)


@needs_fixtures
def test_fixture_invalid_enums_count(fixture_types):
    payload = load(FIXTURES / "payloads" / "invalid" / "song_sequencingread_invalid_enums.json")
    errs = leaf_errors(errors(rendered_for(payload, fixture_types), payload))
    assert len(errs) == 7, [e.message for e in errs]
    assert {e.validator for e in errs} == {"enum"}
    assert sorted(tuple(e.path) for e in errs) == sorted(
        [
            ("samples", 0, "sampleType"),
            ("samples", 0, "specimen", "tumourNormalDesignation"),
            ("samples", 0, "specimen", "specimenTissueSource"),
            ("samples", 0, "specimen", "specimenType"),
            ("samples", 0, "donor", "gender"),
            ("files", 0, "fileAccess"),
            ("files", 1, "fileAccess"),
        ]
    )


@needs_fixtures
def test_fixture_missing_required_count(fixture_types):
    payload = load(FIXTURES / "payloads" / "invalid" / "song_variantcall_missing_required.json")
    errs = leaf_errors(errors(rendered_for(payload, fixture_types), payload))
    assert len(errs) == 4, [e.message for e in errs]
    assert {e.validator for e in errs} == {"required"}
    got = sorted((tuple(e.path), e.message) for e in errs)
    assert got == sorted(
        [
            ((), "'files' is a required property"),
            (("samples", 0), "'submitterSampleId' is a required property"),
            (("experiment",), "'matchedNormalSampleSubmitterId' is a required property"),
            (("experiment",), "'variantCallingTool' is a required property"),
        ]
    )


def _suite_without_fixtures(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["REALWORLD_FIXTURES"] = str(tmp_path / "absent")
    if ci is not None:
        env["CI"] = ci
    test = REPO / "tests" / "catalog" / "write" / "test_realworld_fixtures.py"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", str(test)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


def test_missing_fixtures_skip_with_a_reason_but_fail_on_ci(tmp_path: Path) -> None:
    """A newcomer without ../shared sees one line saying what is missing and how to get it; CI,
    which always has the fixtures, fails instead of skipping."""
    user = _suite_without_fixtures(tmp_path, None)
    assert user.returncode in (0, 5), user.stdout[-2000:]  # 5: every test skipped
    assert "1 skipped" in user.stdout
    assert f"real-world Song fixtures not found at {tmp_path / 'absent'}" in user.stdout
    assert "place the project's shared folder beside your clone (../shared)" in user.stdout

    ci = _suite_without_fixtures(tmp_path, "true")
    assert ci.returncode != 0
    assert "CI=true and real-world Song fixtures not found" in ci.stdout
    assert "skipped" not in ci.stdout.splitlines()[-1]
