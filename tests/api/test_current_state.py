"""The current_* tables after a mixed workload: the API, songlake's SQL views, Polars reading the
Delta tables through their log, and DuckDB over their Arrow datasets all give the same answers."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from typing import Any

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

from catalog import current, sql
from catalog.catalog import Catalog
from catalog.settings import load_settings
from tests.conftest import STUDY, Payloads

EXPERIMENT = {"variantCallingTool": "second bullet", "matchedNormalSampleSubmitterId": "n-2"}


def workload(catalog: Catalog, payloads: Payloads, upload: Any, client: Any) -> list[str]:
    """Submits, PUT and PATCH, publish, unpublish, suppress, file updates and deletes,
    compaction with vacuum (through the API where Song has an endpoint)."""
    ids = []
    for i in range(6):
        files = [payloads.file(f"f{i}.vcf.gz"), payloads.file(f"g{i}.vcf.gz")]
        samples = [payloads.sample(f"s{i}", f"sp{i}", f"d{i % 3}")]
        payload = payloads.variant_call(samples=samples, files=files)
        r = client.post(f"/submit/{STUDY}", json=payload)
        assert r.status_code == 200, r.get_data(as_text=True)
        ids.append(r.get_json()["analysisId"])
        if i < 4:
            upload(ids[-1], payload)
    a0, a1, a2, a3, a4, a5 = ids
    put = {"analysisType": {"name": "variantCall"}, "experiment": EXPERIMENT, "note": "put"}
    assert client.put(f"/studies/{STUDY}/analysis/{a4}", json=put).status_code == 200
    patch = {"note": "patched", "extra": {"k": [1, 2]}}
    assert client.patch(f"/studies/{STUDY}/analysis/{a5}", json=patch).status_code == 200
    for aid in (a0, a1, a2, a3):
        assert client.put(f"/studies/{STUDY}/analysis/publish/{aid}").status_code == 200
    assert client.put(f"/studies/{STUDY}/analysis/unpublish/{a1}").status_code == 200
    assert client.put(f"/studies/{STUDY}/analysis/suppress/{a2}").status_code == 200
    files4 = client.get(f"/studies/{STUDY}/analysis/{a4}/files").get_json()
    r = client.put(
        f"/studies/{STUDY}/files/{files4[0]['objectId']}",
        json={"fileAccess": "controlled", "info": {"reviewed": True}},
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    files5 = client.get(f"/studies/{STUDY}/analysis/{a5}/files").get_json()
    assert catalog.delete_files(STUDY, [files5[1]["objectId"]]) is None
    catalog.tables.compact()
    catalog.tables.vacuum("files", 0)  # every replaced file, however young
    return ids


def last_write(catalog: Catalog) -> int:
    """The catalog version of the newest write (compactions record none)."""
    return sql.run(catalog.tables, "SELECT max(version) FROM commits")[1][0][0]


@pytest.fixture
def loaded(catalog: Catalog, payloads: Payloads, upload: Any, client: Any) -> list[str]:
    ids = workload(catalog, payloads, upload, client)
    catalog.committer.settle()
    catalog.current.settle()
    assert current.refresh(catalog.tables, retention_hours=0) == last_write(catalog)
    return ids


def engines(catalog: Catalog) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every current_* table's rows, read by Polars and by DuckDB, and the matching view."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {"polars": {}, "duckdb": {}, "views": {}}
    con = sql.connect(catalog.tables)
    for name, view in current.CURRENT.items():
        uri = catalog.tables.uri(name)
        out["polars"][name] = pl.scan_delta(uri).collect().drop("catalog_version").to_dicts()
        duck = duckdb.connect()
        duck.register("t", current.read(catalog.tables, name))  # Arrow, from the Delta log
        cur = duck.execute("SELECT * EXCLUDE (catalog_version) FROM t")
        cols = [d[0] for d in cur.description or []]
        out["duckdb"][name] = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
        cur = con.execute(f"SELECT * FROM {view}")
        cols = [d[0] for d in cur.description or []]
        out["views"][name] = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    return out


KEYS = {
    "current_analyses": "analysis_id",
    "current_files": "object_id",
    "current_donors": "donor_id",
    "current_specimens": "specimen_id",
    "current_samples": "sample_id",
    "current_analysis_samples": "sample_id",
}


def test_every_reading_agrees_after_a_mixed_workload(catalog, loaded, client) -> None:
    readings = engines(catalog)
    for name, key in KEYS.items():
        by = {
            engine: sorted(rows[name], key=lambda r, k=key: (r[k], str(r)))  # type: ignore[misc]
            for engine, rows in readings.items()
        }
        assert by["polars"] == by["views"], name
        assert by["duckdb"] == by["views"], name
    analyses = {r["analysis_id"]: r for r in readings["polars"]["current_analyses"]}
    files = readings["polars"]["current_files"]

    # counts by state: the API's answer, the views', the current tables'
    states = Counter(r["analysis_state"] for r in analyses.values())
    assert states == {"PUBLISHED": 2, "UNPUBLISHED": 3, "SUPPRESSED": 1}
    for state, n in states.items():
        got = client.get(f"/studies/{STUDY}/analysis", query_string={"analysisStates": state})
        assert len(got.get_json()) == n
    # each analysis: state, dynamic data, files and donors as the API answers them
    for aid in loaded:
        doc = client.get(f"/studies/{STUDY}/analysis/{aid}").get_json()
        row = analyses[aid]
        assert row["analysis_state"] == doc["analysisState"]
        data = json.loads(row["data"])
        for key in ("experiment", "note", "extra"):
            assert data.get(key) == doc.get(key), (aid, key)
        own = {f["object_id"]: f for f in files if f["analysis_id"] == aid}
        assert set(own) == {f["objectId"] for f in doc["files"]}
        for f in doc["files"]:
            assert own[f["objectId"]]["file_access"] == f["fileAccess"]
            assert own[f["objectId"]]["file_md5sum"] == f["fileMd5sum"]
        donors = {s["donor"]["donorId"]: s["donor"] for s in doc["samples"]}
        for donor in readings["polars"]["current_donors"]:
            if donor["donor_id"] in donors:
                want = donors[donor["donor_id"]]
                assert donor["submitter_donor_id"] == want["submitterDonorId"]
                assert donor["gender"] == want["gender"]
    published = [a for a in analyses.values() if a["analysis_state"] == "PUBLISHED"]
    assert all(a["first_published_at"] is not None for a in published)
    assert len(files) == 11  # 12 files, one deleted: no versions, no tombstones
    assert len(readings["polars"]["current_donors"]) == 3


def test_each_table_says_which_catalog_version_it_reflects(catalog, loaded) -> None:
    version = last_write(catalog)
    for name in current.CURRENT:
        assert current.reflected(catalog.tables, name) == version
        column = set(pl.scan_delta(catalog.tables.uri(name)).collect()["catalog_version"])
        assert column <= {version}


def test_a_refresh_that_fails_leaves_the_previous_version(catalog, loaded, payloads) -> None:
    """Derived data: a refresh cut short keeps every table at its last whole version, and a
    write that happens meanwhile commits as usual."""
    before = {n: DeltaTable(catalog.tables.uri(n)).version() for n in current.CURRENT}
    reflected = current.reflected(catalog.tables, "current_analyses")
    aid = catalog.submit(payloads.variant_call(), STUDY)
    broken = current.CURRENT.copy()
    current.CURRENT["current_files"] = "no_such_view"
    try:
        with pytest.raises(duckdb.Error):
            current.refresh(catalog.tables)
    finally:
        current.CURRENT.clear()
        current.CURRENT.update(broken)
    # the tables before the failing one moved as a whole; the rest are where they were
    assert current.reflected(catalog.tables, "current_files") == reflected
    assert DeltaTable(catalog.tables.uri("current_files")).version() == before["current_files"]
    assert aid not in {r["analysis_id"] for r in current.read(catalog.tables, "current_files")
                       .to_pylist()}  # fmt: skip
    assert current.refresh(catalog.tables) == last_write(catalog)
    assert aid in set(current.read(catalog.tables, "current_analyses")["analysis_id"].to_pylist())


def test_the_background_refresh_follows_the_writes(settings, _template_root, payloads) -> None:
    shutil.copytree(_template_root, settings.root)
    cat = Catalog(load_settings(settings.root, current_refresh_commits=2))
    first = cat.submit(payloads.variant_call(), STUDY)
    assert current.reflected(cat.tables, "current_analyses") is None  # 1 write of 2
    second = cat.submit(payloads.variant_call(), STUDY)
    cat.current.settle()
    assert cat.current.refreshed == [last_write(cat)]
    ids = set(current.read(cat.tables, "current_analyses")["analysis_id"].to_pylist())
    assert {first, second} <= ids
