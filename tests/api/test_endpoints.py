"""Song's endpoints beyond the lifecycle: entities, files, export, Score's /entities, updates,
portal search, SQL, health, version and the OpenAPI document."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from api.app import create_app
from api.auth import ensure_admin_token
from api.openapi import documented, openapi_path
from catalog import sql
from catalog.catalog import Catalog
from catalog.model import entity_id
from tests.api.conftest import assert_song_error, snapshot
from tests.conftest import STUDY


@pytest.fixture
def client(catalog: Catalog) -> FlaskClient:
    token = ensure_admin_token(catalog.settings)[0].read_text().strip()
    client = create_app(catalog).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def _submit(client, payload) -> str:
    response = client.post(f"/submit/{STUDY}", data=json.dumps(payload))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["analysisId"]


def test_donor_specimen_sample_by_id(client, catalog, payloads):
    analysis_id = _submit(client, payloads.variant_call())
    doc = catalog.get_analysis(STUDY, analysis_id)
    sample = doc["samples"][0]
    donor_id = entity_id(STUDY, "d1")
    assert sample["donor"]["donorId"] == donor_id
    donor = client.get(f"/studies/{STUDY}/donors/{donor_id}").get_json()
    assert donor == sample["donor"]
    specimen = client.get(f"/studies/{STUDY}/specimens/{sample['specimenId']}").get_json()
    assert specimen == sample["specimen"]
    got = client.get(f"/studies/{STUDY}/samples/{sample['sampleId']}").get_json()
    assert got == {k: v for k, v in sample.items() if k not in ("specimen", "donor")}

    catalog.create_study({"studyId": "OTHER"})
    assert_song_error(client.get(f"/studies/{STUDY}/donors/nope"), 404, "donor.does.not.exist")
    assert_song_error(
        client.get(f"/studies/{STUDY}/specimens/nope"), 404, "specimen.does.not.exist"
    )
    assert_song_error(client.get(f"/studies/{STUDY}/samples/nope"), 404, "sample.does.not.exist")
    assert_song_error(
        client.get(f"/studies/OTHER/donors/{donor_id}"), 400, "entity.not.related.to.study"
    )
    assert_song_error(
        client.get(f"/studies/NOPE/donors/{donor_id}"), 404, "study.id.does.not.exist"
    )

    tree = client.get(f"/studies/{STUDY}/all").get_json()
    assert tree["studyId"] == STUDY
    assert [d["donorId"] for d in tree["donors"]] == [donor_id]
    assert tree["donors"][0]["specimens"][0]["samples"][0]["sampleId"] == sample["sampleId"]

    # every donor, specimen and sample is used by an analysis: deletes are refused, nothing changes
    before = snapshot(catalog)
    for kind, eid in (
        ("donors", donor_id),
        ("specimens", sample["specimenId"]),
        ("samples", sample["sampleId"]),
    ):
        body = assert_song_error(
            client.delete(f"/studies/{STUDY}/{kind}/{eid}"),
            422,
            f"{kind[:-1]}.repository.delete.record",
        )
        assert analysis_id in body["message"]
    assert_song_error(
        client.delete(f"/studies/{STUDY}/donors/{donor_id},nope"), 404, "donor.does.not.exist"
    )
    assert snapshot(catalog) == before


def test_file_get_update_delete(client, catalog, payloads, upload):
    payload = payloads.variant_call(
        files=[payloads.file("a.vcf.gz"), payloads.file("a.vcf.gz.tbi", fileType="TBI")]
    )
    analysis_id = _submit(client, payload)
    files = client.get(f"/studies/{STUDY}/analysis/{analysis_id}/files").get_json()
    first, second = files
    url = f"/studies/{STUDY}/files/{first['objectId']}"
    assert client.get(url).get_json() == first
    assert_song_error(client.get(f"/studies/{STUDY}/files/nope"), 404, "file.not.found")

    # metadata and content updates while UNPUBLISHED
    same = client.put(url, json={"fileAccess": "open"}).get_json()
    assert same["fileUpdateType"] == "NO_UPDATE"
    assert same["message"] == (
        f"No update for file with objectId '{first['objectId']}' and analysisId '{analysis_id}'"
    )
    new_md5 = "0" * 32
    content = client.put(url, json={"fileMd5sum": new_md5, "info": {"k": 1}}).get_json()
    assert content["fileUpdateType"] == "CONTENT_UPDATE"
    assert content["originalAnalysisState"] == "UNPUBLISHED"
    assert content["unpublishedAnalysis"] is False
    assert content["originalFile"] == first
    now = client.get(url).get_json()
    assert now["fileMd5sum"] == new_md5 and now["info"] == {"k": 1}
    client.put(url, json={"fileMd5sum": first["fileMd5sum"]})  # back, so publish can pass

    upload(analysis_id, payload)
    assert client.put(f"/studies/{STUDY}/analysis/publish/{analysis_id}").status_code == 200
    meta = client.put(url, json={"fileAccess": "controlled", "info": {"j": 2}}).get_json()
    assert meta["fileUpdateType"] == "METADATA_UPDATE"
    assert meta["originalAnalysisState"] == "PUBLISHED"
    assert client.get(url).get_json()["info"] == {"k": 1, "j": 2}
    assert client.get(f"/entities/{first['objectId']}").get_json()["access"] == "controlled"

    before = snapshot(catalog)
    assert_song_error(client.put(url, json={"fileSize": 99}), 400, "illegal.file.update.request")
    for bad in (
        {"fileSize": 0},
        {"fileSize": "1"},
        {"fileMd5sum": "xyz"},
        {"fileAccess": "public"},
        {"info": [1]},
        {"fileName": "renamed.vcf.gz"},
        {"colour": "red"},
    ):
        assert_song_error(client.put(url, json=bad), 400, "invalid.file.update.request")
    assert_song_error(
        client.delete(f"/studies/{STUDY}/files/{second['objectId']}"),
        400,
        "illegal.file.update.request",
    )
    assert snapshot(catalog) == before

    client.put(f"/studies/{STUDY}/analysis/unpublish/{analysis_id}")
    deleted = client.delete(f"/studies/{STUDY}/files/{second['objectId']}")
    assert deleted.status_code == 200 and deleted.get_data(as_text=True) == "OK"
    assert_song_error(
        client.get(f"/studies/{STUDY}/files/{second['objectId']}"), 404, "file.not.found"
    )
    assert [f["objectId"] for f in catalog.analysis_files(STUDY, analysis_id)] == [
        first["objectId"]
    ]
    _, rows = sql.run(catalog.tables, "SELECT object_id FROM files")
    assert rows == [(first["objectId"],)]
    assert_song_error(
        client.delete(f"/studies/{STUDY}/files/{first['objectId']}"),
        400,
        "illegal.file.update.request",
    )  # an analysis keeps at least one file
    # another process sees the deletion too
    assert [
        f["objectId"] for f in Catalog(catalog.settings).analysis_files(STUDY, analysis_id)
    ] == [first["objectId"]]
    client.put(f"/studies/{STUDY}/analysis/suppress/{analysis_id}")
    assert_song_error(client.put(url, json={"dataType": "x"}), 400, "illegal.file.update.request")


def test_update_and_patch_analysis(client, catalog, payloads):
    analysis_id = _submit(client, payloads.variant_call())
    url = f"/studies/{STUDY}/analysis/{analysis_id}"
    new = {
        "analysisType": {"name": "variantCall"},
        "experiment": {"variantCallingTool": "new tool", "matchedNormalSampleSubmitterId": "n1"},
    }
    put = client.put(url, json=new)
    assert put.status_code == 200 and put.get_data() == b""
    assert client.get(url).get_json()["experiment"]["variantCallingTool"] == "new tool"
    patch = client.patch(url, json={"experiment": {"variantCallingTool": "patched"}, "extra": 1})
    assert patch.status_code == 200 and patch.get_data() == b""
    doc = client.get(url).get_json()
    assert doc["experiment"] == {
        "variantCallingTool": "patched",
        "matchedNormalSampleSubmitterId": "n1",
    }
    assert doc["extra"] == 1
    before = snapshot(catalog)
    assert_song_error(client.put(url, json={"experiment": {}}), 400, "malformed.parameter")
    assert_song_error(client.put(url, json={**new, "files": []}), 400, "schema.violation")
    assert_song_error(client.patch(url, data="{oops"), 422, "payload.parsing")
    assert snapshot(catalog) == before


def test_search_id_get_and_post(client, payloads):
    analysis_id = _submit(client, payloads.variant_call())
    base = f"/studies/{STUDY}/analysis/search/id"
    found = client.get(base + "?submitterSampleId=S1&donorId=" + entity_id(STUDY, "d1")[:8])
    assert [a["analysisId"] for a in found.get_json()] == [analysis_id]
    # unpublished analyses are found too (any state)
    posted = client.post(base, json={"submitterDonorIds": ["D1"], "objectId": ".*"})
    assert [a["analysisId"] for a in posted.get_json()] == [analysis_id]
    assert client.post(base, json={"submitterSpecimenIds": ["zzz"]}).get_json() == []
    assert_song_error(client.get(base + "?donorId=("), 400, "search.term.syntax")


def test_search_id_post_refuses_keys_song_does_not_define(client, payloads):
    """GET's singular `submitterDonorId` in a POST body (which takes `submitterDonorIds`) must
    not be ignored: the search would return the whole study."""
    _submit(client, payloads.variant_call())
    base = f"/studies/{STUDY}/analysis/search/id"
    typo = assert_song_error(
        client.post(base, json={"submitterDonorId": "nobody"}), 400, "malformed.parameter"
    )
    assert typo["message"].endswith(
        "Unknown id search key 'submitterDonorId'; the keys accepted are donorId, sampleId, "
        "specimenId, objectId, submitterSampleId, submitterDonorIds, submitterSpecimenIds"
    )
    wrong_type = assert_song_error(
        client.post(base, json={"submitterDonorIds": [7]}), 400, "malformed.parameter"
    )
    assert "'submitterDonorIds' takes a string or a list of strings" in wrong_type["message"]
    assert client.post(base, json={"submitterDonorIds": ["nobody"]}).get_json() == []


def test_export(client, payloads):
    payload = payloads.variant_call()
    first = _submit(client, payload)
    second = _submit(client, payloads.variant_call(samples=[payloads.sample("s2", "sp2", "d2")]))
    study = client.get(f"/export/studies/{STUDY}").get_json()
    assert [g["studyId"] for g in study] == [STUDY] and len(study[0]["payloads"]) == 2
    exported = study[0]["payloads"][0]
    assert "analysisId" not in exported and "objectId" not in exported["files"][0]
    both = client.get(f"/export/analysis/{first},{second}").get_json()
    assert len(both[0]["payloads"]) == 2
    assert_song_error(client.get(f"/export/analysis/{first},nope"), 404, "analysis.id.not.found")
    assert_song_error(client.get("/export/studies/NOPE"), 404, "study.id.does.not.exist")


def test_legacy_entities_for_score(client, payloads):
    analysis_id = _submit(
        client,
        payloads.variant_call(
            files=[payloads.file("a.vcf.gz"), payloads.file("a.vcf.gz.tbi", fileType="TBI")]
        ),
    )
    other = _submit(client, payloads.variant_call(samples=[payloads.sample("s2", "sp2", "d2")]))
    files = client.get(f"/studies/{STUDY}/analysis/{analysis_id}/files").get_json()
    one = client.get(f"/entities/{files[0]['objectId']}").get_json()
    assert one == {
        "id": files[0]["objectId"],
        "gnosId": analysis_id,
        "fileName": files[0]["fileName"],
        "projectCode": STUDY,
        "access": "open",
    }
    assert_song_error(client.get("/entities/nope"), 404, "legacy.entity.not.found")

    page = client.get(f"/entities?gnosId={analysis_id}&projectCode={STUDY}&size=1&page=0")
    body = page.get_json()
    ids = sorted(f["objectId"] for f in files)
    assert [c["id"] for c in body["content"]] == ids[:1]
    assert body["totalElements"] == 2 and body["totalPages"] == 2
    assert body["first"] is True and body["last"] is False and body["number"] == 0
    assert body["pageable"]["pageSize"] == 1 and body["sort"]["sorted"] is True
    last = client.get(f"/entities?gnosId={analysis_id}&size=1&page=1").get_json()
    assert [c["id"] for c in last["content"]] == ids[1:] and last["last"] is True
    every = client.get(f"/entities?projectCode={STUDY}&size=2000").get_json()
    assert every["totalElements"] == 3 and every["numberOfElements"] == 3
    assert [c["id"] for c in every["content"]] == sorted(c["id"] for c in every["content"])
    assert other in {c["gnosId"] for c in every["content"]}
    fields = client.get(f"/entities?gnosId={analysis_id}&fields=id&fields=gnosId").get_json()
    assert set(fields["content"][0]) == {"id", "gnosId"}
    by_name = client.get("/entities?fileName=a.vcf.gz.tbi").get_json()
    assert [c["fileName"] for c in by_name["content"]] == ["a.vcf.gz.tbi"]
    assert client.get("/entities?access=controlled").get_json()["totalElements"] == 0
    assert_song_error(client.get("/entities?colour=red"), 400, "illegal.query.parameter")
    assert_song_error(client.get("/entities?fields=colour"), 400, "illegal.filter.parameter")


def test_portal_search(client, catalog, payloads, upload):
    ids = {}
    for n in range(1, 7):
        payload = payloads.variant_call(
            samples=[payloads.sample(f"s{n}", f"sp{n}", f"d{n % 3}")],
            files=[
                payloads.file(
                    f"f{n}.vcf.gz",
                    fileType="VCF" if n % 2 else "BAM",
                    fileAccess="open" if n < 4 else "controlled",
                )
            ],
        )
        ids[n] = _submit(client, payload)
        if n <= 4:
            upload(ids[n], payload)
            assert client.put(f"/studies/{STUDY}/analysis/publish/{ids[n]}").status_code == 200
    client.put(f"/studies/{STUDY}/analysis/suppress/{ids[4]}")

    def found(query: str) -> list[str]:
        response = client.get("/search/analyses?" + query)
        assert response.status_code == 200, response.get_json()
        return [a["analysisId"] for a in response.get_json()["analyses"]]

    published = sorted(ids[n] for n in (1, 2, 3))
    assert found("") == published  # PUBLISHED by default, sorted by analysisId
    assert found("analysisStates=UNPUBLISHED,SUPPRESSED") == sorted(ids[n] for n in (4, 5, 6))
    assert found("fileType=BAM&analysisStates=PUBLISHED,UNPUBLISHED") == sorted(
        ids[n] for n in (2, 6)
    )
    assert found("fileAccess=controlled&analysisStates=UNPUBLISHED") == sorted(
        ids[n] for n in (5, 6)
    )
    assert found("submitterDonorId=d1&analysisStates=PUBLISHED&analysisStates=UNPUBLISHED") == [
        ids[1]
    ]
    d1 = found("submitterDonorId=d1&analysisStates=PUBLISHED,UNPUBLISHED,SUPPRESSED")
    assert d1 == sorted(ids[n] for n in (1, 4))
    assert found(f"donorId={entity_id(STUDY, 'd2')}") == sorted([ids[2]])
    assert found("submitterSampleId=s3") == [ids[3]]
    assert found("analysisType=variantCall:1&studyId=ABC123") == published
    assert found("analysisType=sequencingRead") == []
    assert found("studyId=NOPE") == []
    by_time = found("sort=createdAt&order=desc")
    assert by_time == [ids[3], ids[2], ids[1]]
    created_2 = catalog.get_analysis(STUDY, ids[2])["createdAt"]
    assert found(f"createdAfter={created_2}&sort=createdAt") == [ids[2], ids[3]]
    page = client.get("/search/analyses?limit=2&offset=1").get_json()
    assert page["totalAnalyses"] == 3 and page["currentTotalAnalyses"] == 2
    assert [a["analysisId"] for a in page["analyses"]] == published[1:]

    files = client.get("/search/files?fileType=VCF&analysisStates=PUBLISHED").get_json()
    assert files["totalFiles"] == 2
    assert {f["analysisId"] for f in files["files"]} == {ids[1], ids[3]}
    assert all(f["analysisState"] == "PUBLISHED" for f in files["files"])
    assert (
        client.get("/search/files?submitterSampleId=s5&analysisStates=UNPUBLISHED").get_json()[
            "files"
        ][0]["fileName"]
        == "f5.vcf.gz"
    )

    for bad in (
        "limit=abc",
        "offset=-1",
        "limit=5000",
        "analysisStates=FOO",
        "sort=size",
        "order=up",
        "createdAfter=yesterday",
        "fileAccess=public",
    ):
        assert_song_error(client.get("/search/analyses?" + bad), 400, "malformed.parameter")

    # a later change shows up in the next search
    client.put(f"/studies/{STUDY}/analysis/unpublish/{ids[1]}")
    assert found("") == sorted(ids[n] for n in (2, 3))


def test_sql(client, catalog, payloads):
    _submit(client, payloads.variant_call())
    ok = client.post(
        "/sql", json={"query": "SELECT analysis_state, count(*) AS n FROM analyses GROUP BY 1"}
    )
    assert ok.get_json() == {
        "columns": ["analysis_state", "n"],
        "rows": [["UNPUBLISHED", 1]],
        "rowCount": 1,
        "truncated": False,
    }
    text = client.post("/sql", data="SELECT 1 AS a", content_type="text/plain")
    assert text.get_json()["rows"] == [[1]]
    # times as `songlake sql` prints them: UTC, milliseconds, Z; catalog versions numbered
    log = client.post("/sql", json={"query": "SELECT version, committed_at FROM commits"})
    rows = log.get_json()["rows"]
    version, committed_at = rows[-1]
    assert version == len(rows)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", committed_at)
    many = client.post("/sql", json={"query": "SELECT * FROM range(50)", "limit": 10}).get_json()
    assert many["rowCount"] == 10 and many["truncated"] is True
    before = snapshot(catalog)
    for query in (
        "DROP TABLE studies",
        "SELECT 1; SELECT 2",
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY (SELECT 1) TO '/tmp/songlake-sql-test.csv'",
    ):
        assert_song_error(
            client.post("/sql", json={"query": query}), 400, "illegal.query.parameter"
        )
    assert_song_error(client.post("/sql", json={}), 400, "malformed.parameter")
    assert snapshot(catalog) == before

    slow = dataclasses.replace(catalog.settings, sql_timeout=0.3)
    slow_client = create_app(catalog, settings=slow).test_client()
    slow_client.environ_base.update(client.environ_base)
    query = "SELECT count(*) FROM range(100000000000) a WHERE a.range % 7 = 3"
    assert_song_error(slow_client.post("/sql", json={"query": query}), 504, "gateway.timed.out")


def test_health_and_version(client, catalog):
    health = client.get("/health").get_json()
    assert health["status"] == "UP"
    assert health["tables"]["analyses"] == catalog.tables.version("analyses")
    assert health["objectStore"]["reachable"] is True
    (catalog.settings.objects_dir / "data" / "heliograph").unlink()  # the store's sentinel
    assert_song_error(client.get("/health"), 503, "service.unavailable")
    version = client.get("/version").get_json()
    assert version["name"] == "songlake" and version["songApiVersion"].startswith("5.")


def test_openapi_covers_every_route_and_validates(client):
    response = client.get("/openapi.json")
    spec = response.get_json()
    validate(spec)
    app = client.application
    for rule in app.url_map.iter_rules():
        if not documented(rule):
            continue
        path = openapi_path(rule.rule)
        assert path in spec["paths"], rule.rule
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in spec["paths"][path], (method, rule.rule)
    submit = spec["paths"]["/submit/{studyId}"]["post"]
    assert submit["security"] == [{"bearer": []}] and "401" in submit["responses"]
    search = spec["paths"]["/search/analyses"]["get"]
    assert {"fileType", "submitterDonorId", "createdAfter", "sort"} <= {
        p["name"] for p in search["parameters"]
    }
    page = client.get("/docs")
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/studies/{studyId}/analysis/publish/{analysisId}" in html
    assert "http://" not in html and "https://" not in html  # no CDN
    assert client.get("/swagger-ui.html").headers["Location"].endswith("/docs")
