"""Updates of an analysis' dynamic data (Song's PUT and PATCH), versions and time travel."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from catalog import sql
from catalog.catalog import Catalog
from catalog.errors import SonglakeError
from catalog.settings import load_settings
from tests.conftest import STUDY

NEW_EXPERIMENT = {"variantCallingTool": "gold bullet", "matchedNormalSampleSubmitterId": "n2"}


@pytest.fixture
def analysis(catalog, payloads):
    payload = payloads.variant_call(info={"origin": "lab A", "keep": 1}, pipeline="v1")
    return catalog.submit(payload, STUDY), payload


def refused(fn, *args, **kwargs) -> SonglakeError:
    with pytest.raises(SonglakeError) as info:
        fn(*args, **kwargs)
    return info.value


def data_of(catalog, aid, versions=None) -> dict:
    (row,) = sql.run(
        catalog.tables, f"SELECT data FROM analyses WHERE analysis_id = '{aid}'", versions=versions
    )[1]
    return json.loads(row[0])


def test_put_replaces_dynamic_data_and_keeps_version_one(catalog, analysis):
    aid, payload = analysis
    before = catalog.get_analysis(STUDY, aid)

    doc = catalog.update_analysis(
        STUDY,
        aid,
        {"analysisType": {"name": "variantCall"}, "experiment": NEW_EXPERIMENT, "notes": "re-run"},
        actor="alice",
    )

    assert doc["experiment"] == NEW_EXPERIMENT
    assert doc["notes"] == "re-run"
    for gone in ("info", "pipeline"):  # PUT replaces: keys not sent are gone
        assert gone not in doc
    assert doc["samples"] == before["samples"]
    assert doc["files"] == before["files"]
    assert doc["createdAt"] == before["createdAt"]
    assert doc["updatedAt"] > before["updatedAt"]
    assert doc["analysisState"] == "UNPUBLISHED"
    assert catalog.get_analysis(STUDY, aid) == doc

    versions = catalog.versions(STUDY, aid)
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["data"] == {k: payload[k] for k in ("experiment", "info", "pipeline")}
    assert versions[1]["data"] == {"experiment": NEW_EXPERIMENT, "notes": "re-run"}
    assert versions[1]["actor"] == "alice"
    assert Catalog(catalog.settings).get_analysis(STUDY, aid) == doc
    (count,) = sql.run(
        catalog.tables, f"SELECT count(*) FROM analysis_versions WHERE analysis_id = '{aid}'"
    )[1]
    assert count == (2,)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("samples", []),
        ("files", []),
        ("studyId", STUDY),
        ("analysisId", "x"),
        ("analysisState", "PUBLISHED"),
    ],
)
def test_put_refuses_forbidden_keys(catalog, analysis, key, value):
    aid, _ = analysis
    before = catalog.tables.versions()
    body = {"analysisType": {"name": "variantCall"}, "experiment": NEW_EXPERIMENT, key: value}
    err = refused(catalog.update_analysis, STUDY, aid, body)
    assert err.error_id == "schema.violation"
    assert f"/{key}" in {p["pointer"] for p in err.problems}
    assert catalog.tables.versions() == before
    assert len(catalog.versions(STUDY, aid)) == 1


def test_put_without_analysis_type(catalog, analysis):
    aid, _ = analysis
    before = catalog.tables.versions()
    err = refused(catalog.update_analysis, STUDY, aid, {"experiment": NEW_EXPERIMENT})
    assert err.error_id == "malformed.parameter"
    assert err.message == "The analysisType field cannot be null"
    assert catalog.tables.versions() == before


def test_put_validates_against_the_type(catalog, analysis):
    aid, _ = analysis
    err = refused(
        catalog.update_analysis,
        STUDY,
        aid,
        {"analysisType": {"name": "variantCall"}, "experiment": {}},
    )
    assert err.error_id == "schema.violation"
    assert {p["pointer"] for p in err.problems} == {
        "/experiment/matchedNormalSampleSubmitterId",
        "/experiment/variantCallingTool",
    }


def test_patch_is_a_json_merge_patch(catalog, analysis):
    aid, payload = analysis
    doc = catalog.patch_analysis(
        STUDY,
        aid,
        {"experiment": {"variantCallingTool": "gold bullet"}, "info": None, "added": {"a": 1}},
    )
    assert doc["experiment"] == {**payload["experiment"], "variantCallingTool": "gold bullet"}
    assert "info" not in doc  # null removes the key
    assert doc["pipeline"] == "v1"
    assert doc["added"] == {"a": 1}
    assert doc["analysisType"] == {"name": "variantCall", "version": 1}
    assert [v["version"] for v in catalog.versions(STUDY, aid)] == [1, 2]

    doc = catalog.patch_analysis(STUDY, aid, {"added": {"a": None, "b": 2}})
    assert doc["added"] == {"b": 2}
    assert len(catalog.versions(STUDY, aid)) == 3


def test_patch_that_breaks_the_schema_is_refused(catalog, analysis):
    aid, _ = analysis
    before = catalog.tables.versions()
    err = refused(catalog.patch_analysis, STUDY, aid, {"experiment": {"variantCallingTool": None}})
    assert err.error_id == "schema.violation"
    err = refused(catalog.patch_analysis, STUDY, aid, {"samples": []})
    assert err.error_id == "schema.violation"
    assert catalog.tables.versions() == before


def test_time_travel_by_catalog_version_and_by_time(catalog, analysis):
    aid, payload = analysis
    catalog_version = catalog.tables.version("commits")
    time.sleep(0.02)
    moment = datetime.now(UTC).isoformat()
    time.sleep(0.02)

    catalog.update_analysis(
        STUDY, aid, {"analysisType": {"name": "variantCall"}, "experiment": NEW_EXPERIMENT}
    )

    old = {k: payload[k] for k in ("experiment", "info", "pipeline")}
    assert data_of(catalog, aid) == {"experiment": NEW_EXPERIMENT}
    by_version = catalog.tables.versions_as_of(str(catalog_version))
    assert data_of(catalog, aid, by_version) == old
    by_time = catalog.tables.versions_as_of(moment)
    assert data_of(catalog, aid, by_time) == old
    assert by_time == by_version
    latest = catalog.tables.versions_as_of(str(catalog.tables.version("commits")))
    assert data_of(catalog, aid, latest) == {"experiment": NEW_EXPERIMENT}


def test_time_travel_before_a_registration_hides_it(catalog, payloads):
    catalog_version = catalog.tables.version("commits")
    aid = catalog.submit(payloads.variant_call(), STUDY)
    then = catalog.tables.versions_as_of(str(catalog_version))
    for table in ("analyses", "donors", "samples", "files"):
        assert sql.run(catalog.tables, f"SELECT count(*) FROM {table}", versions=then)[1] == [(0,)]
    assert sql.run(catalog.tables, "SELECT analysis_id FROM analyses")[1] == [(aid,)]


def test_time_travel_to_a_version_that_does_not_exist(catalog):
    err = refused(catalog.tables.versions_as_of, "999999")
    assert err.error_id == "malformed.parameter"
    err = refused(catalog.tables.versions_as_of, "yesterday")
    assert err.error_id == "malformed.parameter"


def test_reopen_after_compacting_updated_analyses(settings, payloads):
    compacting = load_settings(settings.root, compact_after_files=3)
    catalog = Catalog.init(compacting)
    catalog.create_study({"studyId": STUDY})
    ids = []
    for i in range(4):
        payload = payloads.variant_call(samples=[payloads.sample(f"s{i}", f"sp{i}", "d1")])
        ids.append(catalog.submit(payload, STUDY))
        catalog.update_analysis(
            STUDY,
            ids[-1],
            {"analysisType": {"name": "variantCall"}, "experiment": NEW_EXPERIMENT, "n": i},
        )
    catalog.committer.settle()  # compaction runs after the lease is let go, in the background
    assert catalog.tables.file_count("analyses") < 8  # compacted along the way
    reopened = Catalog(compacting)
    for i, aid in enumerate(ids):
        assert reopened.get_analysis(STUDY, aid) == catalog.get_analysis(STUDY, aid)
        assert reopened.get_analysis(STUDY, aid)["n"] == i


def test_suppressed_analysis_cannot_be_updated(catalog, analysis):
    aid, _ = analysis
    catalog.suppress(STUDY, aid)
    before = catalog.tables.versions()
    err = refused(
        catalog.update_analysis,
        STUDY,
        aid,
        {"analysisType": {"name": "variantCall"}, "experiment": NEW_EXPERIMENT},
    )
    assert err.error_id == "suppressed.state.transition"
    assert catalog.tables.versions() == before
    assert len(catalog.versions(STUDY, aid)) == 1
