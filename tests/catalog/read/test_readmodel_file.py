"""The read model's file: shared by the processes of a machine, opened without loading, and rebuilt
from the history tables when it is missing, truncated, damaged or another catalog's."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from catalog import Catalog
from catalog.read import index
from catalog.settings import Settings, load_settings

STUDY = "ABC123"
REPO = Path(__file__).resolve().parents[3]


def folder(settings: Settings) -> Path:
    return settings.state_dir / "readmodel"


def registered(catalog: Catalog, payloads, n: int = 3) -> list[str]:
    ids = [catalog.submit(payloads.variant_call(), STUDY) for _ in range(n)]
    catalog.suppress(STUDY, ids[0])
    return ids


def answers(catalog: Catalog, ids: list[str]) -> list[dict]:
    return [catalog.get_analysis(STUDY, a) for a in ids]


def test_a_second_process_opens_the_file_without_building_or_loading(catalog, payloads) -> None:
    ids = registered(catalog, payloads)
    other = Catalog(catalog.settings)
    assert other.model.rebuilds == 0 and other.model.path == catalog.model.path
    assert answers(other, ids) == answers(catalog, ids)
    assert other.count_analyses(STUDY, ["SUPPRESSED"]) == 1
    assert other.count_analyses(STUDY, ["UNPUBLISHED"]) == 2


def test_a_catalog_without_a_file_builds_one_from_the_history_tables(catalog, payloads) -> None:
    ids = registered(catalog, payloads)
    before = answers(catalog, ids)
    shutil.rmtree(folder(catalog.settings))
    reopened = Catalog(catalog.settings)
    assert reopened.model.rebuilds == 1
    assert answers(reopened, ids) == before
    page = reopened.page_analyses(STUDY, ["UNPUBLISHED"], limit=10, offset=0)["analyses"]
    assert [d["analysisId"] for d in page] == sorted(ids[1:])  # ids[0] was suppressed


def current_file(settings: Settings) -> Path:
    return folder(settings) / f"{(folder(settings) / 'CURRENT').read_text().strip()}.sqlite"


def checkpoint(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def damage(path: Path, name: str) -> None:
    """The root page of a table or index of the file becomes noise."""
    checkpoint(path)
    con = sqlite3.connect(path)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
    con.close()
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(os.urandom(page_size))


def test_a_truncated_file_is_rebuilt_and_a_log_line_says_so(catalog, payloads, caplog) -> None:
    ids = registered(catalog, payloads)
    before = answers(catalog, ids)
    path = current_file(catalog.settings)
    checkpoint(path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="songlake.readmodel"):
        reopened = Catalog(catalog.settings)
    assert "is truncated" in caplog.text and "rebuilding it from the history tables" in caplog.text
    assert reopened.model.rebuilds == 1 and reopened.model.path != path
    assert answers(reopened, ids) == before


def test_a_file_of_another_catalog_is_rebuilt(catalog, payloads, tmp_path, caplog) -> None:
    ids = registered(catalog, payloads)
    before = answers(catalog, ids)
    other = Catalog.init(load_settings(tmp_path / "other"))
    other.create_study({"studyId": STUDY})
    stranger = other.submit(payloads.variant_call(), STUDY)
    shutil.rmtree(folder(catalog.settings))
    shutil.copytree(folder(other.settings), folder(catalog.settings))
    with caplog.at_level(logging.WARNING, logger="songlake.readmodel"):
        reopened = Catalog(catalog.settings)
    assert "belongs to another catalog" in caplog.text
    assert answers(reopened, ids) == before
    assert stranger not in reopened.model.analyses


def test_a_damaged_page_met_by_a_query_rebuilds_the_file(catalog, payloads, caplog) -> None:
    ids = registered(catalog, payloads)
    before = answers(catalog, ids)
    damage(current_file(catalog.settings), "analyses")
    reopened = Catalog(catalog.settings)  # header and meta are fine: opens in constant time
    with caplog.at_level(logging.WARNING, logger="songlake.readmodel"):
        assert answers(reopened, ids) == before
    assert "is corrupt" in caplog.text and reopened.model.rebuilds == 1


def test_the_integrity_check_finds_damage_and_rebuilds(catalog, payloads) -> None:
    ids = registered(catalog, payloads)
    before = answers(catalog, ids)
    assert catalog.model.check_integrity() is True
    damage(current_file(catalog.settings), "history_of")
    reopened = Catalog(catalog.settings)
    assert reopened.model.check_integrity() is False  # found, and rebuilt
    assert reopened.model.check_integrity() is True
    assert answers(reopened, ids) == before


CRASH_IN_BUILD = """
import os, sys
from catalog.read import index
folder = index.Generations(__import__("pathlib").Path(sys.argv[1]))
generation = folder.next_generation()
con = index.new_database(folder.path(generation), "half-built")
con.execute("INSERT INTO studies (study_id, created_at) VALUES ('HALF', 0)")
os._exit(9)  # killed before finishing or publishing
"""

CRASH_IN_APPLY = """
import os, sys
from catalog import Catalog
from catalog.read import index
from catalog.settings import load_settings
cat = Catalog(load_settings(sys.argv[1]))
con = cat.model.con()
con.execute("BEGIN IMMEDIATE")
index.apply(con, "studies", [("HALFWAY", None, None, None, None, 0)])
index.set_cut(con, {"studies": 999})
os._exit(9)  # killed in the middle of applying a commit
"""


def run(script: str, arg: str) -> None:
    proc = subprocess.run([sys.executable, "-c", script, arg], cwd=REPO, capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()


def test_a_crash_in_the_middle_of_a_build_leaves_the_previous_file_in_use(
    catalog, payloads
) -> None:
    ids = registered(catalog, payloads)
    before = answers(catalog, ids)
    in_use = current_file(catalog.settings)
    run(CRASH_IN_BUILD, str(folder(catalog.settings)))
    assert current_file(catalog.settings) == in_use
    reopened = Catalog(catalog.settings)
    assert reopened.model.path == in_use and reopened.model.rebuilds == 0
    assert answers(reopened, ids) == before and "HALF" not in reopened.list_studies()
    # the half-built generation nobody holds is gone
    assert sorted(p.name for p in folder(catalog.settings).glob("*.sqlite")) == [in_use.name]


def test_a_crash_in_the_middle_of_applying_a_commit_leaves_nothing_of_it(catalog) -> None:
    versions = catalog.model.versions
    run(CRASH_IN_APPLY, str(catalog.settings.root))
    reopened = Catalog(catalog.settings)
    assert "HALFWAY" not in reopened.list_studies()
    assert reopened.model.versions == versions


def test_an_own_commit_and_a_refresh_of_the_same_rows_apply_once(catalog, payloads) -> None:
    aid = catalog.submit(payloads.variant_call(), STUDY)
    doc = catalog.get_analysis(STUDY, aid)
    con = catalog.model.con()
    con.execute("DELETE FROM meta WHERE key LIKE 'cut:%'")  # as if nothing had been applied
    catalog.model._seen.clear()
    catalog.refresh()  # every row read again from the log, over the rows already there
    assert catalog.get_analysis(STUDY, aid) == doc
    assert catalog.count_analyses(STUDY) == 1
    assert len(catalog.model.files_of(catalog.model.find(aid))) == len(doc["files"])


@pytest.mark.parametrize("rows", [0, 2])
def test_the_header_check_refuses_what_is_not_a_database(tmp_path, rows) -> None:
    path = tmp_path / "x.sqlite"
    path.write_bytes(b"not a database" * rows)
    assert index.header_problem(path) is not None


def test_pages_at_every_offset_match_the_sorted_ids_in_every_state_mix(
    catalog, payloads, upload
) -> None:
    """Pages start from per-prefix counts: ids sharing a prefix (one bucket), ids spread over
    several, and states mixed, every offset and size gives the slice of the sorted ids."""
    from catalog import SubmitItem

    prefixes = ["000", "000", "000", "001", "00a", "00a", "0f0", "fff", "fff", "fff", "fff"]
    ids = [f"{p}{i:05x}-0000-4000-8000-000000000000" for i, p in enumerate(prefixes)]
    items = []
    for aid in ids:
        payload = payloads.variant_call()
        items.append((aid, payload, SubmitItem(payload, STUDY, analysis_id=aid)))
    assert all(r.ok for r in catalog.submit_batch([item for _, _, item in items]))
    states = {aid: "UNPUBLISHED" for aid in ids}
    for k, (aid, payload, _) in enumerate(items):
        if k % 3 == 0:
            upload(aid, payload)
            catalog.publish(STUDY, aid)
            states[aid] = "PUBLISHED"
        elif k % 4 == 1:
            catalog.suppress(STUDY, aid)
            states[aid] = "SUPPRESSED"
    mixes = [["PUBLISHED"], ["UNPUBLISHED"], ["SUPPRESSED"], ["PUBLISHED", "UNPUBLISHED"],
             ["UNPUBLISHED", "SUPPRESSED"], ["PUBLISHED", "UNPUBLISHED", "SUPPRESSED"]]  # fmt: skip
    for mix in mixes:
        expected = sorted(a for a in ids if states[a] in mix)
        assert catalog.count_analyses(STUDY, mix) == len(expected)
        for limit in (1, 3, 20):
            for offset in range(len(ids) + 2):
                page = catalog.page_analyses(STUDY, mix, limit=limit, offset=offset)
                got = [d["analysisId"] for d in page["analyses"]]
                assert got == expected[offset : offset + limit], (mix, limit, offset)
                assert all(d["analysisState"] in mix for d in page["analyses"])
