"""Watcher benchmarks (issue 3), against a real ``songlake watch`` process on a fresh root.

1. burst:   N sidecars (500, then 10,000), each with two 1 KiB files (a bench.common payload: 2
            samples, 2 files, ~1.4 KB), prepared beside the inbox and renamed into it at once;
            time until every receipt exists. Target >= 500 sidecars/s.
2. latency: one sidecar with two small files dropped into the idle watcher, --drops times; time
            from the sidecar's close to its receipt. Targets p50 <= 300 ms, p99 <= 1 s.
3. big:     one sidecar with a --big-gib GiB file: registration plus copy into the local store,
            against single-core md5 of the same file measured in the same run. Target >= 80 %.

    .venv/bin/python bench/watcher.py [--n 500,10000] [--drops 60] [--big-gib 2] [--skip ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, machine, payload, summarize_ms, write_result  # noqa: E402
from catalog.catalog import Catalog  # noqa: E402
from catalog.settings import load_settings  # noqa: E402

STUDY = "BENCH"
KIB = 1024


def start_watcher(root: Path, log: Path) -> subprocess.Popen:
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "songlake", "--root", str(root), "watch"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
        )
    deadline = time.monotonic() + 60
    while b"songlake watching" not in log.read_bytes()[offset:]:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"watcher did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_cpu_seconds(pid: int) -> float:
    """CPU of the watcher's child processes (the upload workers) that are alive now."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0.0
    for child in children:
        try:
            total += cpu_seconds(int(child))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine (every process and kernel thread), from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def receipt(sidecar: Path) -> Path:
    return sidecar.with_name(sidecar.name.replace(".song.json", ".song.receipt.json"))


def sidecar_with_files(folder: Path, k: int, salt: str) -> Path:
    """A bench.common payload whose two files exist with 1 KiB of unique content each."""
    doc = payload(STUDY, k, salt)
    folder.mkdir(parents=True, exist_ok=True)
    for j, f in enumerate(doc["files"]):
        content = f"{salt}{k}/{j}".encode().ljust(KIB, b".")
        (folder / f["fileName"]).write_bytes(content)
        f["fileSize"] = len(content)
        f["fileMd5sum"] = hashlib.md5(content).hexdigest()
    sidecar = folder / f"analysis{k:06d}.song.json"
    sidecar.write_text(json.dumps(doc))
    return sidecar


def batches_from_log(log: Path, offset: int) -> list[dict[str, Any]]:
    out = []
    for line in log.read_bytes()[offset:].splitlines():
        if line.startswith(b"{") and b'"event": "batch"' in line:
            out.append(json.loads(line))
    return out


# -- 1. burst ---------------------------------------------------------------------------------


def bench_burst(root: Path, proc: subprocess.Popen, log: Path, n: int) -> dict[str, Any]:
    salt = uuid.uuid4().hex[:8]
    staging = root / "staging" / STUDY / f"burst{n}"
    t = time.perf_counter()
    sidecars = [
        sidecar_with_files(staging / f"run{k // 100:03d}" / f"a{k:06d}", k, salt) for k in range(n)
    ]
    prepare = time.perf_counter() - t
    os.sync()  # the burst does not pay for writing back the files the dropper just made
    target = root / "inbox" / STUDY / f"burst{n}"
    expected = [target / s.relative_to(staging) for s in sidecars]
    log_offset = log.stat().st_size
    cpu0 = cpu_seconds(proc.pid)
    workers0, machine0 = workers_cpu_seconds(proc.pid), machine_cpu_seconds()
    wall0 = time.time()
    t0 = time.perf_counter()
    os.rename(staging, target)  # every sidecar and file appears at once
    progress = []
    # cheap to watch, so that the watcher gets the machine: each poll walks the receipts in drop
    # order only up to the first one still missing (all exist => every one was seen once)
    receipts = [str(receipt(s)) for s in expected]
    done = 0
    first = None
    while done < n:
        while done < n and os.path.exists(receipts[done]):
            done += 1
        now = time.perf_counter() - t0
        if first is None and (done or any(os.path.exists(r) for r in receipts[:50])):
            first = now
        progress.append((round(now, 2), done))  # receipts known to exist (a lower bound)
        if now > 3600:
            raise RuntimeError(f"burst did not finish: {done}/{n}")
        if done < n:
            time.sleep(0.1)
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds(proc.pid) - cpu0
    workers = workers_cpu_seconds(proc.pid) - workers0
    machine_cpu = machine_cpu_seconds() - machine0
    batches = batches_from_log(log, log_offset)
    registered_after = first_batch = None
    if batches:  # when the first group commit began and the last ended, from the watcher's log
        last = datetime.fromisoformat(batches[-1]["ts"]).timestamp()
        registered_after = round(last - wall0, 2)
        began = datetime.fromisoformat(batches[0]["ts"]).timestamp() - batches[0]["ms"] / 1000
        first_batch = round(began - wall0, 2)
    ok = sum(
        1
        for s in expected
        if json.loads(receipt(s).read_text())["files"][0]["upload"]["status"] == "uploaded"
    )
    return {
        "sidecars": n,
        "files_per_sidecar": 2,
        "file_bytes": KIB,
        "prepare_seconds": round(prepare, 2),
        "seconds_to_every_receipt": round(seconds, 2),
        "sidecars_per_s": round(n / seconds, 1),
        "first_receipt_s": first,
        "receipts_with_uploads_verified": ok,
        "watcher_cpu_seconds": round(cpu, 1),
        "watcher_cpu_cores_used": round(cpu / seconds, 2),
        "watcher_cpu_ms_per_sidecar": round(1000 * cpu / n, 2),
        "upload_workers_cpu_ms_per_sidecar": round(1000 * workers / n, 2),
        "machine_cpu_ms_per_sidecar": round(1000 * machine_cpu / n, 2),
        "machine_cpu_cores_used": round(machine_cpu / seconds, 2),
        "batches": [{"size": b["size"], "ms": b["ms"]} for b in batches],
        "first_commit_began_after_s": first_batch,
        "registrar_committing_s": round(sum(b["ms"] for b in batches) / 1000, 2),
        "every_sidecar_registered_after_s": registered_after,
        "registered_per_s": round(n / registered_after, 1) if registered_after else None,
        "progress": progress[:: max(1, len(progress) // 40)],
        "target_sidecars_per_s": 500,
        "meets_target": n / seconds >= 500,
    }


# -- 2. latency -------------------------------------------------------------------------------


def bench_latency(root: Path, drops: int) -> dict[str, Any]:
    salt = uuid.uuid4().hex[:8]
    base = root / "inbox" / STUDY / "latency"
    seconds = []
    for i in range(drops + 3):
        folder = base / f"d{i:03d}"
        doc = payload(STUDY, 10_000_000 + i, salt)
        folder.mkdir(parents=True)
        for j, f in enumerate(doc["files"]):
            content = f"{salt}{i}/{j}".encode().ljust(KIB, b"-")
            (folder / f["fileName"]).write_bytes(content)
            f["fileSize"] = len(content)
            f["fileMd5sum"] = hashlib.md5(content).hexdigest()
        sidecar = folder / "drop.song.json"
        with open(sidecar, "w") as out:
            out.write(json.dumps(doc))
        t0 = time.perf_counter()  # the close above is what the watcher reacts to
        r = receipt(sidecar)
        while not r.exists():
            if time.perf_counter() - t0 > 30:
                raise RuntimeError(f"no receipt for {sidecar}")
            time.sleep(0.001)
        if i >= 3:  # the first drops warm the read model and the validators up
            seconds.append(time.perf_counter() - t0)
        time.sleep(0.3)  # let the watcher go idle before the next drop
    out = summarize_ms(seconds)
    out.update({"target_p50_ms": 300, "target_p99_ms": 1000})
    out["meets_target"] = out["p50_ms"] <= 300 and out["p99_ms"] <= 1000
    return out


# -- 3. big file ------------------------------------------------------------------------------


def md5_single_core(path: Path) -> tuple[str, float]:
    h = hashlib.md5()
    buf = bytearray(1024 * 1024)
    view = memoryview(buf)
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest(), time.perf_counter() - t


def bench_big(root: Path, gib: float) -> dict[str, Any]:
    size = int(gib * 1024**3)
    folder = root / "staging" / STUDY / "big"
    folder.mkdir(parents=True)
    data = folder / "big.bam"
    block = os.urandom(64 * 1024 * 1024)
    with open(data, "wb") as f:
        left = size
        while left:
            chunk = block[: min(len(block), left)]
            f.write(chunk)
            left -= len(chunk)
    del block
    os.sync()  # neither the md5 nor the watcher pays for writing back the file just made
    md5_single_core(data)  # warm the page cache, as the dropped file would be
    digest, md5_seconds = md5_single_core(data)
    doc = payload(STUDY, 20_000_000, uuid.uuid4().hex[:8])
    doc["files"] = [
        dict(doc["files"][0], fileName="big.bam", fileType="BAM", fileSize=size, fileMd5sum=digest)
    ]
    sidecar = folder / "big.song.json"
    sidecar.write_text(json.dumps(doc))
    target = root / "inbox" / STUDY / "big"
    t0 = time.perf_counter()
    os.rename(folder, target)
    r = receipt(target / "big.song.json")
    while not r.exists():
        if time.perf_counter() - t0 > 600:
            raise RuntimeError("no receipt for the big file")
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    doc = json.loads(r.read_text())
    md5_rate = size / md5_seconds / 1e6
    rate = size / seconds / 1e6
    return {
        "bytes": size,
        "md5_single_core_MB_s": round(md5_rate, 1),
        "seconds_to_receipt": round(seconds, 2),
        "registration_and_copy_MB_s": round(rate, 1),
        "ratio": round(rate / md5_rate, 3),
        "upload_status": doc["files"][0]["upload"]["status"],
        "target_ratio": 0.8,
        "meets_target": rate / md5_rate >= 0.8,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", default="500,10000", help="sidecars per burst, comma-separated")
    ap.add_argument("--drops", type=int, default=60, help="single drops for the latency figure")
    ap.add_argument("--big-gib", type=float, default=2.0, help="size of the big file")
    ap.add_argument("--skip", action="append", default=[], choices=["burst", "latency", "big"])
    ap.add_argument("--root", type=Path, help="catalog root (default: a fresh temp dir)")
    ap.add_argument("--name", default="watcher", help="results file name (bench/results/)")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="songlake-bench-watcher-"))
    root = args.root or tmp / "catalog"
    log = tmp / "watch.log"
    # a copy: writing the root into the results must not make args.root look user-given (the
    # temporary catalog, 0.4-4 GB a run, was then never removed)
    params = dict(vars(args))
    result: dict[str, Any] = {"benchmark": "watcher", "machine": machine(), "params": params}
    result["loadavg_at_start"] = os.getloadavg()
    result["params"]["root"] = str(root)
    catalog = Catalog.init(load_settings(root))
    if STUDY not in catalog.list_studies():
        catalog.create_study({"studyId": STUDY})
    (root / "inbox" / STUDY).mkdir(parents=True, exist_ok=True)
    del catalog
    proc = start_watcher(root, log)
    try:
        sizes = [] if "burst" in args.skip else [int(x) for x in str(args.n).split(",")]
        for n in sizes:
            b = result[f"burst_{n}"] = bench_burst(root, proc, log, n)
            print(
                f"burst: {b['sidecars']} sidecars in {b['seconds_to_every_receipt']} s = "
                f"{b['sidecars_per_s']}/s (target 500/s); CPU per sidecar: watcher "
                f"{b['watcher_cpu_ms_per_sidecar']} ms, upload workers "
                f"{b['upload_workers_cpu_ms_per_sidecar']} ms, whole machine "
                f"{b['machine_cpu_ms_per_sidecar']} ms ({b['machine_cpu_cores_used']} cores busy)",
                flush=True,
            )
        if "latency" not in args.skip:
            result["latency"] = bench_latency(root, args.drops)
            lat = result["latency"]
            print(
                f"latency: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms over "
                f"{lat['n']} drops (targets 300 / 1000 ms)",
                flush=True,
            )
        if "big" not in args.skip:
            result["big"] = bench_big(root, args.big_gib)
            big = result["big"]
            print(
                f"big file: {big['bytes'] / 1024**3:g} GiB registered and stored at "
                f"{big['registration_and_copy_MB_s']} MB/s = {big['ratio']:.0%} of single-core "
                f"md5 ({big['md5_single_core_MB_s']} MB/s; target 80 %)",
                flush=True,
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        if args.root is None:
            shutil.rmtree(tmp, ignore_errors=True)
            os.sync()  # the freed blocks are discarded now, not during the next measured run
    result["loadavg_at_end"] = os.getloadavg()
    path = write_result(args.name, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
