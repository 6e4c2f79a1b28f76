"""Read-only SQL over the catalog: DuckDB views named after the tables, current state joined in.

The Delta tables reach DuckDB as Arrow datasets (no DuckDB extension needed). After the views are
made, file-system access is switched off and the configuration locked, so a query cannot read or
write files outside the catalog (``COPY``, ``read_csv('/etc/passwd')``, ``ATTACH`` all fail), and
only a single SELECT statement is accepted.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import duckdb
import pyarrow as pa

from .errors import GatewayTimeout, IllegalQueryParameter, MalformedParameter, ResultTooLarge
from .tables import DATA_TABLES, TableStore

#: the commit-log metadata in which TableStore.log_commit records every table's version
TABLE_VERSIONS_KEY = "songlake.table_versions"

_VISIBLE = "analysis_id IN (SELECT analysis_id FROM _analyses WHERE version = 1)"

VIEWS = {
    "studies": "SELECT * FROM _studies",
    "analysis_types": "SELECT * FROM _analysis_types",
    "analysis_versions": "SELECT * FROM _analyses",
    "analyses": """
        WITH cur AS (
            SELECT * FROM _analyses
            QUALIFY row_number() OVER (PARTITION BY analysis_id ORDER BY version DESC) = 1),
        first AS (SELECT analysis_id, created_at FROM _analyses WHERE version = 1),
        h AS (
            SELECT analysis_id,
                   arg_max(updated_state, updated_at) AS state,
                   max(updated_at) AS state_updated_at,
                   min(updated_at) FILTER (WHERE updated_state = 'PUBLISHED') AS first_published_at,
                   max(updated_at) FILTER (WHERE updated_state = 'PUBLISHED') AS published_at
            FROM _analysis_state_history GROUP BY analysis_id)
        SELECT cur.analysis_id, cur.study_id,
               coalesce(h.state, 'UNPUBLISHED') AS analysis_state,
               cur.analysis_type_name, cur.analysis_type_version, cur.version, cur.data,
               first.created_at,
               greatest(cur.created_at, coalesce(h.state_updated_at, cur.created_at)) AS updated_at,
               h.first_published_at, h.published_at
        FROM cur JOIN first USING (analysis_id) LEFT JOIN h USING (analysis_id)""",
    "donors": f"""SELECT * FROM _donors WHERE {_VISIBLE}
        QUALIFY row_number() OVER (PARTITION BY donor_id ORDER BY created_at) = 1""",
    "specimens": f"""SELECT * FROM _specimens WHERE {_VISIBLE}
        QUALIFY row_number() OVER (PARTITION BY specimen_id ORDER BY created_at) = 1""",
    "samples": f"""SELECT * FROM _samples WHERE {_VISIBLE}
        QUALIFY row_number() OVER (PARTITION BY sample_id ORDER BY created_at) = 1""",
    # the newest row of each file; a newest row without a file_name is a deletion (tombstone)
    "files": f"""SELECT * FROM (SELECT * FROM _files WHERE {_VISIBLE}
        QUALIFY row_number() OVER (PARTITION BY object_id ORDER BY version DESC) = 1)
        WHERE file_name IS NOT NULL""",
    "analysis_samples": f"SELECT DISTINCT * FROM _analysis_samples WHERE {_VISIBLE}",
    "analysis_state_history": f"SELECT * FROM _analysis_state_history WHERE {_VISIBLE}",
    # the catalog version of each commit is the Delta version of its row, read from the log
    "commits": """
        SELECT v.version, c.* EXCLUDE (_n) FROM (
            SELECT *, row_number() OVER (PARTITION BY table_versions ORDER BY committed_at) AS _n
            FROM _commits) c
        LEFT JOIN _commit_versions v ON v.table_versions = c.table_versions AND v.n = c._n
        ORDER BY v.version NULLS FIRST, c.committed_at""",
}


def commit_versions(tables: TableStore, *, wanted: bool = True) -> pa.Table:
    """The catalog version of every commit still in the log, keyed as the ``commits`` view joins
    it: the commit's ``table_versions`` and its rank among commits recording the same ones.

    The log is read only when ``wanted`` (a query naming ``commits``): it costs one file per
    commit.
    """
    found: list[tuple[int, str]] = []
    if wanted:
        for entry in tables.table("commits").history():
            recorded = entry.get(TABLE_VERSIONS_KEY)
            if isinstance(recorded, str) and isinstance(entry.get("version"), int):
                found.append((entry["version"], recorded))
    found.sort()
    seen: dict[str, int] = {}
    ranks = []
    for _, recorded in found:
        seen[recorded] = seen.get(recorded, 0) + 1
        ranks.append(seen[recorded])
    return pa.table(
        {
            "version": pa.array([v for v, _ in found], pa.int64()),
            "table_versions": pa.array([r for _, r in found], pa.string()),
            "n": pa.array(ranks, pa.int64()),
        }
    )


def connect(
    tables: TableStore,
    versions: dict[str, int] | None = None,
    *,
    query: str | None = None,
    memory_limit: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """A locked-down DuckDB connection with one view per table (at `versions` when given),
    using at most `memory_limit` (a size such as '2GB', or a share of RAM such as '25%').

    Catalog versions are read from the commit log only when `query` names ``commits`` (or no
    query is given).
    """
    con = duckdb.connect()
    if memory_limit:
        con.execute(f"SET memory_limit = '{_memory_limit(memory_limit)}'")
    for name in [*DATA_TABLES, "commits"]:
        version = versions.get(name) if versions else None
        con.register(f"_{name}", tables.dataset(name, version))
    wanted = query is None or "commits" in duckdb.get_table_names(query)
    con.register("_commit_versions", commit_versions(tables, wanted=wanted))
    for view, body in VIEWS.items():
        con.execute(f"CREATE VIEW {view} AS {body}")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _memory_limit(value: str) -> str:
    """DuckDB's size for a setting: a share of RAM ('25%') becomes bytes; a size is checked."""
    text = value.strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1]) / 100
        except ValueError:
            share = -1.0
        if not 0 < share <= 1:
            raise MalformedParameter(f"sql_memory_limit '{value}' is not a share of RAM")
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return f"{int(ram * share)}B"
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]?i?B", text, re.IGNORECASE):
        raise MalformedParameter(f"sql_memory_limit '{value}' is not a size such as '2GB'")
    return text


def check_query(query: str) -> None:
    """Accept exactly one SELECT statement."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise IllegalQueryParameter(f"SQL does not parse: {exc}") from exc
    if len(statements) != 1:
        raise IllegalQueryParameter("Exactly one SQL statement is accepted")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise IllegalQueryParameter(
            f"Only SELECT queries are allowed, not {statements[0].type.name}",
        )


def run(
    tables: TableStore,
    query: str,
    *,
    versions: dict[str, int] | None = None,
    row_limit: int = 10_000,
    timeout: float | None = None,
    memory_limit: str | None = None,
    max_bytes: int | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only query; returns column names and at most row_limit rows.

    With a timeout (seconds) the query is interrupted when it runs longer: ``gateway.timed.out``.
    A query needing more than ``memory_limit``, or an answer of more than about ``max_bytes``,
    is refused with ``payload.too.large`` (rows do not bound bytes: one row can hold a gigabyte).
    """
    check_query(query)
    con = connect(tables, versions, query=query, memory_limit=memory_limit)
    timer = threading.Timer(timeout, con.interrupt) if timeout else None
    try:
        if timer is not None:
            timer.start()
        cur = con.execute(query)
        columns = [d[0] for d in cur.description or []]
        rows = _fetch(cur, row_limit, max_bytes)
    except duckdb.InterruptException as exc:
        raise GatewayTimeout(
            f"The query was stopped after the time limit of {timeout:g} s",
        ) from exc
    except duckdb.OutOfMemoryException as exc:
        raise ResultTooLarge(
            f"The query needs more memory than the limit of {memory_limit} (sql_memory_limit)"
        ) from exc
    except duckdb.PermissionException as exc:
        raise IllegalQueryParameter(f"SQL refused: {exc}") from exc
    except duckdb.Error as exc:
        raise IllegalQueryParameter(f"SQL failed: {exc}") from exc
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
        con.close()
    return columns, rows


def _fetch(cur: duckdb.DuckDBPyConnection, row_limit: int, max_bytes: int | None) -> list[Any]:
    """At most ``row_limit`` rows, refused once their text passes ``max_bytes``."""
    if max_bytes is None:
        return cur.fetchmany(row_limit)
    rows: list[Any] = []
    size = 0
    while len(rows) < row_limit:
        chunk = cur.fetchmany(min(1000, row_limit - len(rows)))
        if not chunk:
            break
        for row in chunk:
            size += sum(_size(v) for v in row)
        if size > max_bytes:
            raise ResultTooLarge(
                f"The answer is over the limit of {max_bytes:,} bytes (sql_max_bytes); select "
                "fewer or shorter columns, or fewer rows"
            )
        rows.extend(chunk)
    return rows


def _size(value: Any) -> int:
    if isinstance(value, (str, bytes)):
        return len(value)
    if value is None or isinstance(value, (int, float)):
        return 8
    return len(repr(value))  # lists, structs, maps, times
