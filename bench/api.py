"""API performance through HTTP at 1,000,000 analyses (issue 5), against ``songlake serve``.

1. Copies the catalog ``bench/readmodel.py`` builds (bench/data/readmodel-<N>/, built on demand
   with its generator) to bench/data/api-<N>/, fresh each run: the publish phase writes to it.
2. Puts Score-layout ``.meta`` objects for the files of --publishes UNPUBLISHED analyses into the
   copy's object store, with the declared size and md5 (what publish verifies).
3. Starts ``songlake serve --no-watch --threads T`` on a free loopback port (the events
   dispatcher off: this measures the API), reads the admin token it creates, waits for /isAlive.
4. Loads it from this process over loopback, http.client keep-alive connections:
   GET analysis by id (one client, then 16 clients for req/s), Song's id search by
   submitterDonorId (500 hits), the paginated listing at offset 500,000, and concurrent
   publishes (group commit), then checks every publish is in the history.

    .venv/bin/python bench/api.py [--analyses 1000000] [--clients 16] [--publishers 256]

Targets (issue 5) on 2 cores: GET p50 <= 5 ms, p99 <= 25 ms; id search p50 <= 40 ms; page at
offset 500,000 p50 <= 80 ms; >= 500 GET/s with 16 clients; >= 400 publishes/s, history complete.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow.compute as pc  # noqa: E402

from bench.common import (  # noqa: E402
    DATA_DIR,
    fmt_table,
    machine,
    summarize_ms,
    write_result,
)

BIG = "BIGSTUDY"
TARGETS = {
    "get_p50_ms": 5.0,
    "get_p99_ms": 25.0,
    "search_p50_ms": 40.0,
    "page_p50_ms": 80.0,
    "get_per_s": 500.0,
    "publish_per_s": 400.0,
}
# Song's own architecture on the same data set (reference/limits.md B7), for the report
SONG_BASELINE = {
    "get": "0.57 ms (SQL only)",
    "search": "50 ms ids + 93 ms docs",
    "page": "1,118 ms",
    "publish": "1,200 / 2,640 per s (1 / 2 clients)",
}


# --- the catalog ------------------------------------------------------------------------------


def source_catalog(n: int) -> Path:
    """bench/readmodel.py's catalog of n analyses, built with its generator when missing."""
    from bench import readmodel

    root = DATA_DIR / f"readmodel-{n}"
    meta_path = root / "bench_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if (
        meta is None
        or meta.get("analyses") != n
        or (meta.get("generator_version") != readmodel.GENERATOR_VERSION)
    ):
        print(f"building a catalog of {n:,} analyses in {root} (bench/readmodel.py's generator)")
        readmodel.build(root, n)
    return root


def fresh_copy(source: Path, n: int) -> Path:
    target = DATA_DIR / f"api-{n}"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target


def unpublished_analyses(root: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(analysisId, studyId) of every analysis, and of those never state-changed."""
    from catalog.tables import TableStore

    tables = TableStore(root / "tables")
    analyses = tables.read("analyses").select(["analysis_id", "study_id", "version"])
    analyses = analyses.filter(pc.equal(analyses.column("version"), 1))
    changed = set(tables.read("analysis_state_history").column("analysis_id").to_pylist())
    every = list(
        zip(
            analyses.column("analysis_id").to_pylist(),
            analyses.column("study_id").to_pylist(),
            strict=True,
        )
    )
    return every, [a for a in every if a[0] not in changed]


def stage_objects(root: Path, analysis_ids: set[str]) -> int:
    """Write Score objects (a sparse blob of the declared size, and a .meta with the declared
    md5) for every file of these analyses: what publish checks, without the bytes."""
    from catalog.store import ObjectSpec
    from catalog.tables import TableStore

    files = TableStore(root / "tables").read("files")
    files = files.filter(pc.is_in(files.column("analysis_id"), value_set=_arrow(analysis_ids)))
    data = root / "objects" / "data"
    data.mkdir(parents=True, exist_ok=True)
    count = 0
    for oid, size, md5 in zip(
        files.column("object_id").to_pylist(),
        files.column("file_size").to_pylist(),
        files.column("file_md5sum").to_pylist(),
        strict=True,
    ):
        with open(data / oid, "wb") as blob:  # sparse: the declared size, no content
            blob.truncate(size)
        (data / f"{oid}.meta").write_text(ObjectSpec(oid, size, md5).to_json())
        count += 1
    return count


def _arrow(values: set[str]) -> Any:
    import pyarrow as pa

    return pa.array(sorted(values), pa.string())


# --- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGLAKE_")}
    env["SONGLAKE_EVENTS"] = json.dumps({"enabled": False})
    songlake = Path(sys.executable).parent / "songlake"
    out = log.open("w")
    return subprocess.Popen(
        [
            str(songlake),
            "--root",
            str(root),
            "serve",
            "--no-watch",
            "--port",
            str(port),
            "--threads",
            str(threads),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )


def wait_alive(port: int, proc: subprocess.Popen, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"songlake serve exited with {proc.returncode}")
        try:
            status, body = Client(port)("GET", "/isAlive")
            if status == 200 and body is True:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"songlake serve did not answer within {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        self.conn.request(method, path, body=data, headers=self.headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)

    def timed(self, method: str, path: str) -> tuple[float, int, int]:
        """(seconds, status, body bytes), the body read but not parsed."""
        t0 = time.perf_counter()
        self.conn.request(method, path, headers=self.headers)
        response = self.conn.getresponse()
        raw = response.read()
        return time.perf_counter() - t0, response.status, len(raw)


# --- the measurements -----------------------------------------------------------------------


def measure_sequential(client: Client, paths: list[str]) -> tuple[dict[str, float], int]:
    times, sizes = [], []
    for path in paths:
        seconds, status, size = client.timed("GET", path)
        if status != 200:
            raise SystemExit(f"GET {path} answered {status}")
        times.append(seconds)
        sizes.append(size)
    return summarize_ms(times), sum(sizes) // max(1, len(sizes))


def measure_throughput(port: int, paths: list[str], clients: int, seconds: float) -> dict[str, Any]:
    """`clients` threads each looping GETs over random paths for `seconds`."""
    stop = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        rng = random.Random(i)
        client = Client(port)
        barrier.wait()
        while time.perf_counter() < stop:
            t, status, _ = client.timed("GET", rng.choice(paths))
            latencies[i].append(t)
            if status != 200:
                errors[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    flat = [x for lst in latencies for x in lst]
    return {
        "clients": clients,
        "seconds": elapsed,
        "requests": len(flat),
        "per_s": len(flat) / elapsed,
        "errors": sum(errors),
        **summarize_ms(flat),
    }


def measure_publishes(
    port: int, token: str, targets: list[tuple[str, str]], publishers: int, seconds: float
) -> dict[str, Any]:
    """`publishers` threads publishing distinct analyses until the time or the work runs out."""
    work: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
    for item in targets:
        work.put(item)
    done: list[list[str]] = [[] for _ in range(publishers)]
    failed: list[list[tuple[str, int, Any]]] = [[] for _ in range(publishers)]
    latencies: list[list[float]] = [[] for _ in range(publishers)]
    barrier = threading.Barrier(publishers + 1)
    stop = [0.0]

    def worker(i: int) -> None:
        client = Client(port, token)
        barrier.wait()
        while time.perf_counter() < stop[0]:
            try:
                aid, sid = work.get_nowait()
            except queue.Empty:
                return
            t0 = time.perf_counter()
            status, body = client("PUT", f"/studies/{sid}/analysis/publish/{aid}")
            latencies[i].append(time.perf_counter() - t0)
            if status == 200:
                done[i].append(aid)
            else:
                failed[i].append((aid, status, body))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(publishers)]
    for t in threads:
        t.start()
    stop[0] = time.perf_counter() + seconds
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    ok = [a for lst in done for a in lst]
    bad = [f for lst in failed for f in lst]
    return {
        "publishers": publishers,
        "seconds": elapsed,
        "published": ok,
        "failures": bad[:5],
        "failed": len(bad),
        "per_s": len(ok) / elapsed,
        **summarize_ms([x for lst in latencies for x in lst]),
    }


def check_history(port: int, token: str, published: list[str], study_of: dict[str, str]) -> dict:
    """Every 200 publish left its history row, and the analysis reads PUBLISHED."""
    client = Client(port, token)
    status, body = client(
        "POST",
        "/sql",
        {
            "query": "SELECT count(*) AS n, count(DISTINCT analysis_id) AS a "
            "FROM analysis_state_history WHERE actor = 'admin' AND updated_state = 'PUBLISHED'"
        },
    )
    rows, distinct = body["rows"][0] if status == 200 else (None, None)
    sample = random.Random(3).sample(published, min(500, len(published)))
    wrong = []
    for aid in sample:
        status, doc = client("GET", f"/studies/{study_of[aid]}/analysis/{aid}")
        last = doc["analysisStateHistory"][-1] if status == 200 else None
        if (
            status != 200
            or doc["analysisState"] != "PUBLISHED"
            or last["updatedState"] != ("PUBLISHED")
        ):
            wrong.append(aid)
    return {
        "history_rows": rows,
        "history_analyses": distinct,
        "expected": len(published),
        "complete": rows == len(published) == distinct and not wrong,
        "documents_checked": len(sample),
        "documents_wrong": wrong[:5],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--analyses", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=256, help="server worker threads")
    ap.add_argument("--clients", type=int, default=16, help="concurrent GET clients")
    ap.add_argument("--publishers", type=int, default=256, help="concurrent publish clients")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of GET load")
    ap.add_argument("--publish-seconds", type=float, default=30.0)
    ap.add_argument("--publishes", type=int, default=20_000, help="analyses staged to publish")
    ap.add_argument("--gets", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=50, help="searches and pages")
    ap.add_argument("--startup-timeout", type=float, default=900.0)
    ap.add_argument("--name", help="results file name (default api-<N>)")
    args = ap.parse_args(argv)
    rng = random.Random(11)

    source = source_catalog(args.analyses)
    t0 = time.perf_counter()
    root = fresh_copy(source, args.analyses)
    every, unpublished = unpublished_analyses(root)
    study_of = dict(every)
    targets = rng.sample(unpublished, min(args.publishes, len(unpublished)))
    staged = stage_objects(root, {a for a, _ in targets})
    print(f"copied to {root} and staged {staged:,} objects in {time.perf_counter() - t0:.0f} s")

    port = free_port()
    log = root / "serve.log"
    proc = start_server(root, port, args.threads, log)
    try:
        startup = wait_alive(port, proc, args.startup_timeout)
        token = (root / "state" / "admin-token").read_text().strip()
        print(f"songlake serve answered after {startup:.0f} s (RSS {rss_mb(proc.pid):,.0f} MB)")
        results: dict[str, Any] = {"startup_s": startup}
        client = Client(port)
        ids = [rng.choice(every) for _ in range(args.gets)]
        gets = [f"/studies/{s}/analysis/{a}" for a, s in ids]
        measure_sequential(client, gets[:200])  # warm-up
        results["get"], results["get_bytes"] = measure_sequential(client, gets)
        print(f"GET by id: {results['get']}")

        big_donors = sum(1 for _, s in every if s == BIG) // 5
        groups = max(1, big_donors // 100)
        searches = [
            f"/studies/{BIG}/analysis/search/id?submitterDonorId=D{rng.randrange(groups):05d}"
            for _ in range(args.reps + 3)
        ]
        measure_sequential(client, searches[:3])
        results["search"], results["search_bytes"] = measure_sequential(client, searches[3:])
        status, hits = client("GET", searches[3])
        results["search_hits"] = len(hits)
        print(f"id search ({len(hits)} hits): {results['search']}")

        page = (
            f"/studies/{BIG}/analysis/paginated?analysisStates=PUBLISHED,UNPUBLISHED,SUPPRESSED"
            "&limit=100&offset=500000"
        )
        measure_sequential(client, [page] * 3)
        results["page"], results["page_bytes"] = measure_sequential(client, [page] * args.reps)
        status, body = client("GET", page)
        results["page_returned"] = body["currentTotalAnalyses"]
        results["page_total"] = body["totalAnalyses"]
        print(f"page @500,000: {results['page']}")
        client.conn.close()

        cpu0 = cpu_seconds(proc.pid)
        results["throughput"] = measure_throughput(port, gets, args.clients, args.duration)
        results["throughput"]["server_cpu_ms_per_request"] = (
            1000 * (cpu_seconds(proc.pid) - cpu0) / max(1, results["throughput"]["requests"])
        )
        print(f"GET load: {results['throughput']}")

        cpu0 = cpu_seconds(proc.pid)
        pub = measure_publishes(port, token, targets, args.publishers, args.publish_seconds)
        published = pub.pop("published")
        pub["server_cpu_ms_per_publish"] = (
            1000 * (cpu_seconds(proc.pid) - cpu0) / max(1, len(published))
        )
        results["publish"] = pub
        print(f"publishes: {pub}")
        results["history"] = check_history(port, token, published, study_of)
        print(f"history: {results['history']}")
        results["server_rss_mb"] = rss_mb(proc.pid)
        results["server_health"] = Client(port)("GET", "/health")[1]
        print(f"group commit: {results['server_health'].get('groupCommit')}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    r = results
    rows = [
        [
            "GET analysis by id p50 / p99 (ms)",
            f"{r['get']['p50_ms']:.2f} / {r['get']['p99_ms']:.2f}",
            "<= 5 / <= 25",
            _ok(r["get"]["p50_ms"] <= 5 and r["get"]["p99_ms"] <= 25),
            SONG_BASELINE["get"],
        ],
        [
            f"id search p50 ({r['search_hits']} hits, ms)",
            f"{r['search']['p50_ms']:.1f}",
            "<= 40",
            _ok(r["search"]["p50_ms"] <= 40),
            SONG_BASELINE["search"],
        ],
        [
            "page of 100 @ offset 500,000 p50 (ms)",
            f"{r['page']['p50_ms']:.1f}",
            "<= 80",
            _ok(r["page"]["p50_ms"] <= 80),
            SONG_BASELINE["page"],
        ],
        [
            f"GET req/s, {args.clients} clients",
            f"{r['throughput']['per_s']:,.0f}",
            ">= 500",
            _ok(r["throughput"]["per_s"] >= 500),
            "-",
        ],
        [
            f"publishes/s, {args.publishers} clients",
            f"{r['publish']['per_s']:,.0f}",
            ">= 400",
            _ok(r["publish"]["per_s"] >= 400 and r["history"]["complete"]),
            SONG_BASELINE["publish"],
        ],
    ]
    table = fmt_table(rows, ["figure", "measured", "target", "ok", "Song (limits.md B7)"])
    print()
    print(table)
    print(
        f"server CPU per request: GET {r['throughput']['server_cpu_ms_per_request']:.2f} ms, "
        f"publish {r['publish']['server_cpu_ms_per_publish']:.2f} ms; load average "
        f"{os.getloadavg()[0]:.1f} (other processes on the machine slow every figure)"
    )
    print(
        f"history complete: {r['history']['complete']} ({r['history']['history_rows']} rows for "
        f"{r['history']['expected']} publishes); server RSS {r['server_rss_mb']:,.0f} MB; "
        f"startup {r['startup_s']:.0f} s"
    )
    path = write_result(
        args.name or f"api-{args.analyses}",
        {
            "benchmark": "api",
            "machine": machine(),
            "args": vars(args),
            "targets": TARGETS,
            **results,
        },
    )
    print(f"results: {path}")
    return 0


def _ok(value: bool) -> str:
    return "yes" if value else "NO"


if __name__ == "__main__":
    raise SystemExit(main())
