"""The publish lifecycle: transitions, history rows, publish times and storage checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catalog import sql
from catalog.catalog import Catalog
from catalog.errors import SonglakeError
from catalog.settings import load_settings
from catalog.write.lifecycle import Transition
from tests.conftest import STUDY


@pytest.fixture
def ready(catalog, submitted, upload):
    """A registered analysis whose files are in object storage."""
    aid, payload = submitted
    upload(aid, payload)
    return aid


def meta_path(catalog: Catalog, object_id: str) -> Path:
    return Path(catalog.settings.objects_dir) / "data" / f"{object_id}.meta"


def test_publish_unpublish_publish_suppress(catalog, ready):
    aid = ready
    assert catalog.publish(STUDY, aid, actor="alice", reason="first release") == (
        f"AnalysisId {aid} successfully published"
    )
    assert catalog.unpublish(STUDY, aid, actor="bob", reason="wrong tool") == (
        f"AnalysisId {aid} successfully unpublished"
    )
    catalog.publish(STUDY, aid, actor="alice", reason="fixed")
    assert catalog.suppress(STUDY, aid, actor="carol", reason="consent withdrawn") == (
        f"AnalysisId {aid} was suppressed"
    )

    history = catalog.history(STUDY, aid)
    assert [(h["initialState"], h["updatedState"], h["actor"], h["reason"]) for h in history] == [
        ("UNPUBLISHED", "PUBLISHED", "alice", "first release"),
        ("PUBLISHED", "UNPUBLISHED", "bob", "wrong tool"),
        ("UNPUBLISHED", "PUBLISHED", "alice", "fixed"),
        ("PUBLISHED", "SUPPRESSED", "carol", "consent withdrawn"),
    ]
    times = [h["updatedAt"] for h in history]
    assert times == sorted(times)

    doc = catalog.get_analysis(STUDY, aid)
    assert doc["analysisState"] == "SUPPRESSED"
    assert doc["analysisStateHistory"] == [
        {k: h[k] for k in ("initialState", "updatedState", "updatedAt")} for h in history
    ]
    assert doc["firstPublishedAt"] == times[0]
    assert doc["publishedAt"] == times[2]
    assert doc["updatedAt"] == times[3]

    rows = sql.run(
        catalog.tables,
        "SELECT initial_state, updated_state, actor, reason FROM analysis_state_history "
        "ORDER BY updated_at",
    )[1]
    assert rows == [
        (h["initialState"], h["updatedState"], h["actor"], h["reason"]) for h in history
    ]
    (state,) = sql.run(catalog.tables, "SELECT analysis_state FROM analyses")[1]
    assert state == ("SUPPRESSED",)
    assert Catalog(catalog.settings).get_analysis(STUDY, aid) == doc


def test_publish_times_persist_after_unpublish(catalog, ready):
    aid = ready
    catalog.publish(STUDY, aid)
    first = catalog.get_analysis(STUDY, aid)
    assert first["firstPublishedAt"] == first["publishedAt"] is not None
    catalog.publish(STUDY, aid)  # re-publishing adds a row and moves publishedAt only
    again = catalog.get_analysis(STUDY, aid)
    assert again["firstPublishedAt"] == first["firstPublishedAt"]
    assert again["publishedAt"] > first["publishedAt"]
    catalog.unpublish(STUDY, aid)
    after = catalog.get_analysis(STUDY, aid)
    assert after["analysisState"] == "UNPUBLISHED"
    assert (after["firstPublishedAt"], after["publishedAt"]) == (
        again["firstPublishedAt"],
        again["publishedAt"],
    )
    assert len(after["analysisStateHistory"]) == 3


def test_noop_unpublish_is_recorded(catalog, submitted):
    aid, _ = submitted
    catalog.unpublish(STUDY, aid)
    doc = catalog.get_analysis(STUDY, aid)
    assert [(h["initialState"], h["updatedState"]) for h in doc["analysisStateHistory"]] == [
        ("UNPUBLISHED", "UNPUBLISHED")
    ]
    assert doc["firstPublishedAt"] is None and doc["publishedAt"] is None


def test_suppressed_analysis_cannot_be_unpublished_or_published(catalog, ready):
    aid = ready
    catalog.publish(STUDY, aid)
    catalog.suppress(STUDY, aid)
    before = catalog.history(STUDY, aid)
    version = catalog.tables.version("analysis_state_history")

    for action, target in ((catalog.unpublish, "UNPUBLISHED"), (catalog.publish, "PUBLISHED")):
        with pytest.raises(SonglakeError) as info:
            action(STUDY, aid)
        assert info.value.error_id == "suppressed.state.transition"
        assert info.value.message == (
            f"Cannot change the analysis state for analysisId '{aid}' from 'SUPPRESSED' to "
            f"'{target}'"
        )
    assert catalog.history(STUDY, aid) == before
    assert catalog.tables.version("analysis_state_history") == version
    assert catalog.get_analysis(STUDY, aid)["analysisState"] == "SUPPRESSED"


def test_suppress_from_suppressed_is_recorded(catalog, submitted):
    aid, _ = submitted
    catalog.suppress(STUDY, aid)
    catalog.suppress(STUDY, aid, reason="again")
    history = catalog.history(STUDY, aid)
    assert [(h["initialState"], h["updatedState"], h["reason"]) for h in history] == [
        ("UNPUBLISHED", "SUPPRESSED", None),
        ("SUPPRESSED", "SUPPRESSED", "again"),
    ]
    doc = catalog.get_analysis(STUDY, aid)
    assert doc["firstPublishedAt"] is None


def test_publish_under_enforce_latest_when_a_newer_type_version_exists(catalog, ready):
    aid = ready
    catalog.register_type(
        {"name": "variantCall", "schema": catalog.registry.get("variantCall").schema}
    )
    with pytest.raises(SonglakeError) as info:
        catalog.publish(STUDY, aid)
    assert info.value.error_id == "analysis.type.incorrect.version"
    assert info.value.message == (
        "Must use the latest version '2' while enforceLatest=true, but using version '1' of "
        "analysisType 'variantCall' instead"
    )
    assert catalog.get_analysis(STUDY, aid)["analysisState"] == "UNPUBLISHED"

    lax = Catalog(load_settings(catalog.settings.root, enforce_latest=False))
    lax.publish(STUDY, aid)
    assert lax.get_analysis(STUDY, aid)["analysisState"] == "PUBLISHED"


def test_ignore_undefined_md5(catalog, ready):
    aid = ready
    oid = catalog.get_analysis(STUDY, aid)["files"][0]["objectId"]
    meta = meta_path(catalog, oid)
    spec = json.loads(meta.read_text())
    spec["objectMd5"] = None
    meta.write_text(json.dumps(spec))

    with pytest.raises(SonglakeError) as info:
        catalog.publish(STUDY, aid)
    assert info.value.error_id == "mismatching.storage.object.checksums"
    assert oid in info.value.message
    assert catalog.get_analysis(STUDY, aid)["analysisState"] == "UNPUBLISHED"

    catalog.publish(STUDY, aid, ignore_undefined_md5=True)
    assert catalog.get_analysis(STUDY, aid)["analysisState"] == "PUBLISHED"


def test_ignore_undefined_md5_does_not_ignore_a_wrong_md5(catalog, ready):
    aid = ready
    oid = catalog.get_analysis(STUDY, aid)["files"][0]["objectId"]
    meta = meta_path(catalog, oid)
    spec = json.loads(meta.read_text())
    spec["objectMd5"] = "0" * 32
    meta.write_text(json.dumps(spec))
    with pytest.raises(SonglakeError) as info:
        catalog.publish(STUDY, aid, ignore_undefined_md5=True)
    assert info.value.error_id == "mismatching.storage.object.checksums"


def test_zero_byte_file_can_never_be_published(catalog, payloads, upload):
    payload = payloads.variant_call(files=[payloads.file("empty.vcf", content=b"")])
    aid = catalog.submit(payload, STUDY)
    (stored,) = upload(aid, payload)
    assert stored["objectSize"] == 0
    for ignore in (False, True):
        with pytest.raises(SonglakeError) as info:
            catalog.publish(STUDY, aid, ignore_undefined_md5=ignore)
        assert info.value.error_id == "invalid.storage.download.response"
    doc = catalog.get_analysis(STUDY, aid)
    assert doc["analysisState"] == "UNPUBLISHED"
    assert doc["analysisStateHistory"] == []


def test_change_states_is_one_history_commit(catalog, payloads, upload):
    ids = []
    for i in range(3):
        payload = payloads.variant_call(samples=[payloads.sample(f"s{i}", f"sp{i}", "d1")])
        ids.append(catalog.submit(payload, STUDY))
        upload(ids[-1], payload)
    version = catalog.tables.version("analysis_state_history")

    outcomes = catalog.change_states(
        [
            Transition(STUDY, ids[0], "publish", actor="bot"),
            Transition(STUDY, ids[1], "publish", actor="bot"),
            Transition(STUDY, ids[2], "suppress", actor="bot", reason="bad"),
            Transition(STUDY, ids[2], "publish", actor="bot"),  # refused: suppressed just above
            Transition(STUDY, ids[0], "unpublish", actor="bot"),
            Transition(STUDY, "00000000-0000-4000-8000-000000000000", "publish"),
        ]
    )

    assert outcomes[:3] == [
        f"AnalysisId {ids[0]} successfully published",
        f"AnalysisId {ids[1]} successfully published",
        f"AnalysisId {ids[2]} was suppressed",
    ]
    assert outcomes[3].error_id == "suppressed.state.transition"
    assert outcomes[4] == f"AnalysisId {ids[0]} successfully unpublished"
    assert outcomes[5].error_id == "analysis.id.not.found"
    assert catalog.tables.version("analysis_state_history") == version + 1
    states = {a: catalog.get_analysis(STUDY, a)["analysisState"] for a in ids}
    assert states == {ids[0]: "UNPUBLISHED", ids[1]: "PUBLISHED", ids[2]: "SUPPRESSED"}
    first = catalog.history(STUDY, ids[0])
    assert [(h["initialState"], h["updatedState"]) for h in first] == [
        ("UNPUBLISHED", "PUBLISHED"),
        ("PUBLISHED", "UNPUBLISHED"),
    ]
    assert {h["actor"] for h in first} == {"bot"}
    (count,) = sql.run(catalog.tables, "SELECT count(*) FROM analysis_state_history")[1]
    assert count == (4,)
    reopened = Catalog(catalog.settings)
    assert {a: reopened.get_analysis(STUDY, a)["analysisState"] for a in ids} == states
    assert reopened.history(STUDY, ids[0]) == first


def test_two_transitions_of_one_analysis_in_a_batch_are_ordered(catalog, ready):
    aid = ready
    outcomes = catalog.change_states(
        [
            Transition(STUDY, aid, "publish"),
            Transition(STUDY, aid, "unpublish"),
            Transition(STUDY, aid, "publish"),
            Transition(STUDY, aid, "unpublish"),
        ]
    )
    assert not any(isinstance(o, SonglakeError) for o in outcomes)
    times = [h["updatedAt"] for h in catalog.history(STUDY, aid)]
    assert len(set(times)) == 4  # each transition has its own time, in order
    rows = sql.run(catalog.tables, "SELECT analysis_state FROM analyses")[1]
    assert rows == [("UNPUBLISHED",)]
