"""The watcher's ledger: lookups the registrar makes once per batch."""

from __future__ import annotations

import json

from watcher.layout import Folder
from watcher.ledger import Ledger
from watcher.readiness import Trigger, Verdict


def test_registered_rows_are_found_for_many_contents_at_once(tmp_path):
    ledger = Ledger(tmp_path / "watcher.sqlite3")
    with ledger.transaction() as tx:
        for i in range(1200):  # more than one query's worth of hashes
            status = "registered" if i % 3 else "rejected"
            tx.upsert(
                f"/in/{i}.song.json", status=status, sha256=f"sha{i % 600}", analysis_id=f"A{i}"
            )
    found = ledger.registered_with_any([f"sha{i}" for i in range(600)] + ["sha0", "nothing"])
    # sha<k> is at paths k and k + 600; a path whose number divides by 3 was rejected
    for k in range(600):
        want = sorted(f"/in/{i}.song.json" for i in (k, k + 600) if i % 3)
        assert sorted(row.path for row in found.get(f"sha{k}", [])) == want
    assert "nothing" not in found
    assert all(row.status == "registered" for rows in found.values() for row in rows)
    assert ledger.registered_with_any([]) == {}
    ledger.close()


def test_a_marked_sidecar_keeps_its_recorded_stat_when_none_was_taken(tmp_path):
    ledger = Ledger(tmp_path / "watcher.sqlite3")
    path = str(tmp_path / "inbox" / "S1" / "a.song.json")
    v = Verdict(path, Folder.at(tmp_path / "inbox"), Trigger("scan"), "ready", None)
    v.study_id, v.sha256, v.fingerprint = "S1", "sha-a", (10, 20, 30)
    with ledger.transaction() as tx:
        tx.upsert(path, **v.marked("registering", analysis_id="A1"))
    row = ledger.get(path)
    assert row is not None
    assert (row.folder, row.study_id, row.status, row.sha256, row.analysis_id) == (
        str(tmp_path / "inbox"),
        "S1",
        "registering",
        "sha-a",
        "A1",
    )
    assert row.fingerprint == (10, 20, 30)

    v.fingerprint = None  # e.g. a sidecar refused before its stat was taken
    problems = [{"errorId": "x.y", "message": "no"}]
    with ledger.transaction() as tx:
        tx.upsert(path, **v.marked("rejected", analysis_id="A1", message="no", problems=problems))
    row = ledger.get(path)
    assert row is not None
    assert (row.status, row.message, row.fingerprint) == ("rejected", "no", (10, 20, 30))
    assert json.loads(row.problems or "") == problems
    ledger.close()
