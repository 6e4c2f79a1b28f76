"""Song's id search (song-api.md §1.2 #10): case-insensitive, unanchored regexes that must all
match the same (analysis x sample x file) row."""

from __future__ import annotations

import pytest

from catalog.catalog import Catalog
from catalog.errors import SonglakeError
from tests.conftest import STUDY


@pytest.fixture
def three(catalog, payloads):
    ids = {}
    for donor, sample, specimen in [
        ("DO-1", "SA-1", "SP-1"),
        ("DX1", "SA-2", "SP-2"),
        ("other", "SA-3", "SP-3"),
    ]:
        payload = payloads.variant_call(samples=[payloads.sample(sample, specimen, donor)])
        ids[donor] = catalog.submit(payload, STUDY)
    return ids


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"submitterDonorId": "do-1"}, ["DO-1"]),  # literal, case-insensitive
        ({"submitterDonorId": "D.1"}, ["DX1"]),  # '.' is regex syntax: any character
        ({"submitterDonorId": "^d"}, ["DO-1", "DX1"]),
        ({"submitterDonorId": "OTHER"}, ["other"]),
        ({"submitterSampleId": "sa-[12]"}, ["DO-1", "DX1"]),
        ({"submitterSpecimenId": "SP-3", "submitterDonorId": "other"}, ["other"]),
        ({"submitterSpecimenId": "SP-3", "submitterDonorId": "DO"}, []),  # not the same row
        ({}, ["DO-1", "DX1", "other"]),
    ],
)
def test_search_ids(catalog, three, params, expected):
    found = catalog.search_ids(STUDY, **params)
    assert found == sorted(three[d] for d in expected)
    assert Catalog(catalog.settings).search_ids(STUDY, **params) == found  # reopened: same


def test_search_by_file_and_entity_ids(catalog, three):
    doc = catalog.get_analysis(STUDY, three["DX1"])
    object_id = doc["files"][0]["objectId"]
    assert catalog.search_ids(STUDY, fileId=object_id.upper()) == [three["DX1"]]
    assert catalog.search_ids(STUDY, donorId=doc["samples"][0]["donor"]["donorId"]) == [
        three["DX1"]
    ]


def test_search_in_a_missing_study_and_bad_regex(catalog, three):
    with pytest.raises(SonglakeError) as info:
        catalog.search_ids("NOPE", submitterDonorId="x")
    assert info.value.error_id == "study.id.does.not.exist"
    with pytest.raises(SonglakeError) as info:
        catalog.search_ids(STUDY, submitterDonorId="(")
    assert info.value.error_id == "search.term.syntax"
