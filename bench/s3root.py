"""A catalog root on S3 (moto's S3 app on loopback, bench/motos3.py in its own process).

1. Registration through ``Catalog.submit_batch`` into ``s3://bench/catalog`` (bench/register.py,
   one writer): analyses/s and the time of each batch's commit.
2. What a reader pays to stay current: ``Catalog.refresh()`` when nothing changed (a HEAD per
   table for the next log entry), and when another process committed one batch (its log entries
   and Parquet files read over S3).

    .venv/bin/python bench/s3root.py [--n 5000] [--batch 1000] [--reps 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import register  # noqa: E402
from bench.common import fmt_table, machine, payload_bytes, summarize_ms, write_result  # noqa: E402
from bench.storage import Moto  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="payloads to register")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=20, help="refreshes timed")
    args = ap.parse_args(argv)
    moto = Moto()
    try:
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_REGION="us-east-1",
            AWS_ENDPOINT_URL=moto.url,
            AWS_EC2_METADATA_DISABLED="true",
            XDG_STATE_HOME=tempfile.mkdtemp(prefix="songlake-bench-s3root-"),
        )
        moto.client().create_bucket(Bucket="bench")
        root = "s3://bench/catalog"
        register.main(
            [
                "--root",
                root,
                "--n",
                str(args.n),
                "--batch",
                str(args.batch),
                "--study",
                "S3BENCH",
                "--name",
                "register-s3",
            ]
        )
        from catalog import Catalog, SubmitItem
        from catalog.settings import load_settings

        reader, writer = Catalog(load_settings(root)), Catalog(load_settings(root))
        idle, changed = [], []
        for rep in range(args.reps):
            t0 = time.perf_counter()
            reader.refresh()
            idle.append(time.perf_counter() - t0)
            if rep < 5:
                salt = uuid.uuid4().hex[:8]
                items = [
                    SubmitItem(payload_bytes("S3BENCH", k, salt), "S3BENCH")
                    for k in range(args.batch)
                ]
                assert all(r.ok for r in writer.submit_batch(items))
                t0 = time.perf_counter()
                assert reader.refresh()
                changed.append(time.perf_counter() - t0)
        res = {
            "benchmark": "s3root",
            "machine": machine(),
            "loadavg": os.getloadavg(),
            "refresh_idle_ms": summarize_ms(idle),
            "refresh_one_batch_ms": summarize_ms(changed),
        }
        write_result("s3root", res)
        print(
            fmt_table(
                [
                    ["refresh, nothing new", f"{res['refresh_idle_ms']['p50_ms']:.1f} ms p50"],
                    [
                        f"refresh, one batch of {args.batch} from another process",
                        f"{res['refresh_one_batch_ms']['p50_ms']:.0f} ms p50",
                    ],
                ],
                ["figure", "measured"],
            )
        )
        print(f"load average {os.getloadavg()[0]:.2f}")
    finally:
        moto.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
