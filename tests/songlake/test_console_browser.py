"""The web console in a real browser (Debian's chromium under Playwright) against `songlake
serve`'s composition on 127.0.0.1: an administrator's flows from signing in to signing out, a
screenshot of every page under the run's temp dir, reading with JavaScript off, and a form sent
without its CSRF token refused."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from tests.conftest import STUDY
from tests.songlake.conftest import Served, wait_until

#: set to a file name to keep the overview's screenshot (the README's picture is made this way)
KEEP_OVERVIEW = "SONGLAKE_CONSOLE_SCREENSHOT"


def _shot(page: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


def test_an_administrators_day_in_the_browser(served: Served, chromium, payloads, screenshots):
    catalog = served.catalog
    sample = payloads.sample("s-42", "sp-42", "DONOR-42")
    ready = payloads.variant_call(samples=[sample])
    ready_id = catalog.submit(ready, STUDY)
    catalog.upload(ready_id, payloads.write_files(ready))
    unstored = catalog.submit(
        payloads.variant_call(samples=[payloads.sample("s7", "sp7", "d7")]), STUDY
    )

    context = chromium.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(served.url + "/")  # a browser at the root lands in the console
    assert page.url == served.url + "/ui/"
    assert page.locator("h1").inner_text() == "Overview"

    # sign in with a token
    page.goto(served.url + "/ui/sql")
    assert "/ui/signin" in page.url
    _shot(page, screenshots, "signin")
    page.get_by_label("Bearer token").fill(served.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(served.url + "/ui/sql")
    assert "signed in as admin" in page.locator("header").inner_text()

    # find an analysis by its submitter donor id, open it, publish it with a reason
    page.get_by_role("link", name="Analyses").click()
    page.get_by_label("submitterDonorId").fill("DONOR-42")
    page.get_by_role("button", name="Search").click()
    assert "submitterDonorId=DONOR-42" in page.url  # a link that can be bookmarked
    assert page.locator("#count").inner_text().startswith("1 analyses")
    _shot(page, screenshots, "analyses")
    page.get_by_role("link", name=ready_id).click()
    assert page.locator("#state").inner_text() == "UNPUBLISHED"
    page.get_by_label("publish", exact=True).check()
    page.get_by_label("Reason (recorded in the history)").fill("QC passed on run 7")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(served.url + f"/ui/analyses/{ready_id}")
    assert page.locator("#state").inner_text() == "PUBLISHED"
    timeline = page.locator("#timeline").inner_text()
    assert "UNPUBLISHED → PUBLISHED by admin" in timeline and "QC passed on run 7" in timeline
    assert page.get_by_role("link", name="download").count() == 1
    _shot(page, screenshots, "analysis")

    # publish one whose files never reached storage: Song's error, nothing changes
    page.goto(served.url + f"/ui/analyses/{unstored}")
    page.get_by_label("Reason (recorded in the history)").fill("try")
    page.get_by_role("button", name="Apply").click()
    error = page.locator("#action-error").inner_text()
    assert "missing.storage.objects" in error
    assert catalog.analysis_files(STUDY, unstored)[0]["objectId"] in error
    assert page.locator("#state").inner_text() == "UNPUBLISHED"
    _shot(page, screenshots, "publish-error")

    # drop a bad sidecar into the inbox: it shows with its pointer marked
    bad = payloads.variant_call(samples=[payloads.sample("s8", "sp8", "d8", gender="Robot")])
    folder = catalog.settings.inbox_dir / STUDY / "run-8"
    payloads.write_files(bad, folder)
    (folder / "bad.song.json").write_text(json.dumps(bad, indent=1))
    wait_until(lambda: (folder / "bad.song.errors.json").exists(), "the errors file")
    page.get_by_role("link", name="Inbox").click()
    page.get_by_label("Folder contains").fill("run-8")
    page.get_by_role("button", name="Filter").click()
    rejected = page.locator("article.rejected")
    wait_until(lambda: page.reload() or rejected.count() == 1, "the ledger's rejected row")
    mark = rejected.locator("mark")
    assert mark.count() >= 1 and '"Robot"' in mark.first.inner_text()
    problems = rejected.locator("tbody").inner_text()
    assert "schema.violation\t/samples/0/donor/gender\tenum" in problems
    _shot(page, screenshots, "inbox")

    # run a SQL query, page through it and download the CSV
    page.get_by_role("link", name="SQL").click()
    query = "SELECT analysis_id, analysis_state FROM analyses ORDER BY analysis_id"
    page.get_by_label("One read-only SELECT").fill(query)
    page.get_by_role("button", name="Run").click()
    assert page.locator("#sql-count").inner_text().startswith("2 row(s)")
    assert page.locator("#sql-result tbody tr").count() == 2
    _shot(page, screenshots, "sql")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert rows[0] == ["analysis_id", "analysis_state"]
    assert sorted(r[0] for r in rows[1:]) == sorted([ready_id, unstored])

    page.get_by_role("link", name="Events & storage").click()
    page.get_by_role("button", name="Run storage verify now").click()
    assert "2 registered file(s) checked, 1 ok" in page.locator("#storage-report").inner_text()
    _shot(page, screenshots, "events")

    page.get_by_role("link", name="Overview").click()
    counts = page.locator("table").first.inner_text()
    assert STUDY in counts
    overview = _shot(page, screenshots, "overview")
    if os.environ.get(KEEP_OVERVIEW):
        shutil.copyfile(overview, os.environ[KEEP_OVERVIEW])

    # the keyboard reaches the skip link first, and every field has a label
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for path in ("/ui/", "/ui/analyses", "/ui/inbox", "/ui/sql", "/ui/events"):
        page.goto(served.url + path)
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
               .filter(e => !e.labels || e.labels.length === 0).map(e => e.name)"""
        )
        assert unlabelled == [], (path, unlabelled)
        assert page.locator("h1").count() == 1

    # a form posted without the CSRF token is refused, even with the session cookie
    response = page.request.post(
        served.url + f"/ui/analyses/{unstored}/state",
        form={"action": "suppress", "reason": "x", "confirm": "yes"},
    )
    assert response.status == 403 and "forbidden.token" in response.text()

    # sign out
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(served.url + "/ui/signin")
    page.goto(served.url + "/ui/sql")
    assert "/ui/signin" in page.url
    context.close()
    assert catalog.get_analysis(STUDY, unstored)["analysisState"] == "UNPUBLISHED"


def test_reading_works_with_javascript_off(served: Served, chromium, payloads, screenshots):
    catalog = served.catalog
    payload = payloads.variant_call()
    analysis_id = catalog.submit(payload, STUDY)
    context = chromium.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(served.url + "/ui/analyses?submitterDonorId=d1")
    assert page.locator("#count").inner_text().startswith("1 analyses")
    page.get_by_role("link", name=analysis_id).click()
    assert page.locator("h1").inner_text() == f"Analysis {analysis_id}"
    assert "variantCallingTool" in page.get_by_role("region", name="Dynamic data").inner_text()
    page.get_by_role("link", name="Versions of the dynamic data, and their diff").click()
    assert "Version 1 → version 1" in page.content()
    _shot(page, screenshots, "no-javascript")
    context.close()
