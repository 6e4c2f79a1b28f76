"""Replicas and publishes over HTTP with the commit protocol in place (issue 12).

1. A fresh catalog of --analyses analyses (bench.common's payloads, registered in batches), each
   file staged in the object store with its declared size and md5 (what publish checks).
2. Two ``songlake serve --no-watch`` processes on that one root.
3. Replica lag: --lag-samples times, publish one analysis on replica 1, then poll replica 2 until
   it answers PUBLISHED: the time from the publish's answer to replica 2's (p50 target <= 1 s).
4. Publish throughput: --publishers clients publishing distinct analyses through replica 1 for
   --seconds (target >= 1,000/s from 64 clients), then every publish checked in the history.

    .venv/bin/python bench/replicas.py [--analyses 20000] [--publishers 64] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import (  # noqa: E402
    Client,
    free_port,
    measure_publishes,
    stage_objects,
    start_server,
    wait_alive,
)
from bench.common import fmt_table, machine, payload_bytes, percentile, write_result  # noqa: E402

STUDY = "BENCHR"


def build(root: Path, n: int) -> list[str]:
    from catalog import Catalog, SubmitItem, load_settings

    cat = Catalog.init(load_settings(root))
    cat.create_study({"studyId": STUDY})
    ids: list[str] = []
    for start in range(0, n, 1000):
        items = [
            SubmitItem(payload_bytes(STUDY, k), STUDY) for k in range(start, min(n, start + 1000))
        ]
        ids += [r.analysis_id for r in cat.submit_batch(items) if r.analysis_id]
    stage_objects(root, set(ids))
    return ids


def replica_lag(one: Client, two: Client, ids: list[str]) -> list[float]:
    lags = []
    for aid in ids:
        status, body = one("PUT", f"/studies/{STUDY}/analysis/publish/{aid}")
        assert status == 200, body
        answered = time.perf_counter()
        while True:
            status, doc = two("GET", f"/studies/{STUDY}/analysis/{aid}")
            if status == 200 and doc["analysisState"] == "PUBLISHED":
                lags.append(time.perf_counter() - answered)
                break
            if time.perf_counter() - answered > 30:
                raise SystemExit(f"replica 2 never saw {aid} PUBLISHED")
            time.sleep(0.005)
    return lags


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--analyses", type=int, default=20_000)
    ap.add_argument("--publishers", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--lag-samples", type=int, default=50)
    ap.add_argument("--threads", type=int, default=32, help="API threads per serve")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="songlake-bench-replicas-"))
    servers = []
    try:
        root = tmp / "catalog"
        t0 = time.perf_counter()
        ids = build(root, args.analyses)
        print(f"{len(ids):,} analyses registered and staged in {time.perf_counter() - t0:.1f} s")
        ports = [free_port(), free_port()]
        for i, port in enumerate(ports):
            servers.append(start_server(root, port, args.threads, tmp / f"serve{i}.log"))
        for port, proc in zip(ports, servers, strict=True):
            wait_alive(port, proc, 300)
        token = (root / "state" / "admin-token").read_text().strip()
        one, two = Client(ports[0], token), Client(ports[1], token)
        lags = replica_lag(one, two, ids[: args.lag_samples])
        pubs = measure_publishes(
            ports[0],
            token,
            [(a, STUDY) for a in ids[args.lag_samples :]],
            args.publishers,
            args.seconds,
        )
        published = set(pubs.pop("published"))
        _, history = one("GET", f"/studies/{STUDY}/analysis?analysisStates=PUBLISHED")
        seen = {d["analysisId"] for d in history} if isinstance(history, list) else set()
        missing = len(published - seen)
        res = {
            "benchmark": "replicas",
            "machine": machine(),
            "params": vars(args),
            "lag_ms_p50": percentile([x * 1000 for x in lags], 50),
            "lag_ms_p99": percentile([x * 1000 for x in lags], 99),
            "publishes": pubs,
            "published_missing_from_history": missing,
            "loadavg_after": os.getloadavg(),
        }
        path = write_result("replicas", res)
        print(
            fmt_table(
                [
                    ["replica lag p50", f"{res['lag_ms_p50']:.0f} ms", "<= 1,000 ms"],
                    ["replica lag p99", f"{res['lag_ms_p99']:.0f} ms", ""],
                    [
                        f"publishes, {args.publishers} clients",
                        f"{pubs['per_s']:,.0f}/s",
                        ">= 1,000/s",
                    ],
                    ["publish p50 / p99", f"{pubs['p50_ms']:.0f} / {pubs['p99_ms']:.0f} ms", ""],
                    ["failed / missing", f"{pubs['failed']} / {missing}", "0 / 0"],
                ],
                ["figure", "measured", "target"],
            )
        )
        print(f"load average now {os.getloadavg()[0]:.2f}; {path}")
        return 0
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
