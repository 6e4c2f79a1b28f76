"""What the ``version`` column of the ``commits`` view costs: a query naming ``commits`` reads the
commit log (one file per commit) to number the rows; any other query does not.

Makes a catalog with N commits (empty commits through ``TableStore.log_commit``: only the log
matters here), then times, in a fresh ``TableStore`` as ``songlake sql`` opens one, a query over
``studies`` and two over ``commits``.

    .venv/bin/python bench/commits.py [--commits 1000] [--reps 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, summarize_ms, time_calls, write_result  # noqa: E402
from catalog import sql  # noqa: E402
from catalog.tables import TableStore  # noqa: E402

QUERIES = {
    "not naming commits": "SELECT count(*) FROM studies",
    "count of commits": "SELECT count(*) FROM commits",
    "latest version": "SELECT max(version) FROM commits",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="songlake-bench-commits-"))
    try:
        tables = TableStore(root / "tables")
        tables.create_all()
        t0 = time.perf_counter()
        for _ in range(args.commits):
            tables.log_commit("bench", "bench", 0)
        made = time.perf_counter() - t0
        print(f"{args.commits} commits made in {made:.1f} s")
        results: dict[str, Any] = {"commits": args.commits, "machine": machine(), "queries": {}}
        for name, query in QUERIES.items():
            timings, rows = time_calls(
                lambda _i, q=query: sql.run(TableStore(root / "tables"), q)[1], args.reps
            )
            summary = summarize_ms(timings)
            results["queries"][name] = {"query": query, "rows": rows, **summary}
            print(f"{name:20} p50 {summary['p50_ms']:8.1f} ms   min {summary['min_ms']:8.1f} ms")
        print(f"load average {results['machine']['loadavg_1_5_15']}")
        print(f"results: {write_result(f'commits-{args.commits}', results)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
