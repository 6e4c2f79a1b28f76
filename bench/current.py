"""Refresh of the current_* tables, and reads over them, on a built catalog (no timed test).

    python bench/current.py --root COPY_OF_A_CATALOG

Measures, in this process: one full refresh (every current_* table rewritten from the SQL views
at the newest catalog version; wall time, CPU, peak RSS), a second refresh at the same version
(a no-op), and count-by-state plus one analysis by id, read by Polars over current_analyses and
by `songlake sql`'s exact view. Writes only under the root it is given: copy a catalog first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402

from catalog import current, sql  # noqa: E402
from catalog.settings import load_settings  # noqa: E402
from catalog.tables import TableStore  # noqa: E402


def timed(fn):  # type: ignore[no-untyped-def]
    cpu0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - cpu0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", type=Path, required=True)
    args = ap.parse_args()
    tables = TableStore(load_settings(args.root).tables_dir)
    report: dict[str, object] = {"load": os.getloadavg()}
    version, wall, cpu = timed(lambda: current.refresh(tables))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["refresh"] = {"version": version, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss}
    _, wall, _ = timed(lambda: current.refresh(tables))
    report["refresh_again_same_version_s"] = wall
    uri = tables.uri("current_analyses")
    counts, wall, _ = timed(
        lambda: (
            pl.scan_delta(uri)
            .filter(pl.col("study_id") == "BIGSTUDY")
            .group_by("analysis_state")
            .len()
            .collect()
        )
    )
    report["polars_count_by_state_s"] = wall
    report["counts"] = dict(counts.iter_rows())
    some = pl.scan_delta(uri).select("analysis_id").head(1).collect().item()
    _, wall, _ = timed(lambda: pl.scan_delta(uri).filter(pl.col("analysis_id") == some).collect())
    report["polars_one_analysis_s"] = wall
    query = "SELECT analysis_state, count(*) FROM analyses WHERE study_id = 'BIGSTUDY' GROUP BY 1"
    _, wall, _ = timed(lambda: sql.run(tables, query))
    report["sql_view_count_by_state_s"] = wall
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
