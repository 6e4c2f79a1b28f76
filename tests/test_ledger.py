"""The watcher's ledger: lookups the registrar makes once per batch."""

from __future__ import annotations

from watcher.ledger import Ledger


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
