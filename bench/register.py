"""Registration throughput through the library API (issue 2: >= 1,200 analyses/s, 2 cores).

Creates a fresh catalog (a temp dir, or --root), one study, then registers N variantCall payloads
(2 samples, 2 files, ~1.4 KB JSON each, as bytes so parsing is timed too) with
``Catalog.submit_batch`` in batches of --batch (default 1,000). Validation, entity matching, the
Delta group commit and the read-model update are all inside the timed call.

    .venv/bin/python bench/register.py [--n 20000] [--batch 1000] [--root DIR] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    Timer,
    fmt_table,
    machine,
    payload,
    payload_bytes,
    peak_rss_mb,
    percentile,
    write_result,
)
from catalog import Catalog, SubmitItem  # noqa: E402
from catalog.settings import load_settings  # noqa: E402

TARGET = 1200.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="payloads to register")
    ap.add_argument("--batch", type=int, default=1000, help="payloads per submit_batch call")
    ap.add_argument("--root", help="catalog root, a folder or s3://bucket/prefix (default: temp)")
    ap.add_argument("--study", default="BENCH1")
    ap.add_argument(
        "--dicts",
        action="store_true",
        help="pass payloads as dicts instead of JSON bytes (skips json parsing)",
    )
    ap.add_argument("--profile", type=Path, help="write a cProfile of the submit calls here")
    ap.add_argument("--name", default="register", help="results file name (bench/results/)")
    args = ap.parse_args(argv)

    tmp = None
    if args.root is None:
        tmp = Path(tempfile.mkdtemp(prefix="songlake-bench-register-"))
        root = tmp / "catalog"
    else:
        root = args.root
    salt = uuid.uuid4().hex[:8] + ":"  # unique md5s even when --root is reused
    try:
        settings = load_settings(root)
        with Timer() as t_init:
            cat = Catalog.init(settings)
            if args.study not in cat.list_studies():
                cat.create_study({"studyId": args.study, "name": "register benchmark"})
        print(f"catalog {root} ready in {t_init.seconds:.2f} s; generating {args.n:,} payloads")

        make = payload if args.dicts else payload_bytes
        with Timer() as t_gen:
            payloads = [make(args.study, k, salt) for k in range(args.n)]
        sizes = [len(payload_bytes(args.study, k, salt)) for k in range(min(args.n, 1000))]
        print(f"generated in {t_gen.seconds:.1f} s; mean payload {sum(sizes) / len(sizes):.0f} B")

        prof = cProfile.Profile() if args.profile else None
        batches = []
        failures = 0
        first_error = None
        cpu_total = 0.0
        t_all = time.perf_counter()
        for start in range(0, args.n, args.batch):
            items = [SubmitItem(p, args.study) for p in payloads[start : start + args.batch]]
            t0 = time.perf_counter()
            c0 = time.process_time()
            if prof:
                prof.enable()
            results = cat.submit_batch(items)
            if prof:
                prof.disable()
            dt = time.perf_counter() - t0
            cpu = time.process_time() - c0
            cpu_total += cpu
            bad = [r for r in results if not r.ok]
            failures += len(bad)
            if bad and first_error is None:
                first_error = f"{bad[0].error.error_id}: {bad[0].error}"
            batches.append(
                {
                    "index": len(batches),
                    "size": len(items),
                    "seconds": dt,
                    "cpu_seconds": cpu,
                    "per_s": len(items) / dt,
                }
            )
            print(
                f"  batch {len(batches):4d}: {len(items):5d} in {dt * 1000:7.1f} ms "
                f"= {len(items) / dt:7.0f}/s  cpu {cpu * 1000:7.1f} ms  (failed {len(bad)})",
                flush=True,
            )
        total = time.perf_counter() - t_all
        if prof:
            prof.dump_stats(str(args.profile))

        rates = [b["per_s"] for b in batches]
        overall = (args.n - failures) / total
        res = {
            "benchmark": "register",
            "machine": machine(),
            "params": {
                "n": args.n,
                "batch": args.batch,
                "payload": "variantCall, 2 samples, 2 files",
                "as": "dict" if args.dicts else "json bytes",
                "mean_payload_bytes": sum(sizes) / len(sizes),
            },
            "registered": args.n - failures,
            "failures": failures,
            "first_error": first_error,
            "seconds": total,
            "analyses_per_s": overall,
            "cpu_seconds": cpu_total,
            "analyses_per_cpu_s": (args.n - failures) / cpu_total,
            "loadavg_after": os.getloadavg(),
            "first_batch_per_s": rates[0],
            "last_batch_per_s": rates[-1],
            "median_batch_per_s": percentile(rates, 50),
            "min_batch_per_s": min(rates),
            "target_per_s": TARGET,
            "meets_target": overall >= TARGET,
            "peak_rss_mb": peak_rss_mb(),
            "batches": batches,
        }
        path = write_result(args.name, res)
        print()
        print(
            fmt_table(
                [
                    [
                        "overall",
                        f"{overall:,.0f}/s",
                        f">= {TARGET:,.0f}/s",
                        "yes" if overall >= TARGET else "NO",
                    ],
                    ["per CPU-second", f"{(args.n - failures) / cpu_total:,.0f}/s", "", ""],
                    ["first batch", f"{rates[0]:,.0f}/s", "", ""],
                    ["last batch", f"{rates[-1]:,.0f}/s", "", ""],
                    ["median batch", f"{percentile(rates, 50):,.0f}/s", "", ""],
                    ["slowest batch", f"{min(rates):,.0f}/s", "", ""],
                ],
                ["figure", "measured", "target", "ok"],
            )
        )
        print(
            f"\n{args.n - failures:,} registered ({failures} failed) in {total:.1f} s; "
            f"peak RSS {res['peak_rss_mb']:.0f} MB; CPU {cpu_total:.1f} s (process, all "
            f"threads); load average now {os.getloadavg()[0]:.2f}"
        )
        if first_error:
            print(f"first error: {first_error}")
        print(f"results: {path}")
        return 0 if failures == 0 else 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
