"""The web console through Flask's test client: signing in, the CSRF check, who may act and see
what, Song's errors on the page, and nothing written when an action is refused."""

from __future__ import annotations

import csv
import html
import io
import json
from urllib.parse import urlsplit

from api.errors import STATUS
from catalog.catalog import Catalog
from tests.api.conftest import snapshot
from tests.api.console.conftest import Console
from tests.conftest import STUDY


def _published(catalog: Catalog, payloads, upload, **file: str) -> tuple[str, dict]:
    payload = payloads.variant_call(files=[payloads.file("a.vcf.gz", **file)])
    analysis_id = catalog.submit(payload, STUDY)
    upload(analysis_id, payload)
    catalog.publish(STUDY, analysis_id)
    return analysis_id, payload


def test_browsers_opening_the_root_go_to_the_console_json_clients_get_the_404(console):
    page = console.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 302 and page.headers["Location"] == "/ui/"
    for accept in (None, "application/json", "*/*"):
        response = console.get("/", headers={"Accept": accept} if accept else {})
        assert response.status_code == 404 and response.get_json()["errorId"] == "not.found"
    spec = console.get("/openapi.json").get_json()
    assert not [p for p in spec["paths"] if p == "/" or p.startswith("/ui")]


def test_sign_in_keeps_the_token_in_a_strict_httponly_cookie_and_sign_out_drops_it(console):
    assert console.get("/ui/sql").headers["Location"] == "/ui/signin?next=/ui/sql"
    refused = console.post("/ui/signin", token="not-a-token")
    assert refused.status_code == 401 and "unauthorized.token" in refused.get_data(as_text=True)
    response = console.sign_in("system-token")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert response.headers["Location"] == "/ui/"
    page = console.get("/ui/sql")
    assert "signed in as" in page.get_data(as_text=True)
    assert "script-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert console.post("/ui/signout").headers["Location"] == "/ui/signin"
    assert console.get("/ui/sql").status_code == 303
    # after signing in, only a page of the console is a place to go next
    out = console.post("/ui/signin", token="system-token", next="https://elsewhere.example/ui")
    assert out.headers["Location"] == "/ui/"


def test_a_form_without_the_session_csrf_token_is_refused_and_writes_nothing(
    console, catalog, submitted
):
    analysis_id, _ = submitted
    console.sign_in("system-token")
    before = snapshot(catalog)
    path = f"/ui/analyses/{analysis_id}/state"
    form = {"action": "suppress", "reason": "r", "confirm": "yes"}
    for sent in ({}, {"csrf": "forged"}):
        response = console.client.post(path, data={**form, **sent})
        assert response.status_code == 403
        assert "forbidden.token" in response.get_data(as_text=True)
        assert "CSRF" in response.get_data(as_text=True)
    # a token that belongs to another session is not this session's
    other = Console(console.client.application.test_client())
    response = console.client.post(path, data={**form, "csrf": other.csrf()})
    assert response.status_code == 403
    assert snapshot(catalog) == before
    assert catalog.get_analysis(STUDY, analysis_id)["analysisState"] == "UNPUBLISHED"


def test_a_study_token_cannot_publish_another_studys_analysis(console, catalog, payloads, upload):
    payload = payloads.variant_call()
    analysis_id = catalog.submit(payload, STUDY)
    upload(analysis_id, payload)
    console.sign_in("other-token")
    assert 'id="lifecycle"' not in console.page(f"/ui/analyses/{analysis_id}")
    before = snapshot(catalog)
    path = f"/ui/analyses/{analysis_id}/state"
    response = console.post(path, action="publish", reason="not mine")
    assert response.status_code == 403
    assert "PROGRAMDATA-ABC123.WRITE" in response.get_data(as_text=True)
    assert snapshot(catalog) == before

    console.sign_in("study-token")
    assert 'id="lifecycle"' in console.page(f"/ui/analyses/{analysis_id}")
    done = console.post(path, action="publish", reason="QC passed")
    assert done.status_code == 303
    page = console.page(f"/ui/analyses/{analysis_id}")
    assert f"AnalysisId {analysis_id} successfully published" in page
    history = catalog.history(STUDY, analysis_id)
    assert history[-1]["updatedState"] == "PUBLISHED"
    assert history[-1]["reason"] == "QC passed"
    assert history[-1]["actor"] == "tokens.txt:1"
    assert "QC passed" in page and "tokens.txt:1" in page


def test_a_controlled_files_link_needs_a_read_scope(console, catalog, payloads, upload):
    analysis_id, payload = _published(catalog, payloads, upload, fileAccess="controlled")
    open_id, _ = _published(catalog, payloads, upload)
    download = f'href="/ui/files/{catalog.analysis_files(STUDY, analysis_id)[0]["objectId"]}'
    assert download not in console.page(f"/ui/analyses/{analysis_id}")
    assert "needs a READ scope" in console.page(f"/ui/analyses/{analysis_id}")
    assert '/download">download</a>' in console.page(f"/ui/analyses/{open_id}")
    object_id = catalog.analysis_files(STUDY, analysis_id)[0]["objectId"]
    anonymous = console.get(f"/ui/files/{object_id}/download")
    assert anonymous.status_code == 303 and anonymous.headers["Location"].startswith("/ui/signin")
    console.sign_in("other-token")  # a WRITE scope of another study is no READ scope here
    assert download not in console.page(f"/ui/analyses/{analysis_id}")
    assert console.get(f"/ui/files/{object_id}/download").status_code == 403

    console.sign_in("reader-token")
    assert download in console.page(f"/ui/analyses/{analysis_id}")
    link = console.get(f"/ui/files/{object_id}/download")
    assert link.status_code == 303
    url = urlsplit(link.headers["Location"])
    blob = console.get(f"{url.path}?{url.query}")
    assert blob.status_code == 200
    assert blob.data == payloads.contents[payload["files"][0]["fileMd5sum"]]


def test_lifecycle_forms_refuse_bad_input_with_songs_ids_and_write_nothing(
    console, catalog, submitted
):
    analysis_id, _ = submitted
    console.sign_in("study-token")
    path = f"/ui/analyses/{analysis_id}/state"
    before = snapshot(catalog)
    cases = [
        ({"action": "publish", "reason": ""}, "malformed.parameter", "A reason is required"),
        ({"action": "delete", "reason": "x"}, "malformed.parameter", "not 'delete'"),
        ({"action": "suppress", "reason": "x"}, "malformed.parameter", "tick the confirmation"),
        # the files were never uploaded: Song's storage check names the missing object
        ({"action": "publish", "reason": "x"}, "missing.storage.objects", "objectId"),
    ]
    for form, error_id, text in cases:
        response = console.post(path, **form)
        page = html.unescape(response.get_data(as_text=True))
        assert response.status_code == STATUS[error_id], page[:1000]
        assert f"<code>{error_id}</code>" in page and text in page
        assert 'id="action-error"' in page
    object_id = catalog.analysis_files(STUDY, analysis_id)[0]["objectId"]
    assert object_id in console.post(path, action="publish", reason="x").get_data(as_text=True)
    assert snapshot(catalog) == before
    assert console.post("/ui/analyses/NOPE/state", action="publish").status_code == 404


def test_analyses_search_by_submitter_donor_with_bookmarkable_pages(console, catalog, payloads):
    ids = {}
    for donor in ("d1", "d2", "d3"):
        sample = payloads.sample(sample=f"s-{donor}", specimen=f"sp-{donor}", donor=donor)
        ids[donor] = catalog.submit(payloads.variant_call(samples=[sample]), STUDY)
    page = console.page("/ui/analyses?submitterDonorId=d2")
    assert "<strong>1</strong> analyses" in page and ids["d2"] in page and ids["d1"] not in page
    # all states unless some are ticked; PUBLISHED alone finds none of these
    assert "<strong>3</strong> analyses" in console.page("/ui/analyses")
    assert "<strong>0</strong> analyses" in console.page("/ui/analyses?analysisStates=PUBLISHED")
    first = console.page("/ui/analyses?limit=2&sort=createdAt&order=desc")
    assert 'rel="next"' in first and "offset=2" in first and "sort=createdAt" in first
    assert "<strong>3</strong> analyses; showing 3–3" in console.page(
        "/ui/analyses?limit=2&offset=2"
    )
    bad = console.get("/ui/analyses?limit=lots")
    assert bad.status_code == 400 and "malformed.parameter" in bad.get_data(as_text=True)
    assert console.get("/ui/analyses/NOPE").status_code == 404


def test_an_analysis_page_shows_the_tree_the_timeline_and_a_version_diff(
    console, catalog, submitted
):
    analysis_id, _ = submitted
    catalog.patch_analysis(STUDY, analysis_id, {"experiment": {"variantCallingTool": "gold"}})
    page = console.page(f"/ui/analyses/{analysis_id}")
    assert 'variantCallingTool</span>: <span class="val">"gold"' in page
    assert "Registered" in page and "no state change yet" in page
    diff = console.page(f"/ui/analyses/{analysis_id}/versions")
    assert "Version 1 → version 2" in diff
    assert '<span class="del">-    &#34;variantCallingTool&#34;: &#34;silver bullet&#34;' in diff
    assert '<span class="add">+    &#34;variantCallingTool&#34;: &#34;gold&#34;' in diff
    assert "No difference" in console.page(f"/ui/analyses/{analysis_id}/versions?from=2&to=2")
    wrong = console.get(f"/ui/analyses/{analysis_id}/versions?from=7")
    assert wrong.status_code == 400 and "malformed.parameter" in wrong.get_data(as_text=True)


def test_the_sql_console_has_post_sqls_limits_pages_and_a_csv(console, catalog, payloads):
    versions = []
    for donor in ("d1", "d2"):
        sample = payloads.sample(sample=f"s-{donor}", specimen=f"sp-{donor}", donor=donor)
        catalog.submit(payloads.variant_call(samples=[sample]), STUDY)
        versions.append(catalog.tables.versions()["commits"])
    console.sign_in("study-token")
    assert console.get("/ui/sql").status_code == 403  # a study scope is not the system scope
    console.sign_in("system-token")
    query = "SELECT analysis_id, study_id FROM analyses ORDER BY analysis_id"
    page = console.post("/ui/sql", query=query, page="1").get_data(as_text=True)
    assert "2 row(s)" in page and 'id="sql-result"' in page and "analysis_versions" in page
    refused = console.post("/ui/sql", query="DELETE FROM analyses")
    assert refused.status_code == STATUS["illegal.query.parameter"]
    assert "Only SELECT" in refused.get_data(as_text=True)
    count = "SELECT count(*) AS n FROM analyses"
    old = console.post("/ui/sql", query=count, asOf=str(versions[0]))
    assert "<td>1</td>" in old.get_data(as_text=True)  # as of the first registration
    rows = list(csv.reader(io.StringIO(console.post("/ui/sql.csv", query=query).data.decode())))
    assert rows[0] == ["analysis_id", "study_id"] and len(rows) == 3 and rows[1][1] == STUDY
    assert console.post("/ui/sql.csv", query=query, csrf=False).status_code == 403


def test_overview_counts_and_the_storage_report_with_its_button(console, catalog, payloads, upload):
    _published(catalog, payloads, upload)
    # registered, its file never uploaded: storage verify finds it missing
    unpublished = catalog.submit(
        payloads.variant_call(samples=[payloads.sample("s9", "sp9", "d9")]), STUDY
    )
    page = console.page("/ui/")
    assert f'<th scope="row">{STUDY}</th>' in page and "<svg" in page and "reachable" in page
    assert 'analysisStates=PUBLISHED">1</a>' in page
    assert 'analysisStates=UNPUBLISHED">1</a>' in page
    today = catalog.overview()["days"][-1]
    assert today["registered"] == 2 and today["changed"] == 1  # one publish
    assert (
        f'<th scope="row">{today["day"]}</th><td class="num">2</td><td class="num">1</td>' in page
    )
    console.sign_in("study-token")
    assert "needs the system scope" in console.page("/ui/events")
    assert console.post("/ui/storage/verify").status_code == 403
    console.sign_in("system-token")
    assert "No whole-store" in console.page("/ui/events")
    done = console.post("/ui/storage/verify")
    assert done.status_code == 303
    page = console.page("/ui/events")
    assert "2 registered file(s) checked, 1 ok" in page and "storage verify: 2" in page
    missing = catalog.analysis_files(STUDY, unpublished)[0]["objectId"]
    assert f"<code>{missing}</code>" in page
    saved = json.loads((catalog.settings.state_dir / "storage-verify.json").read_text())
    assert saved["checked"] == 2 and [f["objectId"] for f in saved["findings"]] == [missing]
