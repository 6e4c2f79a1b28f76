"""Registering payloads: Song's document shape, IDs, entity reuse, batches and duplicates."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest

from catalog import Catalog, SubmitItem, sql
from catalog.errors import SchemaViolation
from catalog.model import entity_id, object_id
from tests.conftest import STUDY

ANALYSIS_KEYS = {
    "analysisId",
    "studyId",
    "analysisState",
    "analysisType",
    "createdAt",
    "updatedAt",
    "firstPublishedAt",
    "publishedAt",
    "analysisStateHistory",
    "samples",
    "files",
}
SAMPLE_KEYS = {
    "sampleId",
    "specimenId",
    "submitterSampleId",
    "sampleType",
    "matchedNormalSubmitterSampleId",
    "info",
    "specimen",
    "donor",
}
SPECIMEN_KEYS = {
    "specimenId",
    "donorId",
    "submitterSpecimenId",
    "tumourNormalDesignation",
    "specimenTissueSource",
    "specimenType",
    "info",
}
DONOR_KEYS = {"donorId", "studyId", "submitterDonorId", "gender", "info"}
FILE_KEYS = {
    "objectId",
    "studyId",
    "analysisId",
    "fileName",
    "fileSize",
    "fileType",
    "fileMd5sum",
    "fileAccess",
    "dataType",
    "info",
}


def count(catalog: Catalog, table: str) -> int:
    return sql.run(catalog.tables, f"SELECT count(*) FROM {table}")[1][0][0]


def test_document_has_songs_shape(catalog, payloads):
    sample = payloads.sample(extra=5, info={"note": "x", "dropped": None}, nothingHere=None)
    sample["specimen"]["site"] = "lung"
    sample["donor"].update(age=34, info={"vital": "alive"}, unknownNull=None)
    f = payloads.file("a.vcf.gz", colour="red", info={"lane": 3, "gone": None})
    payload = payloads.variant_call(samples=[sample], files=[f], info={"any": "thing"}, extraTop=7)

    aid = catalog.submit(payload, STUDY)
    doc = catalog.get_analysis(STUDY, aid)

    assert set(doc) == ANALYSIS_KEYS | {"experiment", "info", "extraTop"}
    assert doc["analysisId"] == aid
    assert doc["studyId"] == STUDY
    assert doc["analysisState"] == "UNPUBLISHED"
    assert doc["analysisType"] == {"name": "variantCall", "version": 1}
    assert doc["firstPublishedAt"] is None
    assert doc["publishedAt"] is None
    assert doc["analysisStateHistory"] == []
    for key in ("createdAt", "updatedAt"):
        parsed = datetime.fromisoformat(doc[key])
        assert parsed.tzinfo is None  # Song's naive ISO dates
    assert doc["experiment"] == payload["experiment"]
    assert doc["info"] == {"any": "thing"}
    assert doc["extraTop"] == 7

    (s,) = doc["samples"]
    assert set(s) == SAMPLE_KEYS
    assert set(s["specimen"]) == SPECIMEN_KEYS
    assert set(s["donor"]) == DONOR_KEYS
    assert s["submitterSampleId"] == "s1"
    assert s["sampleType"] == "Total DNA"
    assert s["matchedNormalSubmitterSampleId"] == "sample-x24-11a"
    # unknown keys merge into info with the explicit info object; null values are dropped
    assert s["info"] == {"extra": 5, "note": "x"}
    assert s["specimen"]["info"] == {"site": "lung"}
    assert s["specimen"]["tumourNormalDesignation"] == "Tumour"
    assert s["specimen"]["specimenType"] == "Primary tumour"
    assert s["specimen"]["specimenTissueSource"] == "Solid tissue"
    assert s["donor"]["info"] == {"age": 34, "vital": "alive"}
    assert s["donor"]["studyId"] == STUDY
    assert s["donor"]["gender"] == "Female"
    assert s["specimenId"] == s["specimen"]["specimenId"]
    assert s["specimen"]["donorId"] == s["donor"]["donorId"]

    (fd,) = doc["files"]
    assert set(fd) == FILE_KEYS
    assert fd == {
        "objectId": object_id(aid, "a.vcf.gz"),
        "studyId": STUDY,
        "analysisId": aid,
        "fileName": "a.vcf.gz",
        "fileSize": f["fileSize"],
        "fileType": "VCF",
        "fileMd5sum": f["fileMd5sum"],
        "fileAccess": "open",
        "dataType": "Variant Calling Data",
        "info": {"colour": "red", "lane": 3},
    }


def test_normal_sample_keeps_null_matched_normal(catalog, payloads):
    payload = payloads.variant_call(samples=[payloads.sample(tumour=False)])
    aid = catalog.submit(payload, STUDY)
    (s,) = catalog.get_analysis(STUDY, aid)["samples"]
    assert "matchedNormalSubmitterSampleId" in s
    assert s["matchedNormalSubmitterSampleId"] is None


def test_ids_follow_song_local_id_mode(catalog, payloads):
    payload = payloads.variant_call(
        files=[payloads.file("a.vcf.gz"), payloads.file("a.vcf.gz.tbi", fileType="TBI")]
    )
    aid = catalog.submit(payload, STUDY)
    doc = catalog.get_analysis(STUDY, aid)

    parsed = uuid.UUID(aid)
    assert parsed.version == 4 and str(parsed) == aid
    (s,) = doc["samples"]
    ns = uuid.NAMESPACE_OID
    assert s["sampleId"] == str(uuid.uuid5(ns, f"{STUDY}:s1"))
    assert s["specimen"]["specimenId"] == str(uuid.uuid5(ns, f"{STUDY}:sp1"))
    assert s["donor"]["donorId"] == str(uuid.uuid5(ns, f"{STUDY}:d1"))
    assert {f["fileName"]: f["objectId"] for f in doc["files"]} == {
        "a.vcf.gz": str(uuid.uuid5(ns, f"{aid}:a.vcf.gz")),
        "a.vcf.gz.tbi": str(uuid.uuid5(ns, f"{aid}:a.vcf.gz.tbi")),
    }


def test_java_uuid5_test_vector():
    expected = "8540ebac-66f2-553a-b865-0d3006edd892"
    assert str(uuid.uuid5(uuid.NAMESPACE_OID, "parameter1_1:parameter2_1")) == expected
    assert entity_id("parameter1_1", "parameter2_1") == expected
    assert object_id("parameter1_1", "parameter2_1") == expected


def test_identical_entities_are_reused_across_analyses(catalog, payloads):
    first = catalog.submit(payloads.variant_call(), STUDY)
    second = catalog.submit(payloads.variant_call(), STUDY)

    a, b = (catalog.get_analysis(STUDY, x)["samples"][0] for x in (first, second))
    assert a == b
    assert count(catalog, "donors") == 1
    assert count(catalog, "specimens") == 1
    assert count(catalog, "samples") == 1
    assert count(catalog, "analysis_samples") == 2
    assert catalog.search_ids(STUDY, submitterDonorId="^d1$") == sorted([first, second])


def test_submit_batch_commits_good_payloads_and_reports_bad_ones(catalog, payloads):
    good = payloads.variant_call()
    bad_schema = payloads.variant_call()
    del bad_schema["experiment"]
    wrong_study = payloads.variant_call(study_id="OTHER")
    # a later payload of the same batch reuses the donor the first one creates
    reuse = payloads.variant_call(samples=[payloads.sample("s2", "sp2", "d1")])
    # ... and one that contradicts it is refused
    clash = payloads.variant_call(samples=[payloads.sample("s3", "sp3", "d1", gender="Male")])
    before = catalog.tables.version("analyses")

    results = catalog.submit_batch(
        [SubmitItem(p, STUDY) for p in (good, bad_schema, wrong_study, reuse, clash)]
    )

    assert [r.ok for r in results] == [True, False, False, True, False]
    assert results[1].error.error_id == "schema.violation"
    assert results[2].error.error_id == "study.id.mismatch"
    assert results[4].error.error_id == "mismatching.donor.data"
    assert results[1].analysis_id is None
    # one commit for the whole batch
    assert catalog.tables.version("analyses") == before + 1
    docs = [catalog.get_analysis(STUDY, results[i].analysis_id) for i in (0, 3)]
    assert docs[0]["samples"][0]["donor"] == docs[1]["samples"][0]["donor"]
    assert docs[1]["samples"][0]["submitterSampleId"] == "s2"
    assert catalog.count_analyses(STUDY) == 2
    assert count(catalog, "donors") == 1
    assert count(catalog, "samples") == 2


def test_duplicate_md5_within_a_batch(catalog, payloads):
    first = payloads.variant_call()
    same_md5 = payloads.variant_call(files=[dict(first["files"][0], fileName="b.vcf.gz")])

    results = catalog.submit_batch([SubmitItem(first, STUDY), SubmitItem(same_md5, STUDY)])
    assert results[0].ok
    assert results[1].error.error_id == "info.already.exists"
    assert results[1].error.message == "File already exist"

    allowed = catalog.submit_batch(
        [SubmitItem(same_md5, STUDY), SubmitItem(same_md5, STUDY, allow_duplicates=True)]
    )
    assert allowed[0].error.error_id == "info.already.exists"
    assert allowed[1].ok
    assert catalog.count_analyses(STUDY) == 2


def test_duplicate_md5_against_the_catalog(catalog, payloads):
    payload = payloads.variant_call()
    catalog.submit(payload, STUDY)
    other = payloads.variant_call(files=[dict(payload["files"][0], fileName="other.vcf.gz")])

    result = catalog.submit_batch([SubmitItem(other, STUDY)])[0]
    assert result.error.error_id == "info.already.exists"
    assert catalog.count_analyses(STUDY) == 1

    aid = catalog.submit(other, STUDY, allow_duplicates=True)
    md5 = payload["files"][0]["fileMd5sum"]
    rows = sql.run(catalog.tables, f"SELECT analysis_id FROM files WHERE file_md5sum = '{md5}'")[1]
    assert len(rows) == 2 and (aid,) in rows


def test_duplicate_md5_in_another_study_is_a_duplicate(catalog, payloads):
    catalog.create_study({"studyId": "XYZ"})
    payload = payloads.variant_call()
    catalog.submit(payload, STUDY)
    moved = dict(payload, studyId="XYZ")
    result = catalog.submit_batch([SubmitItem(moved, "XYZ")])[0]
    assert result.error.error_id == "info.already.exists"


def test_duplicate_file_names_are_refused(catalog, payloads):
    """Song silently kept one of two files with one fileName (they would share an objectId);
    songlake refuses the payload, and nothing is written."""
    f = payloads.file("a.vcf.gz")
    payload = payloads.variant_call(files=[f, dict(f), dict(f)])
    before = catalog.tables.versions()
    with pytest.raises(SchemaViolation) as caught:
        catalog.submit(payload, STUDY)
    found = {(p["pointer"], p["rule"]) for p in caught.value.problems}
    assert found >= {
        ("/files/1/fileName", "uniqueFileName"),
        ("/files/2/fileName", "uniqueFileName"),
    }
    assert catalog.tables.versions() == before
    assert count(catalog, "files") == 0


def test_reopened_catalog_serves_identical_documents(catalog, settings, payloads, upload):
    payload = payloads.variant_call(info={"k": [1, 2]})
    aid = catalog.submit(payload, STUDY)
    other = catalog.submit(
        payloads.variant_call(
            samples=[payloads.sample(tumour=False, sample="n1", specimen="nsp1")]
        ),
        STUDY,
    )
    upload(aid, payload)
    catalog.publish(STUDY, aid, actor="alice")

    reopened = Catalog(settings)
    for x in (aid, other):
        assert reopened.get_analysis(STUDY, x) == catalog.get_analysis(STUDY, x)
    assert reopened.history(STUDY, aid) == catalog.history(STUDY, aid)
    assert reopened.list_studies() == [STUDY]
    assert reopened.count_analyses(STUDY, ["PUBLISHED"]) == 1


def test_integral_float_file_size_reads_back_as_an_integer(catalog, settings, payloads):
    f = payloads.file("a.vcf.gz")
    f["fileSize"] = float(f["fileSize"])  # JSON Schema's "integer" accepts 52.0
    aid = catalog.submit(json.dumps(payloads.variant_call(files=[f])), STUDY)
    size = catalog.get_analysis(STUDY, aid)["files"][0]["fileSize"]
    assert size == int(f["fileSize"]) and isinstance(size, int)
    assert Catalog(settings).get_analysis(STUDY, aid) == catalog.get_analysis(STUDY, aid)
