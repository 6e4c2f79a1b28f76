"""Several writer processes on one root, through the commit protocol (issue 12).

Registers N variantCall payloads (JSON bytes, batches of --batch) split over W writer processes
that start at the same instant, each with its own Catalog, all committing through the catalog-wide
writer lease. Reports the total rate against one writer's, the time per batch commit, and the
lease handover: from one writer releasing the lease to the next (waiting) writer holding it.

    .venv/bin/python bench/writers.py [--n 20000] [--batch 1000] [--writers 1 2 4]
                                      [--s3]   (the lease in an S3 object on moto's server)
                                      [--s3-root]  (the whole root on moto: s3://bench/w<N>)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import fmt_table, machine, percentile, write_result  # noqa: E402

STUDY = "BENCHW"


class TimedLease:
    """The process' lease, with the wall-clock time of every take and release recorded."""

    def __init__(self, lease: Any) -> None:
        self.lease = lease
        self.stats = lease.stats
        self.spans: list[tuple[float, float]] = []

    @contextmanager
    def hold(self, while_waiting: Any = None) -> Any:
        with self.lease.hold(while_waiting) as epoch:
            taken = time.time()
            try:
                yield epoch
            finally:
                self.spans.append((taken, time.time()))

    def check(self) -> None:
        self.lease.check()

    def info(self) -> dict[str, Any]:
        return dict(self.lease.info())


def writer_main(root: str, go: str, first: int, count: int, batch: int, salt: str) -> None:
    from bench.common import payload_bytes
    from catalog import Catalog, SubmitItem, load_settings

    cat = Catalog(load_settings(root))
    if os.environ.get("LEASE_S3"):
        import boto3

        from catalog.store.s3lease import S3Lease

        url, bucket, key = os.environ["LEASE_S3"].split()
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        cat.committer.lease = S3Lease(client, bucket, key, ttl=30.0, poll=0.01)
    lease = TimedLease(cat.committer.lease)
    cat.committer.lease = lease  # type: ignore[assignment]
    payloads = [payload_bytes(STUDY, k, salt) for k in range(first, first + count)]
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.0005)
    started = time.time()
    batches, failed = [], 0
    for start in range(0, count, batch):
        t0 = time.perf_counter()
        results = cat.submit_batch([SubmitItem(p, STUDY) for p in payloads[start : start + batch]])
        batches.append(time.perf_counter() - t0)
        failed += sum(1 for r in results if not r.ok)
    out = {
        "started": started,
        "finished": time.time(),
        "batches": batches,
        "failed": failed,
        "spans": lease.spans,
        "stats": lease.stats.as_dict(),
        "conflicts": cat.committer.conflicts,
    }
    print(json.dumps(out), flush=True)


def run(root: Any, writers: int, n: int, batch: int, env: dict[str, str]) -> dict[str, Any]:
    go = Path(tempfile.gettempdir()) / f"songlake-bench-go-{uuid.uuid4().hex}"
    per = n // writers
    salt = uuid.uuid4().hex[:8] + ":"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(root),
                str(go),
                str(w * per),
                str(per),
                str(batch),
                salt,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in range(writers)
    ]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    outs = []
    for p in procs:
        stdout, _ = p.communicate()
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    go.unlink()
    seconds = max(o["finished"] for o in outs) - min(o["started"] for o in outs)
    spans = sorted((s[0], s[1], i) for i, o in enumerate(outs) for s in o["spans"])
    handovers = [
        (b[0] - a[1]) * 1000
        for a, b in zip(spans, spans[1:], strict=False)
        if a[2] != b[2] and b[0] >= a[1] and b[0] - a[1] < 1.0
    ]
    commits = [s * 1000 for o in outs for s in o["batches"]]
    held = [(s[1] - s[0]) * 1000 for s in spans]
    return {
        "writers": writers,
        "registered": per * writers - sum(o["failed"] for o in outs),
        "seconds": seconds,
        "per_s": (per * writers - sum(o["failed"] for o in outs)) / seconds,
        "batch_ms_p50": percentile(commits, 50),
        "held_ms_p50": percentile(held, 50),
        "handover_ms_p50": percentile(handovers, 50) if handovers else None,
        "handover_ms_p99": percentile(handovers, 99) if handovers else None,
        "handovers": len(handovers),
        "conflicts": sum(o["conflicts"] for o in outs),
        "waits": sum(o["stats"]["waits"] for o in outs),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--s3", action="store_true", help="the lease in an S3 object (moto)")
    ap.add_argument("--s3-root", action="store_true", help="the whole root on S3 (moto)")
    args = ap.parse_args(argv)

    from catalog import Catalog, load_settings

    tmp = Path(tempfile.mkdtemp(prefix="songlake-bench-writers-"))
    env = dict(os.environ)
    moto = None
    try:
        if args.s3 or args.s3_root:
            moto = subprocess.Popen(
                [sys.executable, str(REPO / "bench" / "motos3.py"), "0"],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert moto.stdout is not None
            port = int(moto.stdout.readline().split()[1])
            import boto3

            url = f"http://127.0.0.1:{port}"
            aws = {
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
            }
            if args.s3_root:
                aws["AWS_ENDPOINT_URL"] = url
                aws["XDG_STATE_HOME"] = str(tmp / "state")
            env.update(aws)
            os.environ.update(aws)
            client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
            client.create_bucket(Bucket="lease")
            client.create_bucket(Bucket="bench")
        rows = []
        for w in args.writers:
            root: Any = f"s3://bench/w{w}" if args.s3_root else tmp / f"w{w}"
            cat = Catalog.init(load_settings(root))
            cat.create_study({"studyId": STUDY})
            del cat
            if args.s3:
                env["LEASE_S3"] = f"{url} lease state/{w}/writer.lease"
            rows.append(run(root, w, args.n, args.batch, env))
            print(json.dumps(rows[-1]), flush=True)
        one = rows[0]["per_s"]
        res = {
            "benchmark": "writers",
            "machine": machine(),
            "lease": "s3 root (moto)" if args.s3_root else "s3 (moto)" if args.s3 else "flock",
            "params": {"n": args.n, "batch": args.batch},
            "rows": rows,
            "loadavg_after": os.getloadavg(),
        }
        name = "writers-s3root" if args.s3_root else "writers-s3" if args.s3 else "writers"
        path = write_result(name, res)
        print()
        print(
            fmt_table(
                [
                    [
                        str(r["writers"]),
                        f"{r['per_s']:,.0f}/s",
                        f"{r['per_s'] / one:.0%}",
                        f"{r['batch_ms_p50']:.0f}",
                        f"{r['held_ms_p50']:.0f}",
                        "-" if r["handover_ms_p50"] is None else f"{r['handover_ms_p50']:.1f}",
                        "-" if r["handover_ms_p99"] is None else f"{r['handover_ms_p99']:.1f}",
                        str(r["conflicts"]),
                    ]
                    for r in rows
                ],
                [
                    "writers",
                    "total",
                    "vs 1",
                    "batch ms p50",
                    "lease held ms p50",
                    "handover ms p50",
                    "p99",
                    "conflicts",
                ],
            )
        )
        print(f"lease: {res['lease']}; load average now {os.getloadavg()[0]:.2f}; {path}")
        return 0
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        root_, go_, first_, count_, batch_, salt_ = sys.argv[2:8]
        writer_main(root_, go_, int(first_), int(count_), int(batch_), salt_)
    else:
        raise SystemExit(main())
