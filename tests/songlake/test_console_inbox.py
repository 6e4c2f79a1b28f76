"""The console's inbox page over a running watcher, as `songlake serve` wires them (the API never
imports the watcher: serve hands the app a reader of the watcher's ledger)."""

from __future__ import annotations

import dataclasses
import html
import json
import re

from songlake.serve import make_app
from tests.conftest import STUDY
from tests.songlake.conftest import FAST, wait_until
from watcher import Watcher

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def test_the_inbox_page_shows_pending_rejected_and_receipts(catalog, payloads):
    tokens = catalog.settings.root / "tokens.txt"
    tokens.write_text("mine PROGRAMDATA-ABC123.WRITE\nother PROGRAMDATA-OTHER.WRITE\n")
    settings = dataclasses.replace(
        catalog.settings, auth_token_file="tokens.txt", watch_pending_timeout=3600.0, **FAST
    )
    catalog.settings = settings
    folder = settings.inbox_dir / STUDY
    folder.mkdir(parents=True, exist_ok=True)
    good = payloads.variant_call()
    payloads.write_files(good, folder / "good")
    (folder / "good" / "good.song.json").write_text(json.dumps(good))
    waiting = payloads.variant_call(samples=[payloads.sample("s2", "sp2", "d2")])
    (folder / "late").mkdir()
    (folder / "late" / "late.song.json").write_text(json.dumps(waiting))  # its file never comes
    bad = payloads.variant_call(samples=[payloads.sample("s3", "sp3", "d3", gender="<b>x</b>")])
    payloads.write_files(bad, folder / "bad")
    (folder / "bad" / "bad.song.json").write_text(json.dumps(bad))

    client = make_app(catalog, settings).test_client()

    def sign_in(token: str) -> None:
        csrf = CSRF.search(client.get("/ui/signin").get_data(as_text=True))
        assert csrf is not None
        client.post("/ui/signin", data={"token": token, "csrf": csrf.group(1)})

    assert client.get("/ui/inbox").status_code == 303  # signed out: to the sign-in page
    watcher = Watcher(catalog, settings).start()
    try:
        sign_in("mine")

        def page() -> str:
            text = client.get("/ui/inbox").get_data(as_text=True)
            done = "1 pending, 1 rejected, 1 registered" in text
            return text if done and "No receipts yet" not in text else ""

        text = wait_until(page, "the three sidecars in the inbox page")
    finally:
        watcher.stop()
    assert "late.song.json" in text and "60 min" in text  # an hour to wait, less a moment
    plain = html.unescape(text)
    assert "a.vcf.gz" in plain  # what it waits for
    # the value at the pointer is marked, and escaped: the sidecar's text is never markup
    assert '<mark id="pointer-samples/0/donor/gender">&#34;&lt;b&gt;x&lt;/b&gt;&#34;</mark>' in text
    assert "<b>x</b>" not in text
    assert "schema.violation" in text and "/samples/0/donor/gender" in text
    receipt = json.loads((folder / "good" / "good.song.receipt.json").read_text())
    assert f'href="/ui/analyses/{receipt["analysisId"]}"' in text
    filtered = client.get("/ui/inbox?folder=late").get_data(as_text=True)
    assert "late.song.json" in filtered and "bad.song.json" not in filtered
    assert "Nothing rejected" in client.get("/ui/inbox?studyId=OTHER").get_data(as_text=True)
    overview = client.get("/ui/").get_data(as_text=True)
    assert "<dt>Rejected</dt><dd>1</dd>" in overview

    sign_in("other")  # another study's token sees none of this study's sidecars
    text = client.get("/ui/inbox").get_data(as_text=True)
    assert "Nothing pending" in text and "Nothing rejected" in text and "No receipts" in text
