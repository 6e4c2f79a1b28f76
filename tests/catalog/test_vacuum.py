"""Vacuum: files compaction or a current-state refresh replaced are deleted after
vacuum_retention, never sooner than the time-travel window, and --as-of says when it is past."""

from __future__ import annotations

import pyarrow.dataset as pads
import pytest

from catalog import current, sql
from catalog.catalog import Catalog
from catalog.errors import MalformedParameter
from catalog.settings import TIME_TRAVEL_HOURS, VACUUM_RETENTION_DEFAULT, load_settings
from tests.conftest import STUDY, Payloads


def parquet_rows(catalog: Catalog, name: str) -> int:
    """Rows in every Parquet file under a table's folder, read without its Delta log."""
    folder = catalog.tables.dir.path
    assert folder is not None
    files = [str(p) for p in (folder / name).glob("*.parquet")]
    return pads.dataset(files, format="parquet").count_rows() if files else 0


def busy(catalog: Catalog, payloads: Payloads, n: int = 4) -> list[str]:
    ids = [catalog.submit(payloads.variant_call(), STUDY) for _ in range(n)]
    catalog.committer.settle()
    catalog.current.settle()
    return ids


def test_the_retention_defaults_to_a_week_and_never_undercuts_time_travel(settings) -> None:
    assert VACUUM_RETENTION_DEFAULT == 7 * 24
    assert load_settings(settings.root).vacuum_retention == VACUUM_RETENTION_DEFAULT
    assert load_settings(settings.root, vacuum_retention=TIME_TRAVEL_HOURS).vacuum_retention == 24
    with pytest.raises(MalformedParameter) as info:
        load_settings(settings.root, vacuum_retention=1)
    assert info.value.error_id == "malformed.parameter"
    assert "vacuum_retention" in str(info.value) and "24 hours" in str(info.value)


def test_vacuum_after_compaction_leaves_only_the_live_files(catalog, payloads) -> None:
    busy(catalog, payloads)
    catalog.tables.compact()
    live = catalog.tables.read("analyses").num_rows
    assert parquet_rows(catalog, "analyses") > live  # the compacted-away files are still there
    assert catalog.tables.vacuum("analyses", VACUUM_RETENTION_DEFAULT) == []  # all too young
    removed = catalog.tables.vacuum("analyses", 0)
    assert removed
    assert parquet_rows(catalog, "analyses") == live  # a reader without the log now reads right
    assert catalog.tables.vacuum("analyses", 0) == []  # nothing left: no further VACUUM commits


def test_vacuum_removes_what_a_refresh_replaced(catalog, payloads) -> None:
    busy(catalog, payloads, 2)
    current.refresh(catalog.tables)
    busy(catalog, payloads, 2)
    current.refresh(catalog.tables, retention_hours=0)
    rows = current.read(catalog.tables, "current_analyses").num_rows
    assert rows == 4
    assert parquet_rows(catalog, "current_analyses") == rows


def test_as_of_past_the_retention_is_refused_with_the_retention_named(catalog, payloads) -> None:
    busy(catalog, payloads, 2)
    latest = sql.run(catalog.tables, "SELECT max(version) FROM commits")[1][0][0]
    first = sql.run(catalog.tables, "SELECT min(version) FROM commits")[1][0][0]
    for as_of in (str(first), "2000-01-01T00:00:00Z"):
        with pytest.raises(MalformedParameter) as info:
            catalog.tables.versions_as_of(as_of, retention_hours=0)
        assert info.value.error_id == "malformed.parameter"
        assert "vacuum_retention of 0 hours" in str(info.value)
    assert catalog.tables.versions_as_of(str(latest), retention_hours=0)
    assert catalog.tables.versions_as_of(str(first), retention_hours=VACUUM_RETENTION_DEFAULT)
