"""Bad input of every kind: the exact Song error id, and nothing written to any table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catalog import Catalog, SubmitItem, sql
from catalog.errors import SonglakeError
from catalog.settings import load_settings
from tests.conftest import STUDY


@pytest.fixture
def unchanged(catalog):
    """Asserts at the end of a test that no table (nor the commit log) got a new version."""
    state = {}

    def snapshot() -> None:
        state["versions"] = catalog.tables.versions()
        state["analyses"] = catalog.count_analyses(STUDY)

    snapshot()
    yield snapshot
    assert catalog.tables.versions() == state["versions"]
    assert catalog.count_analyses(STUDY) == state["analyses"]
    assert Catalog(catalog.settings).count_analyses(STUDY) == state["analyses"]


def refused(fn, *args, **kwargs) -> SonglakeError:
    with pytest.raises(SonglakeError) as info:
        fn(*args, **kwargs)
    return info.value


# -- payload parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"studyId": "ABC123", ', id="truncated"),
        pytest.param(b"{'studyId': 'ABC123'}", id="single-quotes"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'[{"studyId": "ABC123"}]', id="array-of-object"),
        pytest.param(b'"just a string"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b'{"studyId": "ABC\xff\xfe123"}', id="not-utf8"),
        pytest.param('{"studyId": "ABC123"'.encode("utf-16"), id="utf16"),
    ],
)
def test_unparseable_payloads(catalog, unchanged, raw):
    err = refused(catalog.submit, raw, STUDY)
    assert err.error_id == "payload.parsing"
    assert err.message.startswith("Unable to read the input payload")


def test_payload_as_str_that_is_an_array(catalog, unchanged, payloads):
    err = refused(catalog.submit, json.dumps([payloads.variant_call()]), STUDY)
    assert err.error_id == "payload.parsing"


def test_fifty_megabyte_payload(catalog, unchanged):
    raw = b'{"studyId": "ABC123", "x": "' + b"a" * (50 * 1024 * 1024) + b'"}'
    err = refused(catalog.submit, raw, STUDY)
    assert err.error_id == "payload.parsing"
    assert f"{catalog.settings.max_payload_bytes:,}" in err.message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, id="objects"),
        pytest.param(b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}", id="arrays"),
    ],
)
def test_ten_thousand_levels_of_nesting(catalog, unchanged, raw):
    err = refused(catalog.submit, raw, STUDY)
    assert err.error_id == "payload.parsing"


def test_ten_thousand_levels_of_nesting_as_a_dict(catalog, unchanged, payloads):
    payload = payloads.variant_call()
    node = payload["experiment"]
    for _ in range(10_000):
        node["deeper"] = {}
        node = node["deeper"]
    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == "payload.parsing"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "9" * 5000])
def test_numbers_json_cannot_carry(catalog, unchanged, payloads, literal):
    raw = json.dumps(payloads.variant_call(info={"x": "HERE"})).replace('"HERE"', literal)
    err = refused(catalog.submit, raw, STUDY)
    assert err.error_id == "payload.parsing"


def test_file_size_beyond_64_bits_fails_alone(catalog, payloads):
    good = payloads.variant_call()
    huge = payloads.variant_call(files=[payloads.file("b.vcf.gz", fileSize=2**63)])
    results = catalog.submit_batch([SubmitItem(huge, STUDY), SubmitItem(good, STUDY)])
    assert results[0].error.error_id == "schema.violation"
    assert [p["pointer"] for p in results[0].error.problems] == ["/files/0/fileSize"]
    assert results[1].ok
    assert catalog.count_analyses(STUDY) == 1
    assert Catalog(catalog.settings).get_analysis(STUDY, results[1].analysis_id)


# -- analysis types ----------------------------------------------------------------------------


def test_unknown_analysis_type(catalog, unchanged, payloads):
    payload = payloads.variant_call()
    payload["analysisType"] = {"name": "noSuchType"}
    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == "analysis.type.not.found"


def test_unknown_version_without_enforce_latest(catalog, payloads):
    lax = Catalog(load_settings(catalog.settings.root, enforce_latest=False))
    before = lax.tables.versions()
    err = refused(lax.submit, payloads.variant_call(version=13), STUDY)
    assert err.error_id == "analysis.type.not.found"
    assert "Version '13'" in err.message
    assert lax.tables.versions() == before


def test_non_latest_version_under_enforce_latest(catalog, unchanged, payloads):
    body = json.loads(json.dumps(catalog.registry.get("variantCall").schema))
    catalog.register_type({"name": "variantCall", "schema": body})
    unchanged()
    err = refused(catalog.submit, payloads.variant_call(version=1), STUDY)
    assert err.error_id == "analysis.type.incorrect.version"
    assert err.message == (
        "Must use the latest version '2' while enforceLatest=true, but using version '1' of "
        "analysisType 'variantCall' instead"
    )


def test_old_version_allowed_without_enforce_latest(catalog, payloads):
    schema = catalog.registry.get("variantCall").schema
    catalog.register_type({"name": "variantCall", "schema": schema})
    lax = Catalog(load_settings(catalog.settings.root, enforce_latest=False))
    aid = lax.submit(payloads.variant_call(version=1), STUDY)
    assert lax.get_analysis(STUDY, aid)["analysisType"] == {"name": "variantCall", "version": 1}


@pytest.mark.parametrize(
    ("atype", "message"),
    [
        pytest.param(None, "The analysisType field cannot be null", id="missing"),
        pytest.param("variantCall", "The analysisType name field cannot be null", id="string"),
        pytest.param({"version": 1}, "The analysisType name field cannot be null", id="no-name"),
    ],
)
def test_malformed_analysis_type(catalog, unchanged, payloads, atype, message):
    payload = payloads.variant_call()
    if atype is None:
        del payload["analysisType"]
    else:
        payload["analysisType"] = atype
    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == "malformed.parameter"
    assert err.message == message


def test_file_type_not_allowed_by_the_type(catalog, payloads):
    schema = {
        "type": "object",
        "required": ["experiment"],
        "properties": {"experiment": {"type": "object"}},
    }
    catalog.register_type(
        {"name": "aln", "schema": schema, "options": {"fileTypes": ["BAM", "BAI"]}}
    )
    # a later version without fileTypes inherits them
    assert catalog.register_type({"name": "aln", "schema": schema}).file_types == ["BAM", "BAI"]
    before = catalog.tables.versions()
    payload = payloads.variant_call(files=[payloads.file("a.vcf.gz")])
    payload["analysisType"] = {"name": "aln"}
    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == "schema.violation"
    assert err.problems[0]["message"] == (
        "a.vcf.gz name is not supported, supported formats are BAM, BAI"
    )
    assert err.problems[0]["schema"] == "aln@2"
    assert catalog.tables.versions() == before
    payload["files"] = [payloads.file("a.bam", fileType="BAM")]
    assert catalog.submit(payload, STUDY)


# -- schema violations -----------------------------------------------------------------------


def test_missing_required_fields_are_all_reported(catalog, unchanged, payloads):
    payload = payloads.variant_call()
    del payload["files"]
    del payload["samples"][0]["submitterSampleId"]
    del payload["samples"][0]["donor"]["gender"]
    payload["experiment"] = {}

    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == "schema.violation"
    for p in err.problems:
        assert set(p) == {"pointer", "rule", "message", "schema"}
        assert p["schema"] == "variantCall@1"
        assert p["rule"] == "required"
    # each missing key exactly once
    assert sorted(p["pointer"] for p in err.problems) == [
        "/experiment/matchedNormalSampleSubmitterId",
        "/experiment/variantCallingTool",
        "/files",
        "/samples/0/donor/gender",
        "/samples/0/submitterSampleId",
    ]
    assert "required key [files] not found" in err.message


@pytest.mark.parametrize("name", ["dir/a.vcf.gz", "../a.vcf.gz", "..", ".", "/etc/passwd"])
def test_file_names_that_reach_outside_a_folder(catalog, unchanged, payloads, name):
    payload = payloads.variant_call(files=[payloads.file(name)])
    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == "schema.violation"
    assert "/files/0/fileName" in {p["pointer"] for p in err.problems}


def test_enum_violations(catalog, unchanged, payloads):
    payload = payloads.variant_call(files=[payloads.file(fileAccess="CoNtRoLlEd")])
    payload["samples"][0]["donor"]["gender"] = "who knows?"
    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == "schema.violation"
    assert {p["pointer"] for p in err.problems} == {
        "/samples/0/donor/gender",
        "/files/0/fileAccess",
    }


def test_server_id_in_payload_is_refused(catalog, unchanged, payloads):
    payload = payloads.variant_call(analysisId="6f0d9c8a-0000-4000-8000-000000000000")
    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == "schema.violation"
    assert "/analysisId" in {p["pointer"] for p in err.problems}


@pytest.mark.parametrize("where", ["sample", "specimen", "donor"])
def test_payload_entity_id_other_than_computed(catalog, unchanged, payloads, where):
    payload = payloads.variant_call()
    sample = payload["samples"][0]
    target = sample if where == "sample" else sample[where]
    target[f"{where}Id"] = "00000000-0000-5000-8000-000000000000"
    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == f"{where}.id.is.corrupted"


def test_payload_entity_id_equal_to_computed_is_accepted(catalog, payloads):
    from catalog.model import entity_id

    payload = payloads.variant_call()
    sample = payload["samples"][0]
    sample["sampleId"] = entity_id(STUDY, sample["submitterSampleId"])
    aid = catalog.submit(payload, STUDY)
    assert catalog.get_analysis(STUDY, aid)["samples"][0]["sampleId"] == sample["sampleId"]
    assert "sampleId" not in catalog.get_analysis(STUDY, aid)["samples"][0]["info"]


# -- entity conflicts (song-api.md §3.8) ---------------------------------------------------------


def test_donor_resubmitted_with_another_gender(catalog, unchanged, payloads):
    catalog.submit(payloads.variant_call(), STUDY)
    unchanged()
    payload = payloads.variant_call(samples=[payloads.sample(gender="Male")])
    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == "mismatching.donor.data"
    assert err.message == (
        "Input Donor data does not match the existing Donor data for submitterDonorId 'd1'. "
        "Ensure the data matches."
    )


def test_donor_resubmitted_with_other_info(catalog, unchanged, payloads):
    catalog.submit(payloads.variant_call(), STUDY)
    unchanged()
    sample = payloads.sample()
    sample["donor"]["age"] = 40
    err = refused(catalog.submit, payloads.variant_call(samples=[sample]), STUDY)
    assert err.error_id == "mismatching.donor.data"


def test_sample_moved_to_another_specimen(catalog, unchanged, payloads):
    catalog.submit(payloads.variant_call(), STUDY)
    unchanged()
    payload = payloads.variant_call(samples=[payloads.sample("s1", "sp2", "d1")])
    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == "sample.to.specimen.id.mismatch"


def test_specimen_moved_to_another_donor(catalog, unchanged, payloads):
    catalog.submit(payloads.variant_call(), STUDY)
    unchanged()
    payload = payloads.variant_call(samples=[payloads.sample("s2", "sp1", "d2")])
    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == "specimen.to.donor.id.mismatch"


def test_sample_with_other_type(catalog, unchanged, payloads):
    catalog.submit(payloads.variant_call(), STUDY)
    unchanged()
    payload = payloads.variant_call(samples=[payloads.sample(sampleType="Total RNA")])
    err = refused(catalog.submit, payload, STUDY)
    assert err.error_id == "mismatching.sample.data"


def test_conflict_inside_one_payload_writes_nothing(catalog, unchanged, payloads):
    samples = [
        payloads.sample("s1", "sp1", "d1"),
        payloads.sample("s2", "sp2", "d1", gender="Male"),
    ]
    err = refused(catalog.submit, payloads.variant_call(samples=samples), STUDY)
    assert err.error_id == "mismatching.donor.data"


# -- studies ---------------------------------------------------------------------------------


def test_study_that_does_not_exist(catalog, unchanged, payloads):
    err = refused(catalog.submit, payloads.variant_call(study_id="NOPE"), "NOPE")
    assert err.error_id == "study.id.does.not.exist"
    assert err.message == "The studyId 'NOPE' does not exist"


def test_payload_study_differs_from_target_study(catalog, payloads):
    catalog.create_study({"studyId": "XYZ"})
    before = catalog.tables.versions()
    err = refused(catalog.submit, payloads.variant_call(study_id=STUDY), "XYZ")
    assert err.error_id == "study.id.mismatch"
    assert catalog.tables.versions() == before
    assert catalog.count_analyses("XYZ") == 0


def test_duplicate_md5(catalog, unchanged, payloads):
    payload = payloads.variant_call()
    catalog.submit(payload, STUDY)
    unchanged()
    again = payloads.variant_call(files=[dict(payload["files"][0], fileName="b.vcf.gz")])
    err = refused(catalog.submit, again, STUDY)
    assert err.error_id == "info.already.exists"
    assert err.message == "File already exist"


# -- publish against storage -----------------------------------------------------------------


def _publish_refused(catalog, aid, error_id):
    history_version = catalog.tables.version("analysis_state_history")
    err = refused(catalog.publish, STUDY, aid)
    assert err.error_id == error_id
    doc = catalog.get_analysis(STUDY, aid)
    assert doc["analysisState"] == "UNPUBLISHED"
    assert doc["analysisStateHistory"] == []
    assert catalog.history(STUDY, aid) == []
    assert catalog.tables.version("analysis_state_history") == history_version
    assert Catalog(catalog.settings).get_analysis(STUDY, aid)["analysisState"] == "UNPUBLISHED"
    return err


def test_publish_with_file_missing_from_storage(catalog, submitted):
    aid, _ = submitted
    oid = catalog.get_analysis(STUDY, aid)["files"][0]["objectId"]
    err = _publish_refused(catalog, aid, "missing.storage.objects")
    assert err.message == (
        "The following storage objectIds must be uploaded to the storage server before the "
        f"analysisId {aid} can be published: {oid}"
    )


def test_publish_with_object_of_another_size(catalog, submitted, tmp_path):
    aid, _ = submitted
    oid = catalog.get_analysis(STUDY, aid)["files"][0]["objectId"]
    other = tmp_path / "other"
    other.write_bytes(b"not the registered content, and longer than it is\n" * 3)
    catalog.store.put_file(oid, other)
    err = _publish_refused(catalog, aid, "mismatching.storage.object.sizes")
    assert oid in err.message


def test_publish_with_object_of_another_md5(catalog, submitted, payloads, tmp_path):
    aid, payload = submitted
    f = payload["files"][0]
    oid = catalog.get_analysis(STUDY, aid)["files"][0]["objectId"]
    content = payloads.contents[f["fileMd5sum"]]
    other = tmp_path / "other"
    other.write_bytes(bytes(reversed(content)))  # same size, other bytes
    catalog.store.put_file(oid, other)
    err = _publish_refused(catalog, aid, "mismatching.storage.object.checksums")
    assert oid in err.message


def test_publish_with_meta_edited_to_another_size(catalog, submitted, upload):
    aid, payload = submitted
    upload(aid, payload)
    oid = catalog.get_analysis(STUDY, aid)["files"][0]["objectId"]
    meta = Path(catalog.settings.objects_dir) / "data" / f"{oid}.meta"
    spec = json.loads(meta.read_text())
    spec["objectSize"] += 1
    meta.write_text(json.dumps(spec))
    _publish_refused(catalog, aid, "mismatching.storage.object.sizes")


# -- SQL --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
        "ATTACH '/tmp/songlake-attack.db' AS x",
        "CREATE TABLE t AS SELECT 1 AS a",
        "INSERT INTO studies VALUES ('x')",
        "SET enable_external_access = true",
        "INSTALL httpfs",
        "SELECT 1; SELECT 2",
        "SELECT 1; COPY (SELECT 1) TO '/tmp/x.csv'",
        "not sql at all",
    ],
)
def test_sql_that_writes_or_reads_outside_the_catalog(catalog, unchanged, query, tmp_path):
    err = refused(sql.run, catalog.tables, query)
    assert err.error_id == "illegal.query.parameter"
    assert not Path("/tmp/songlake-attack.db").exists()


def test_sql_select_still_works(catalog, submitted):
    aid, _ = submitted
    cols, rows = sql.run(catalog.tables, "SELECT analysis_id, analysis_state FROM analyses")
    assert cols == ["analysis_id", "analysis_state"]
    assert rows == [(aid, "UNPUBLISHED")]


@pytest.mark.parametrize("container", ["object", "array"])
def test_nesting_is_counted_to_the_limit_exactly(container):
    from catalog.errors import PayloadParsing
    from catalog.model import parse_payload

    def nested(levels: int) -> bytes:  # the payload object itself is level 1
        inner = b"1"
        for _ in range(levels - 1):
            inner = b'{"a":' + inner + b"}" if container == "object" else b"[" + inner + b"]"
        return b'{"studyId":"S","x":' + inner + b"}"

    assert parse_payload(nested(8), max_bytes=10_000, max_depth=8)["studyId"] == "S"
    with pytest.raises(PayloadParsing) as err:
        parse_payload(nested(9), max_bytes=10_000, max_depth=8)
    assert err.value.problems[0]["rule"] == "maxDepth"
    # a payload parsed once is not walked again, unless a stricter limit asks for it
    parsed = parse_payload(nested(8), max_bytes=10_000, max_depth=8)
    assert parse_payload(parsed, max_bytes=10_000, max_depth=8) is parsed
    with pytest.raises(PayloadParsing):
        parse_payload(parsed, max_bytes=10_000, max_depth=7)
