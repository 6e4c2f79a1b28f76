"""The API foundation: Song's routes over a real catalog, the SongError envelope, a real server."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import urllib.error
import urllib.request

from api.app import create_app
from api.errors import STATUS
from api.server import ApiServer
from catalog.catalog import Catalog
from tests.api.conftest import assert_song_error
from tests.conftest import STUDY


def test_is_alive(client):
    for path in ("/isAlive", "/isAlive/"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.get_json() is True


def test_analysis_lifecycle_over_http(client, catalog, payloads):
    payload = payloads.variant_call()
    response = client.post(
        f"/submit/{STUDY}", data=json.dumps(payload), content_type="application/json"
    )
    assert response.status_code == 200, response.get_json()
    analysis_id = response.get_json()["analysisId"]
    assert response.get_json() == {"analysisId": analysis_id, "status": "OK"}

    doc = client.get(f"/studies/{STUDY}/analysis/{analysis_id}").get_json()
    assert doc["analysisId"] == analysis_id
    assert doc["analysisState"] == "UNPUBLISHED"
    files = client.get(f"/studies/{STUDY}/analysis/{analysis_id}/files").get_json()
    assert [f["fileName"] for f in files] == ["a.vcf.gz"]

    publish = f"/studies/{STUDY}/analysis/publish/{analysis_id}"
    refused = client.put(publish + "?ignoreUndefinedMd5=false")
    body = assert_song_error(refused, 409, "missing.storage.objects")
    assert body["httpStatusName"] == "CONFLICT"
    assert body["debugMessage"] == "N/A"
    assert body["requestUrl"].endswith(publish + "?ignoreUndefinedMd5=false")
    assert files[0]["objectId"] in body["message"]
    assert catalog.get_analysis(STUDY, analysis_id)["analysisState"] == "UNPUBLISHED"

    catalog.upload(analysis_id, payloads.write_files(payload))
    published = client.put(publish)
    assert published.status_code == 200
    assert published.get_json() == {"message": f"AnalysisId {analysis_id} successfully published"}

    listing = f"/studies/{STUDY}/analysis"
    assert [a["analysisId"] for a in client.get(listing).get_json()] == [analysis_id]
    assert client.get(listing + "?analysisStates=UNPUBLISHED").get_json() == []
    both = client.get(listing + "?analysisStates=UNPUBLISHED,PUBLISHED").get_json()
    repeated = client.get(listing + "?analysisStates=UNPUBLISHED&analysisStates=PUBLISHED")
    assert [a["analysisId"] for a in both] == [analysis_id]
    assert repeated.get_json() == both

    page = client.get(listing + "/paginated?limit=10&offset=0").get_json()
    assert page["totalAnalyses"] == 1 and page["currentTotalAnalyses"] == 1
    assert page["analyses"][0]["analysisId"] == analysis_id
    found = client.get(listing + "/search/id?submitterDonorId=D1").get_json()
    assert [a["analysisId"] for a in found] == [analysis_id]
    assert client.get(listing + "/search/id?submitterDonorId=nobody").get_json() == []

    unpublished = client.put(f"/studies/{STUDY}/analysis/unpublish/{analysis_id}")
    assert unpublished.get_json() == {
        "message": f"AnalysisId {analysis_id} successfully unpublished"
    }
    suppressed = client.put(f"/studies/{STUDY}/analysis/suppress/{analysis_id}/")
    assert suppressed.get_json() == {"message": f"AnalysisId {analysis_id} was suppressed"}
    assert catalog.get_analysis(STUDY, analysis_id)["analysisState"] == "SUPPRESSED"
    assert_song_error(client.put(publish), 400, "suppressed.state.transition")


def test_studies(client, catalog):
    created = client.post("/studies/XYZ234/", json={"studyId": "XYZ234", "name": "second"})
    assert created.status_code == 200
    assert created.get_json() == {"message": "Successfully created study 'XYZ234'"}
    assert catalog.get_study("XYZ234")["name"] == "second"
    assert client.post("/studies/NOSLASH", json={}).status_code == 200  # slash optional
    assert client.get("/studies/all").get_json() == sorted([STUDY, "XYZ234", "NOSLASH"])
    assert client.get("/studies/XYZ234").get_json() == {"studyId": "XYZ234", "name": "second"}
    assert_song_error(client.post("/studies/XYZ234/", json={}), 409, "study.already.exists")
    assert_song_error(client.post("/studies/A/", json={"studyId": "B"}), 409, "study.id.mismatch")
    assert_song_error(client.post("/studies/C/", data="{"), 422, "payload.parsing")


def test_unknown_study_is_404(client):
    for path in ("/studies/NOPE", "/studies/NOPE/analysis", "/studies/NOPE/analysis/paginated"):
        body = assert_song_error(client.get(path), 404, "study.id.does.not.exist")
        assert body["message"].endswith("The studyId 'NOPE' does not exist")
    assert_song_error(client.post("/submit/NOPE", data="{}"), 404, "study.id.does.not.exist")


def test_unknown_route_and_wrong_method(client):
    body = assert_song_error(client.get("/no/such/route?x=1"), 404, "not.found")
    assert body["requestUrl"] == "http://localhost/no/such/route?x=1"
    wrong = client.delete("/isAlive")
    assert_song_error(wrong, 405, "method.not.allowed")
    assert "GET" in wrong.headers["Allow"]
    assert_song_error(client.get(f"/submit/{STUDY}"), 405, "method.not.allowed")


def test_bad_input_is_refused(client, payloads):
    body = assert_song_error(
        client.post(f"/submit/{STUDY}", data="{not json"), 422, "payload.parsing"
    )
    assert "Unable to read the input payload" in body["message"]
    assert body["httpStatusName"] == "UNPROCESSABLE_ENTITY"
    assert_song_error(
        client.get(f"/studies/{STUDY}/analysis?analysisStates=FOO"), 400, "malformed.parameter"
    )
    assert_song_error(
        client.get(f"/studies/{STUDY}/analysis?analysisStates=published"),
        400,
        "malformed.parameter",
    )
    for query in ("limit=ten", "offset=-1", "analysisStates=FOO"):
        assert_song_error(
            client.get(f"/studies/{STUDY}/analysis/paginated?{query}"), 400, "malformed.parameter"
        )
    submit = f"/submit/{STUDY}?allowDuplicates=maybe"
    assert_song_error(
        client.post(submit, data=json.dumps(payloads.variant_call())), 400, "malformed.parameter"
    )
    invalid = payloads.variant_call()
    del invalid["files"]
    body = assert_song_error(
        client.post(f"/submit/{STUDY}", data=json.dumps(invalid)), 400, "schema.violation"
    )
    assert body["problems"] and {"pointer", "rule", "message"} <= set(body["problems"][0])


def test_duplicates_need_allow_duplicates(client, payloads):
    payload = json.dumps(payloads.variant_call())
    assert client.post(f"/submit/{STUDY}", data=payload).status_code == 200
    assert_song_error(client.post(f"/submit/{STUDY}", data=payload), 409, "info.already.exists")
    again = client.post(f"/submit/{STUDY}?allowDuplicates=true", data=payload)
    assert again.status_code == 200 and again.get_json()["status"] == "OK"


def test_unexpected_error_hides_internals(client, catalog, monkeypatch, caplog):
    def broken() -> list[str]:
        raise RuntimeError("secret detail /srv/private")

    monkeypatch.setattr(catalog, "list_studies", broken)
    with caplog.at_level(logging.ERROR, logger="songlake.api"):
        response = client.get("/studies/all")
    body = assert_song_error(response, 500, "unknown.error")
    assert "secret" not in response.get_data(as_text=True)
    assert body["httpStatusName"] == "INTERNAL_SERVER_ERROR"
    incident = body["debugMessage"].removeprefix("incident ")
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert logged and logged[0].exc_info is not None


def test_schemas(client):
    page = client.get("/schemas").get_json()
    assert page["limit"] == 20 and page["offset"] == 0 and page["count"] == 2
    assert sorted(t["name"] for t in page["resultSet"]) == ["sequencingRead", "variantCall"]
    assert all("schema" in t for t in page["resultSet"])
    hidden = client.get("/schemas?hideSchema=true&names=variantCall").get_json()
    assert hidden["count"] == 1 and "schema" not in hidden["resultSet"][0]
    by_name = client.get("/schemas?sort=name&sortOrder=asc&limit=1&hideSchema=true").get_json()
    assert by_name["count"] == 2 and [t["name"] for t in by_name["resultSet"]] == ["sequencingRead"]
    assert_song_error(client.get("/schemas?versions=0"), 400, "malformed.parameter")
    assert_song_error(client.get("/schemas?sort=size"), 400, "malformed.parameter")

    rendered = client.get("/schemas/variantCall").get_json()
    assert rendered["name"] == "variantCall" and rendered["version"] == 1
    assert {"samples", "files", "experiment"} <= set(rendered["schema"]["properties"])
    raw = client.get("/schemas/variantCall?unrenderedOnly=true").get_json()
    assert "samples" not in raw["schema"]["properties"]
    assert_song_error(client.get("/schemas/nope"), 404, "analysis.type.not.found")
    assert_song_error(client.get("/schemas/variantCall?version=2"), 404, "analysis.type.not.found")
    assert_song_error(client.get("/schemas/variantCall?version=x"), 400, "malformed.parameter")
    assert client.get("/schemas/registration").get_json()["type"] == "object"

    new = {"name": "variantCall", "schema": raw["schema"], "options": {"fileTypes": ["VCF"]}}
    registered = client.post("/schemas", json=new)
    assert registered.status_code == 200, registered.get_json()
    assert registered.get_json()["version"] == 2
    assert registered.get_json()["options"] == {"fileTypes": ["VCF"]}
    latest = client.get("/schemas?names=variantCall&hideSchema=true").get_json()
    assert [t["version"] for t in latest["resultSet"]] == [2, 1]  # newest first by default


def test_other_machines_commits_show_up_per_interval(catalog, settings, tmp_path):
    eager = create_app(catalog, settings=dataclasses.replace(settings, refresh_interval=0))
    lazy = create_app(catalog, settings=dataclasses.replace(settings, refresh_interval=3600))
    eager_client, lazy_client = eager.test_client(), lazy.test_client()
    assert lazy_client.get("/studies/all").status_code == 200  # refreshes now, then not for 1 h

    # another machine: its own read model file, so only the Delta log carries its commit here
    other_machine = Catalog(dataclasses.replace(settings, local_state_dir=str(tmp_path / "m2")))
    other_machine.create_study({"studyId": "OTHER"})

    assert lazy_client.get("/studies/OTHER").status_code == 404
    assert eager_client.get("/studies/OTHER").get_json() == {"studyId": "OTHER"}
    assert lazy_client.get("/studies/OTHER").status_code == 200  # one machine, one file


def test_processes_on_one_machine_share_the_read_model_file(catalog, settings):
    other_process = Catalog(settings)
    other_process.create_study({"studyId": "SHARED"})
    # no refresh here: the other process applied its commit to the file both read
    assert catalog.get_study("SHARED") == {"studyId": "SHARED"}
    assert other_process.model.path == catalog.model.path


def test_every_error_id_has_a_status():
    assert STATUS["unknown.error"] == 500
    assert STATUS["payload.parsing"] == 422
    assert STATUS["missing.storage.objects"] == 409
    assert STATUS["study.id.does.not.exist"] == 404
    assert STATUS["malformed.parameter"] == 400
    assert all(400 <= code < 600 for code in STATUS.values())


def test_real_server_answers(catalog, no_leaked_threads):
    server = ApiServer(create_app(catalog), "127.0.0.1", 0, threads=2)
    thread = threading.Thread(target=server.run, name="songlake-test-server")
    thread.start()
    try:
        with urllib.request.urlopen(server.url + "/isAlive", timeout=10) as response:
            assert response.status == 200
            assert json.load(response) is True
        try:
            urllib.request.urlopen(server.url + "/studies/NOPE", timeout=10)
            raise AssertionError("expected a 404")
        except urllib.error.HTTPError as exc:
            with exc:
                assert exc.code == 404
                assert json.load(exc)["errorId"] == "study.id.does.not.exist"
    finally:
        server.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_body_over_the_limit_is_413(catalog, settings, token):
    app = create_app(catalog, settings=dataclasses.replace(settings, max_payload_bytes=100))
    response = app.test_client().post(
        f"/submit/{STUDY}",
        data="{" + " " * 200 + "}",
        headers={"Authorization": f"Bearer {token}"},
    )
    body = assert_song_error(response, 413, "payload.too.large")
    assert body["httpStatusName"] == "PAYLOAD_TOO_LARGE"
