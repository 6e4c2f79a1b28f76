"""Real analysis types and payloads (Song's tests, ICGC ARGO, the Overture quickstart) with the
outcome real Song gives for each, read from the shared fixtures folder (never copied here)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from catalog import Catalog, SubmitItem
from catalog.errors import SonglakeError
from catalog.settings import load_settings
from tests.conftest import FIXTURES, FIXTURES_MISSING, fixtures_present

if not fixtures_present():
    pytest.skip(FIXTURES_MISSING, allow_module_level=True)

MANIFEST = json.loads((FIXTURES / "MANIFEST.json").read_text("utf-8"))
# exact problem counts Song's own SchemaValidationTests expect (payloads/invalid/EXPECTED.md)
SONG_PROBLEM_COUNTS = {
    "payloads/invalid/song_sequencingread_invalid_enums.json": 7,
    "payloads/invalid/song_variantcall_missing_required.json": 4,
}


def load(rel: str):
    return json.loads((FIXTURES / rel).read_text("utf-8"))


def stem(entry: dict) -> str:
    return Path(entry["file"]).stem


def fixture_catalog(root: Path) -> Catalog:
    """A catalog set up as the fixtures' README says: studies, then every type not pre-seeded."""
    catalog = Catalog.init(load_settings(root))
    for study in MANIFEST["studies_to_create"]:
        catalog.create_study({"studyId": study})
    for entry in MANIFEST["analysis_types"]:
        if entry.get("preseeded_in_real_song"):
            continue
        catalog.register_type(load(entry["file"]))
    return catalog


@pytest.fixture(scope="module")
def template_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real-world-template") / "root"
    fixture_catalog(root)
    return root


@pytest.fixture
def catalog(tmp_path: Path, template_root: Path) -> Catalog:
    """Each test gets its own copy of the set-up root (setting it up takes a second)."""
    root = tmp_path / "root"
    shutil.copytree(template_root, root)
    return Catalog(load_settings(root))


def submit_valid(catalog: Catalog, entry: dict, index: int) -> str:
    payload = load(entry["file"])
    study = entry["studyId"]
    if entry.get("needs_own_study_or_fresh_db"):
        study = f"SONG-{index}"
        catalog.create_study({"studyId": study})
        payload["studyId"] = study
    return catalog.submit(payload, study, allow_duplicates="shares_fileMd5sum_with_group" in entry)


def test_analysis_types_register_as_version_one(catalog):
    for entry in MANIFEST["analysis_types"]:
        atype = catalog.registry.get(entry["name"])
        assert atype.version == 1, entry["name"]
        assert atype.file_types == list((entry.get("options") or {}).get("fileTypes") or [])
    assert set(catalog.registry.names()) == {e["name"] for e in MANIFEST["analysis_types"]}


def test_every_valid_payload_is_accepted_in_one_catalog(catalog):
    ids = {}
    for index, entry in enumerate(MANIFEST["payloads_valid"]):
        ids[stem(entry)] = submit_valid(catalog, entry, index)

    assert len(ids) == len(MANIFEST["payloads_valid"])
    for index, entry in enumerate(MANIFEST["payloads_valid"]):
        study = f"SONG-{index}" if entry.get("needs_own_study_or_fresh_db") else entry["studyId"]
        doc = catalog.get_analysis(study, ids[stem(entry)])
        payload = load(entry["file"])
        assert doc["analysisType"]["name"] == entry["analysisType"]["name"]
        assert doc["analysisState"] == "UNPUBLISHED"
        assert sorted(f["fileName"] for f in doc["files"]) == sorted(
            {f["fileName"] for f in payload["files"]}
        )
        assert sorted(s["submitterSampleId"] for s in doc["samples"]) == sorted(
            {s["submitterSampleId"] for s in payload["samples"]}
        )
    # entity reuse across payloads of one study (TEST-PR shares COLO-829 between payloads)
    reopened = Catalog(catalog.settings)
    for index, entry in enumerate(MANIFEST["payloads_valid"]):
        study = f"SONG-{index}" if entry.get("needs_own_study_or_fresh_db") else entry["studyId"]
        aid = ids[stem(entry)]
        assert reopened.get_analysis(study, aid) == catalog.get_analysis(study, aid)


def strip(doc):
    """A document without server ids, study ids and times."""
    volatile = {
        "analysisId",
        "objectId",
        "sampleId",
        "specimenId",
        "donorId",
        "studyId",
        "createdAt",
        "updatedAt",
    }
    if isinstance(doc, dict):
        return {k: strip(v) for k, v in doc.items() if k not in volatile}
    if isinstance(doc, list):
        return [strip(v) for v in doc]
    return doc


def test_valid_payloads_as_one_batch_then_export_and_resubmit(catalog):
    items = []
    for index, entry in enumerate(MANIFEST["payloads_valid"]):
        payload = load(entry["file"])
        study = entry["studyId"]
        if entry.get("needs_own_study_or_fresh_db"):
            study = f"SONG-{index}"
            catalog.create_study({"studyId": study})
            payload["studyId"] = study
        items.append(
            SubmitItem(payload, study, allow_duplicates="shares_fileMd5sum_with_group" in entry)
        )
    results = catalog.submit_batch(items)
    assert [r.error for r in results] == [None] * len(items)
    ids = [r.analysis_id for r in results]

    exported = catalog.export_analyses(ids)
    again = []
    for group in exported:
        target = f"R-{group['studyId']}"
        catalog.create_study({"studyId": target})
        for payload in group["payloads"]:
            moved = dict(copy.deepcopy(payload), studyId=target)
            again.append(SubmitItem(moved, target, allow_duplicates=True))
    resubmitted = catalog.submit_batch(again)
    assert [r.error for r in resubmitted] == [None] * len(ids)

    old = sorted((strip(catalog.find_analysis(a)) for a in ids), key=json.dumps)
    new = sorted((strip(catalog.find_analysis(r.analysis_id)) for r in resubmitted), key=json.dumps)
    assert new == old


def test_shared_md5_without_allow_duplicates(catalog):
    group = [
        e for e in MANIFEST["payloads_valid"] if e.get("shares_fileMd5sum_with_group") == "md5-A"
    ]
    assert len(group) == 2
    first, second = (load(e["file"]) for e in group)
    catalog.submit(first, group[0]["studyId"])
    before = catalog.tables.versions()
    with pytest.raises(SonglakeError) as info:
        catalog.submit(second, group[1]["studyId"])
    assert info.value.error_id == "info.already.exists"
    assert info.value.message == "File already exist"
    assert catalog.tables.versions() == before


def test_song_payloads_share_md5s_across_studies(catalog):
    group = [
        (i, e)
        for i, e in enumerate(MANIFEST["payloads_valid"])
        if e.get("shares_fileMd5sum_with_group") == "md5-B"
    ]
    first_index, first = group[0]
    submit_valid(catalog, first, first_index)
    for index, entry in group[1:]:
        payload = load(entry["file"])
        study = f"SONG-{index}"
        catalog.create_study({"studyId": study})
        payload["studyId"] = study
        with pytest.raises(SonglakeError) as info:
            catalog.submit(payload, study)
        assert info.value.error_id == "info.already.exists"


@pytest.mark.parametrize("entry", MANIFEST["payloads_invalid"], ids=stem)
def test_invalid_payload_gets_songs_error(catalog, entry):
    raw = (FIXTURES / entry["file"]).read_bytes()  # as sent over the wire
    before = catalog.tables.versions()
    with pytest.raises(SonglakeError) as info:
        catalog.submit(raw, entry["studyId"])
    assert info.value.error_id == entry["errorId"]
    if entry["errorId"] in ("malformed.parameter", "analysis.type.incorrect.version"):
        assert info.value.message == entry["message_hint"]
    expected_count = SONG_PROBLEM_COUNTS.get(entry["file"])
    if expected_count is not None:
        assert len(info.value.problems) == expected_count, info.value.problems
    assert catalog.tables.versions() == before
    assert catalog.count_analyses(entry["studyId"]) == 0


def test_invalid_version_without_enforce_latest_is_not_found(catalog):
    (entry,) = [
        e for e in MANIFEST["payloads_invalid"] if e["errorId"] == "analysis.type.incorrect.version"
    ]
    lax = Catalog(load_settings(catalog.settings.root, enforce_latest=False))
    with pytest.raises(SonglakeError) as info:
        lax.submit((FIXTURES / entry["file"]).read_bytes(), entry["studyId"])
    assert info.value.error_id == "analysis.type.not.found"


@pytest.mark.parametrize("entry", MANIFEST["analysis_types_invalid"], ids=stem)
def test_invalid_analysis_type_is_refused_and_stays_unregistered(catalog, entry):
    body = load(entry["file"])
    before = catalog.tables.versions()
    with pytest.raises(SonglakeError) as info:
        catalog.register_type(body)
    assert info.value.error_id == entry["errorId"]
    if "java_song_message" in entry and entry["errorId"] == "illegal.analysis.type.name":
        assert entry["java_song_message"].endswith(info.value.message)
    assert catalog.tables.versions() == before
    assert body["name"] not in catalog.registry.names()
    with pytest.raises(SonglakeError) as info:
        catalog.registry.get(body["name"])
    assert info.value.error_id in ("analysis.type.not.found", "malformed.parameter")
    # and a freshly opened catalog agrees
    assert body["name"] not in Catalog(catalog.settings).registry.names()
