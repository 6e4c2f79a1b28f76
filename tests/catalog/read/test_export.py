"""Export: Song's resubmittable payloads (song-api.md §9.3)."""

from __future__ import annotations

import copy
import json

import pytest

from catalog.catalog import Catalog
from catalog.errors import SonglakeError
from catalog.read.export import write_export
from tests.conftest import STUDY

SERVER_KEYS = {
    "analysisId",
    "objectId",
    "sampleId",
    "specimenId",
    "donorId",
    "analysisState",
    "createdAt",
    "updatedAt",
    "firstPublishedAt",
    "publishedAt",
    "analysisStateHistory",
}
# what may differ between an analysis and its resubmission into another study
VOLATILE = SERVER_KEYS | {"studyId"}


def strip(doc):
    """A document without server ids, study ids and times."""
    if isinstance(doc, dict):
        return {k: strip(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [strip(v) for v in doc]
    return doc


def keys_everywhere(doc, path="") -> list[tuple[str, str]]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((path, k))
            out.extend(keys_everywhere(v, f"{path}/{k}"))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(keys_everywhere(v, f"{path}/{i}"))
    return out


@pytest.fixture
def populated(catalog, payloads, upload):
    """Three analyses of varied shape and state; returns their ids."""
    rich_sample = payloads.sample(extra=5, info={"size": 5})
    rich_sample["donor"]["age"] = 34
    rich_sample["specimen"]["site"] = "lung"
    rich = payloads.variant_call(
        samples=[rich_sample],
        files=[
            payloads.file("a.vcf.gz", info={"colour": "red"}),
            payloads.file("a.vcf.gz.tbi", fileType="TBI", fileAccess="controlled"),
        ],
        info={"description": "rich"},
        pipeline={"name": "x", "steps": [1, 2]},
    )
    normal = payloads.variant_call(
        samples=[payloads.sample("n1", "nsp1", "d2", tumour=False, extra=5, info={"size": 5})]
    )
    two = payloads.variant_call(
        samples=[
            payloads.sample(extra=5, info={"size": 5}, specimen="sp1"),
            payloads.sample("s9", "sp9", "d9", gender="Other"),
        ]
    )
    two["samples"][0]["donor"]["age"] = 34
    two["samples"][0]["specimen"]["site"] = "lung"
    ids = [catalog.submit(p, STUDY) for p in (rich, normal, two)]
    upload(ids[0], rich)
    catalog.publish(STUDY, ids[0])
    catalog.suppress(STUDY, ids[2])
    return ids


def test_export_covers_every_state(catalog, populated):
    (group,) = catalog.export_study(STUDY)
    assert group["studyId"] == STUDY
    assert len(group["payloads"]) == 3


def test_exported_payloads_carry_no_server_ids(catalog, populated):
    (group,) = catalog.export_study(STUDY)
    for payload in group["payloads"]:
        keys = keys_everywhere(payload)
        assert not {k for _, k in keys} & SERVER_KEYS
        # studyId only at the top: not on files, donors or anything nested
        assert [p for p, k in keys if k == "studyId"] == [""]
        assert set(payload["analysisType"]) == {"name", "version"}
        for s in payload["samples"]:
            assert "matchedNormalSubmitterSampleId" in s


def test_matched_normal_kept_even_when_null(catalog, populated):
    (group,) = catalog.export_study(STUDY)
    normals = [
        s
        for p in group["payloads"]
        for s in p["samples"]
        if s["specimen"]["tumourNormalDesignation"] == "Normal"
    ]
    assert normals
    for s in normals:
        assert s["matchedNormalSubmitterSampleId"] is None


def test_exported_payloads_are_resubmittable(catalog, populated):
    (group,) = catalog.export_study(STUDY)
    catalog.create_study({"studyId": "COPY1"})
    new_ids = []
    for payload in group["payloads"]:
        moved = copy.deepcopy(payload)
        moved["studyId"] = "COPY1"
        new_ids.append(catalog.submit(moved, "COPY1", allow_duplicates=True))

    old_docs = sorted((strip(catalog.get_analysis(STUDY, a)) for a in populated), key=json.dumps)
    new_docs = sorted((strip(catalog.get_analysis("COPY1", a)) for a in new_ids), key=json.dumps)
    assert new_docs == old_docs
    for aid in new_ids:
        doc = catalog.get_analysis("COPY1", aid)
        assert doc["analysisState"] == "UNPUBLISHED"
        assert {s["donor"]["studyId"] for s in doc["samples"]} == {"COPY1"}
        assert {f["studyId"] for f in doc["files"]} == {"COPY1"}

    # and a re-export of the copy gives the same payloads, studyId aside
    (copied,) = catalog.export_study("COPY1")
    again = sorted((strip(p) for p in copied["payloads"]), key=json.dumps)
    assert again == sorted((strip(p) for p in group["payloads"]), key=json.dumps)


def test_export_is_json_and_written_per_analysis(catalog, populated, tmp_path):
    docs = catalog.export_docs(study_id=STUDY)
    groups = catalog.export_analyses([d["analysisId"] for d in docs])
    assert groups == catalog.export_study(STUDY)
    written = write_export(groups, docs, tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(f"{a}.json" for a in populated)
    for path in written:
        payload = json.loads(path.read_text("utf-8"))
        assert payload["studyId"] == STUDY


def test_export_of_empty_and_unknown(catalog):
    catalog.create_study({"studyId": "EMPTY"})
    assert catalog.export_study("EMPTY") == [{"studyId": "EMPTY", "payloads": []}]
    with pytest.raises(SonglakeError) as info:
        catalog.export_study("NOPE")
    assert info.value.error_id == "study.id.does.not.exist"
    with pytest.raises(SonglakeError) as info:
        catalog.export_analyses(["00000000-0000-4000-8000-000000000000"])
    assert info.value.error_id == "analysis.id.not.found"


def test_reopened_catalog_exports_the_same(catalog, populated):
    assert Catalog(catalog.settings).export_study(STUDY) == catalog.export_study(STUDY)
