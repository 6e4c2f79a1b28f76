"""Opening a large catalog (issue 13): whole processes, as a user runs them.

On a catalog built by ``bench/readmodel.py`` (``--reuse DIR``), measures:

1. the read-model file: built on the first open (time, peak RSS, size), or reused;
2. ``songlake analysis show <id>``, the whole process, page cache warm (and, when this machine
   lets us write /proc/sys/vm/drop_caches, with the page cache dropped first);
3. ``songlake serve``: start until the first GET of an analysis answers, and the server's
   private memory after that (RssAnon: what is not page cache or shared file pages);
4. reads while another process registers: a thread GETs analyses in a loop while
   ``bench/register.py``-style batches of 1,000 commit, and the longest GET is reported (the
   issue's "no read or write pause over 100 ms").

    .venv/bin/python bench/opening.py --root DIR [--runs 5] [--register 20000] [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    fmt_table,
    machine,
    peak_rss_mb,
    percentile,
    summarize_ms,
    write_result,
)

BIN = Path(sys.executable).parent / "songlake"
REPO = Path(__file__).resolve().parent.parent
TARGETS = {"show_warm_s": 1.0, "show_cold_s": 2.0, "serve_first_s": 3.0, "private_mb": 1024.0}


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def some_ids(root: Path, n: int) -> list[tuple[str, str]]:
    """n random (study, analysis id) pairs, read straight from the file (no catalog opened)."""
    import sqlite3

    folder = root / "state" / "readmodel"
    generation = (folder / "CURRENT").read_text().strip()
    con = sqlite3.connect(f"file:{folder / generation}.sqlite?mode=ro", uri=True)
    total = con.execute("SELECT max(rowid) FROM analyses").fetchone()[0]
    out = []
    rng = random.Random(11)
    while len(out) < n:
        row = con.execute(
            "SELECT a.analysis_id, s.study_id FROM analyses a JOIN studies s ON s.code = a.study "
            "WHERE a.rowid = ?",
            (rng.randrange(1, total + 1),),
        ).fetchone()
        if row:
            out.append((row[1], row[0]))
    con.close()
    return out


def build(root: Path, rebuild: bool) -> dict[str, Any]:
    folder = root / "state" / "readmodel"
    if rebuild and folder.exists():
        shutil.rmtree(folder)
    code = (
        "import logging, resource, sys, time; logging.basicConfig(level=logging.INFO);"
        "from catalog.catalog import Catalog; from catalog.settings import load_settings;"
        f"t = time.perf_counter(); c = Catalog(load_settings({str(root)!r}));"
        "print('OPEN', time.perf_counter() - t, c.model.rebuilds,"
        " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("OPEN")]
    if proc.returncode or not line:
        raise SystemExit(f"open failed: {proc.stderr[-2000:]}")
    _, seconds, rebuilds, peak = line[0].split()
    size = sum(p.stat().st_size for p in folder.glob("*.sqlite*"))
    return {
        "open_s": float(seconds),
        "built": int(rebuilds) > 0,
        "peak_rss_mb": float(peak),
        "file_mb": size / 1e6,
    }


def show_runs(root: Path, ids: list[tuple[str, str]], cold: bool) -> list[float]:
    out = []
    for _, aid in ids:
        if cold and not drop_caches():
            return []
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(BIN), "--root", str(root), "analysis", "show", aid], capture_output=True
        )
        out.append(time.perf_counter() - t0)
        if proc.returncode != 0 or json.loads(proc.stdout)["analysisId"] != aid:
            raise SystemExit(f"analysis show failed: {proc.stderr.decode()[-1000:]}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_start(root: Path, study: str, aid: str, cold: bool) -> dict[str, Any]:
    if cold:
        drop_caches()
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN), "--root", str(root), "serve", "--no-watch", "--no-auth", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/studies/{study}/analysis/{aid}"
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 120:
                    raise SystemExit("serve did not answer") from None
                time.sleep(0.02)
        first = time.perf_counter() - t0
        assert body["analysisId"] == aid
        rollup = Path(f"/proc/{proc.pid}/smaps_rollup").read_text()
        return {
            "first_answer_s": first,
            "rss_anon_mb": status_kb(proc.pid, "RssAnon") / 1024,
            "rss_file_mb": status_kb(proc.pid, "RssFile") / 1024,
            "rss_mb": status_kb(proc.pid, "VmRSS") / 1024,
            "smaps_rollup": rollup,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # reported: serve should stop within 30 s
            print("serve did not stop within 30 s of SIGTERM: killed", flush=True)
            proc.kill()
            proc.wait()


def reads_during_writes(root: Path, ids: list[tuple[str, str]], n: int) -> dict[str, Any]:
    """Register n analyses (batches of 1,000) in one process while this one GETs analyses."""
    from catalog import Catalog
    from catalog.settings import load_settings

    study = "OPENBENCH"
    code = (
        "import sys, time, json, uuid; sys.path.insert(0, '.');"
        "from bench.common import payload_bytes;"
        "from catalog import Catalog, SubmitItem; from catalog.settings import load_settings;"
        f"c = Catalog(load_settings({str(root)!r}));"
        f"study = {study!r}; salt = uuid.uuid4().hex[:8] + ':';"
        "study in c.list_studies() or c.create_study({'studyId': study});"
        f"items = [SubmitItem(payload_bytes(study, k, salt), study) for k in range({n})];"
        "print('READY', flush=True); sys.stdin.readline(); times = [];"
        "t = time.perf_counter()\n"
        "for i in range(0, len(items), 1000):\n"
        "    t0 = time.perf_counter(); r = c.submit_batch(items[i:i + 1000])\n"
        "    assert all(x.ok for x in r), [x.error for x in r if not x.ok][:1]\n"
        "    times.append(time.perf_counter() - t0)\n"
        "print('DONE', json.dumps({'seconds': time.perf_counter() - t, 'batches': times}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None and proc.stdin is not None
    if proc.stdout.readline().strip() != "READY":
        raise SystemExit("registration process failed to start")
    cat = Catalog(load_settings(root))
    gets: list[float] = []
    refreshes: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        k = 0
        while not stop.is_set():
            study, aid = ids[k % len(ids)]
            k += 1
            t0 = time.perf_counter()
            cat.get_analysis(study, aid)
            gets.append(time.perf_counter() - t0)
            if k % 50 == 0:
                t0 = time.perf_counter()
                cat.refresh()  # what serve's RefreshGate does between requests
                refreshes.append(time.perf_counter() - t0)

    thread = threading.Thread(target=reader)
    thread.start()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    done = proc.stdout.readline()
    stop.set()
    thread.join()
    proc.wait()
    if not done.startswith("DONE"):
        raise SystemExit("registration failed")
    reg = json.loads(done[5:])
    return {
        "registered": n,
        "per_s": n / reg["seconds"],
        "batch_ms": summarize_ms(reg["batches"]),
        "max_batch_ms": max(reg["batches"]) * 1000,
        "gets": len(gets),
        "get_ms": summarize_ms(gets),
        "max_get_ms": max(gets) * 1000,
        "refresh_ms": summarize_ms(refreshes) if refreshes else None,
        "max_refresh_ms": max(refreshes) * 1000 if refreshes else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="a catalog built by readmodel.py")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--register", type=int, default=20_000, help="0: skip reads-during-writes")
    ap.add_argument("--rebuild", action="store_true", help="build the read-model file again")
    ap.add_argument("--name", help="results file name (default opening-<N>)")
    args = ap.parse_args(argv)
    meta = json.loads((args.root / "bench_meta.json").read_text())
    res: dict[str, Any] = {"benchmark": "opening", "machine": machine(), "catalog": meta}

    res["open"] = build(args.root, args.rebuild)
    print(f"open: {res['open']}", flush=True)
    ids = some_ids(args.root, max(args.runs, 200))
    show_runs(args.root, ids[:1], cold=False)  # warm the page cache
    res["show_warm_s"] = show_runs(args.root, ids[: args.runs], cold=False)
    res["show_cold_s"] = show_runs(args.root, ids[args.runs : 2 * args.runs], cold=True)
    print(f"show warm {res['show_warm_s']}, cold {res['show_cold_s']}", flush=True)
    study, aid = ids[0]
    res["serve_warm"] = serve_start(args.root, study, aid, cold=False)
    res["serve_cold"] = serve_start(args.root, study, aid, cold=True) if drop_caches() else None
    print(f"serve warm {res['serve_warm']['first_answer_s']:.2f} s", flush=True)
    if args.register:
        res["during_writes"] = reads_during_writes(args.root, ids, args.register)
        print(f"during writes: {res['during_writes']}", flush=True)
    res["peak_rss_mb"] = peak_rss_mb()
    res["loadavg_end"] = os.getloadavg()

    def med(values: list[float]) -> str:
        return f"{percentile(values, 50):.2f} s (max {max(values):.2f})" if values else "n/a"

    sw = res["serve_warm"]
    rows = [
        ["read-model file", f"{'built' if res['open']['built'] else 'opened'} in "
         f"{res['open']['open_s']:.2f} s", "", f"{res['open']['file_mb']:,.0f} MB; peak RSS "
         f"{res['open']['peak_rss_mb']:,.0f} MB"],
        ["analysis show, warm", med(res["show_warm_s"]), "<= 1.0 s", f"n={args.runs}"],
        ["analysis show, cache dropped", med(res["show_cold_s"]), "<= 2.0 s (3.0 at 10M)",
         "" if res["show_cold_s"] else "drop_caches not permitted here"],
        ["serve start to first GET", f"{sw['first_answer_s']:.2f} s", "<= 3 s (5 at 10M)",
         "cold: " + (f"{res['serve_cold']['first_answer_s']:.2f} s" if res["serve_cold"] else
                     "n/a")],
        ["serve private RSS (RssAnon)", f"{sw['rss_anon_mb']:,.0f} MB", "<= 1 GB (4 GB at 10M)",
         f"RSS {sw['rss_mb']:,.0f} MB of which file pages {sw['rss_file_mb']:,.0f} MB"],
    ]  # fmt: skip
    if args.register:
        dw = res["during_writes"]
        rows += [
            ["registration, batches of 1,000", f"{dw['per_s']:,.0f}/s", ">= 2,000/s",
             f"batch p50 {dw['batch_ms']['p50_ms']:.0f} ms, max {dw['max_batch_ms']:.0f} ms"],
            ["GET while registering", f"p50 {dw['get_ms']['p50_ms']:.3f} ms",
             "no pause > 100 ms", f"max {dw['max_get_ms']:.1f} ms over {dw['gets']:,} GETs; "
             f"refresh max {dw['max_refresh_ms'] or 0:.0f} ms"],
        ]  # fmt: skip
    print()
    print(fmt_table(rows, ["figure", "measured", "target", "notes"]))
    print(f"\n{meta['analyses']:,} analyses; load average at the end {res['loadavg_end'][0]:.2f}")
    path = write_result(args.name or f"opening-{meta['analyses']}", res)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
