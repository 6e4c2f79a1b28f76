"""The Delta tables: group commit, automatic compaction and the catalog version log."""

from __future__ import annotations

import json

from catalog import sql
from catalog.model import now
from catalog.tables import TableStore


def study_row(i: int) -> dict:
    return {
        "study_id": f"S{i}",
        "name": None,
        "organization": None,
        "description": None,
        "info": None,
        "created_at": now(),
    }


def test_small_files_are_compacted_automatically(tmp_path):
    tables = TableStore(tmp_path / "tables", compact_after_files=8)
    tables.create_all()
    for i in range(20):
        tables.append("studies", [study_row(i)])
    assert tables.file_count("studies") < 8
    assert sorted(tables.read("studies").column("study_id").to_pylist()) == sorted(
        f"S{i}" for i in range(20)
    )
    # history survives compaction: the table as of version 3 still has 3 rows
    assert tables.read("studies", version=3).num_rows == 3


def test_big_files_are_left_alone_by_compaction(tmp_path):
    # a 1-byte target: every file counts as big
    tables = TableStore(tmp_path / "tables", compact_after_files=4, compact_target_bytes=1)
    tables.create_all()
    for i in range(6):
        tables.append("studies", [study_row(i)])
    assert tables.file_count("studies") == 6  # nothing was small enough to rewrite


def test_group_commit_records_one_catalog_version(tmp_path):
    tables = TableStore(tmp_path / "tables")
    tables.create_all()
    version = tables.group_commit(
        [("studies", [study_row(1), study_row(2)])], operation="test", actor="me"
    )
    assert version == 1
    recorded = tables.versions_as_of("1")
    assert recorded["studies"] == 1
    _, rows = sql.run(tables, "SELECT operation, actor, rows, table_versions FROM commits")
    assert rows[0][:3] == ("test", "me", 2)
    assert json.loads(rows[0][3])["studies"] == 1


def test_commits_view_numbers_each_row_with_its_catalog_version(tmp_path):
    """The ``version`` column is the number ``--as-of`` takes, also when compaction of the
    commit log spends Delta versions that record no commit, and when two commits record the
    same table versions."""
    tables = TableStore(tmp_path / "tables", compact_after_files=3)
    tables.create_all()
    for i in range(7):
        tables.group_commit([("studies", [study_row(i)])], operation=f"op{i}", actor="me")
        if i == 3:
            tables.group_commit([("studies", [])], operation="empty", actor="me")
    columns, rows = sql.run(tables, "SELECT * FROM commits")
    assert columns[:3] == ["version", "committed_at", "operation"]
    assert [r[2] for r in rows] == ["op0", "op1", "op2", "op3", "empty", "op4", "op5", "op6"]
    versions = [r[0] for r in rows]
    assert versions == sorted(versions) and len(set(versions)) == len(rows)
    assert versions[-1] > len(rows)  # compaction commits took numbers in between
    for version, *_, table_versions in rows:
        assert tables.versions_as_of(str(version)) == json.loads(table_versions)
    # the catalog as of a row's version holds exactly the studies committed up to that row
    op2 = versions[2]
    assert sql.run(
        tables, "SELECT count(*) FROM studies", versions=tables.versions_as_of(str(op2))
    )[1] == [(3,)]


def test_commits_of_another_writer_are_seen_and_recorded(tmp_path):
    """``latest`` loads a table only when a newer commit exists; what another writer (another
    process) committed is seen by reads and in the versions the next catalog commit records."""
    ours = TableStore(tmp_path / "tables")
    ours.create_all()
    theirs = TableStore(tmp_path / "tables")
    ours.append("studies", [study_row(1)])
    assert ours.read("studies").num_rows == 1  # opened by ours now, at version 1
    assert theirs.append("studies", [study_row(2)]) == 2
    assert theirs.append("studies", [study_row(3)]) == 3
    assert ours.latest("studies").version() == 3
    assert sorted(ours.read("studies").column("study_id").to_pylist()) == ["S1", "S2", "S3"]
    theirs.append("donors", [])  # no rows: no commit
    ours.group_commit([("studies", [study_row(4)])], operation="test", actor=None)
    assert ours.versions()["studies"] == 4
    _, rows = sql.run(ours, "SELECT table_versions FROM commits")
    assert json.loads(rows[-1][0])["studies"] == 4
    assert ours.latest("studies").version() == 4  # nothing newer: stays


def test_a_table_left_behind_past_a_cleaned_log_still_catches_up(tmp_path, monkeypatch):
    """The log entry after our version may be gone (cleaned up behind a checkpoint); latest()
    lists the log at least every FULL_CHECK_EVERY seconds, so the table still catches up."""
    from deltalake import DeltaTable

    from catalog import tables as tables_module

    ours = TableStore(tmp_path / "tables")
    ours.create_all()
    ours.append("studies", [study_row(1)])
    assert ours.latest("studies").version() == 1
    theirs = TableStore(tmp_path / "tables")
    for i in range(2, 6):
        theirs.append("studies", [study_row(i)])
    DeltaTable(str(tmp_path / "tables" / "studies")).create_checkpoint()  # at version 5
    log = tmp_path / "tables" / "studies" / "_delta_log"
    for version in range(2, 5):  # what a log cleanup removes
        (log / f"{version:020d}.json").unlink()
    assert ours.latest("studies").version() == 1  # listed less than a minute ago: not yet
    monkeypatch.setattr(tables_module, "FULL_CHECK_EVERY", 0.0)
    assert ours.latest("studies").version() == 5
    assert ours.read("studies").num_rows == 5


def test_an_append_whose_answer_was_lost_is_found_by_its_id(tmp_path):
    """A retried conditional put that finds the version taken by its own first attempt (the
    answer lost on the way) is a success, not a conflict: the commit carries the append's id."""
    from deltalake import DeltaTable, write_deltalake
    from deltalake.transaction import CommitProperties

    from catalog.tables import _committed, to_arrow

    tables = TableStore(tmp_path / "tables")
    tables.create_all()
    stale = tables.table("studies")
    before = stale.version()
    # the first attempt landed (through another handle), its answer never came back
    landed = DeltaTable(str(tmp_path / "tables" / "studies"))
    write_deltalake(
        landed,
        to_arrow("studies", [study_row(1)]),
        mode="append",
        commit_properties=CommitProperties(custom_metadata={"songlake.txn": "ours"}),
    )
    assert _committed(stale, before, "ours")
    assert not _committed(
        DeltaTable(str(tmp_path / "tables" / "studies"), version=before), before, "someone else's"
    )
