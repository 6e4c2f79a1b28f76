"""Score's upload protocol and DRS lookups (issue 14), all three figures in one run.

1. One file of random bytes (2 GiB by default), warm in the page cache, uploaded through Score's
   protocol to ``songlake serve`` (a subprocess on loopback) as score-client sends it: ping,
   exists, status, initiate, then 6 parts in flight (score-client's TRANSPORT_PARALLEL), each read
   from the file, hashed (md5, as score-client does), PUT to its URL and finalized, then finalize.
   a) the local store (parts PUT to songlake itself), against ``cp`` of the same file to the
      same disk (and ``cp`` + ``sync``); target >= 70 % of ``cp``;
   b) S3 (moto on loopback, bench/motos3.py; parts PUT straight to moto), against boto3's own
      ``upload_file`` (20 MiB parts, 6 threads) to the same moto; target >= 80 %.
   Each contender runs after an os.sync(); the best of --rounds counts.
2. DRS: ``songlake serve`` over bench/readmodel.py's catalog of --analyses (1,000,000; built
   with its generator when missing), GET /ga4gh/drs/v1/objects/{id} for --lookups random files
   over one keep-alive connection; target p50 <= 2 ms.

    .venv/bin/python bench/upload.py [--size-mib 2048] [--rounds 2] [--analyses 1000000]
                                     [--lookups 2000] [--skip-upload] [--skip-drs]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import cpu_seconds, free_port, source_catalog, start_server  # noqa: E402
from bench.common import (  # noqa: E402
    BENCH_DIR,
    Timer,
    fmt_table,
    machine,
    payload,
    summarize_ms,
    write_result,
)
from bench.storage import BUCKET, CREDS, MIB, Moto, make_file, mib_s  # noqa: E402

PARALLEL = 6  # score-client's TRANSPORT_PARALLEL default
RETRIES = 5
TARGETS = {"local_vs_cp": 0.70, "s3_vs_boto3": 0.80, "drs_p50_ms": 2.0}


class Http:
    """One keep-alive connection to a base URL; JSON answers parsed."""

    def __init__(self, base: str, token: str | None = None) -> None:
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any, Any]:
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type") or ""
        data = json.loads(raw) if raw and kind.startswith("application/json") else raw
        return response.status, response.headers, data

    def ok(self, method: str, path: str, body: bytes | None = None) -> Any:
        status, _, data = self.call(method, path, body)
        if status != 200:
            raise SystemExit(f"{method} {path} answered {status}: {data!r}"[:500])
        return data


def put_url(url: str, data: bytes) -> str:
    """PUT a part to the URL initiate handed out; its ETag."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    try:
        path = f"{parts.path}?{parts.query}"
        conn.request("PUT", path, body=data, headers={"Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"PUT part answered {response.status}")
        return (response.getheader("ETag") or "").strip('"')
    finally:
        conn.close()


def score_upload(base: str, token: str, oid: str, src: Path, md5: str) -> list[int]:
    """score-client's upload of one file, call for call (see tests/api/conftest.py); the part
    numbers it had to send again."""
    retried: list[int] = []
    api = Http(base, token)
    ping = api.ok("GET", "/download/ping").decode()
    assert Http(ping).call("GET", urlsplit(ping).path + "?" + urlsplit(ping).query)[0] == 200
    assert api.ok("GET", f"/upload/{oid}") is False
    size = src.stat().st_size
    assert api.call("GET", f"/upload/{oid}/status?fileSize={size}")[0] == 404
    spec = api.ok("POST", f"/upload/{oid}/uploads?fileSize={size}&overwrite=true&md5={md5}")
    upload_id = spec["uploadId"]
    fd = os.open(src, os.O_RDONLY)

    def send(part: dict[str, Any]) -> None:
        data = os.pread(fd, part["partSize"], part["offset"])
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        finalize = (
            f"/upload/{oid}/parts?uploadId={upload_id}&partNumber={part['partNumber']}"
            f"&md5={digest}&etag="
        )
        # score-client sends a part again when its ETag is not its md5, and when finalizing it
        # is refused (a NotRetryableException there becomes a RetryableException of the part)
        for _ in range(RETRIES):
            etag = put_url(part["url"], data)
            if etag == digest and Http(base, token).call("POST", finalize + etag)[0] == 200:
                return
            retried.append(part["partNumber"])
        raise SystemExit(f"part {part['partNumber']} failed {RETRIES} times")

    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(send, spec["parts"]))
    finally:
        os.close(fd)
    api.ok("POST", f"/upload/{oid}?uploadId={upload_id}")
    return retried


def make_root(root: Path, size: int, md5: str, toml: str = "") -> str:
    """A catalog with one UNPUBLISHED analysis whose first file is the big one; its objectId."""
    from catalog import Catalog, SubmitItem
    from catalog.settings import load_settings

    root.mkdir(parents=True)
    (root / "songlake.toml").write_text(toml)
    catalog = Catalog.init(load_settings(root))
    catalog.create_study({"studyId": "BENCH"})
    doc = payload("BENCH", 1)
    doc["files"][0].update(fileSize=size, fileMd5sum=md5)
    aid = catalog.submit_batch([SubmitItem(doc, "BENCH")])[0].analysis_id
    files = catalog.analysis_files("BENCH", aid)
    return next(f["objectId"] for f in files if f["fileMd5sum"] == md5)


class Server:
    """``songlake serve --no-watch`` on a free port over a root; its admin token."""

    def __init__(self, root: Path, threads: int = 16, timeout: float = 600.0) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = start_server(root, self.port, threads, root.parent / f"{root.name}.log")
        started = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"songlake serve exited with {self.proc.returncode}")
            try:
                if Http(self.base).call("GET", "/isAlive")[0] == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() - started > timeout:
                raise SystemExit("songlake serve did not start")
            time.sleep(0.5)
        self.start_seconds = round(time.perf_counter() - started, 1)
        self.token = (root / "state" / "admin-token").read_text().strip()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def bench_upload(work: Path, size_mib: int, rounds: int) -> dict[str, Any]:
    from boto3.s3.transfer import TransferConfig

    size = size_mib * MIB
    src = work / "big.bin"
    print(f"writing {size_mib} MiB of random bytes ...", flush=True)
    md5 = make_file(src, size)
    os.environ.update(CREDS)
    moto = Moto()
    client = moto.client()
    client.create_bucket(Bucket=BUCKET)
    runs: dict[str, list[float]] = {}
    resent: dict[str, list[int]] = {}
    cpu: dict[str, list[dict[str, float]]] = {}

    def record(name: str, seconds: float) -> None:
        runs.setdefault(name, []).append(mib_s(size, seconds))
        print(f"  {name:<28} {mib_s(size, seconds):>8.1f} MiB/s", flush=True)

    s3_toml = (
        f'object_store = "s3"\ns3_bucket = "{BUCKET}"\ns3_endpoint_url = "{moto.url}"\n'
        's3_region = "us-east-1"\n'
    )
    try:
        for r in range(rounds):
            print(f"round {r + 1}", flush=True)
            dst = work / "copy.bin"
            os.sync()
            with Timer() as t:
                subprocess.run(["cp", str(src), str(dst)], check=True)
            record("cp", t.seconds)
            dst.unlink()
            os.sync()
            with Timer() as t:
                subprocess.run(["cp", str(src), str(dst)], check=True)
                subprocess.run(["sync", str(dst)], check=True)
            record("cp + sync", t.seconds)
            dst.unlink()
            for name, toml in (("protocol, local store", ""), ("protocol, s3 (moto)", s3_toml)):
                root = work / f"root-{r}-{'s3' if toml else 'local'}"
                oid = make_root(root, size, md5, toml)
                server = Server(root)
                try:
                    os.sync()
                    cpu0, mine0 = cpu_seconds(server.proc.pid), time.process_time()
                    with Timer() as t:
                        retried = score_upload(server.base, server.token, oid, src, md5)
                    record(name, t.seconds)
                    gib = size / (1024 * MIB)
                    cpu.setdefault(name, []).append(
                        {
                            "server_s_per_gib": round(
                                (cpu_seconds(server.proc.pid) - cpu0) / gib, 2
                            ),
                            "client_s_per_gib": round((time.process_time() - mine0) / gib, 2),
                        }
                    )
                    print(f"    CPU per GiB: {cpu[name][-1]}")
                    if retried:
                        resent.setdefault(name, []).extend(retried)
                        print(f"    parts sent again (ETag was not their md5): {retried}")
                finally:
                    server.stop()
                shutil.rmtree(root)
            os.sync()
            key = f"raw/{r}"
            with Timer() as t:
                client.upload_file(
                    str(src),
                    BUCKET,
                    key,
                    Config=TransferConfig(multipart_chunksize=20 * MIB, max_concurrency=PARALLEL),
                )
            record("boto3 upload_file (moto)", t.seconds)
            client.delete_object(Bucket=BUCKET, Key=key)
    finally:
        moto.stop()
        src.unlink()
    best = {name: max(values) for name, values in runs.items()}
    return {
        "size_mib": size_mib,
        "rounds": runs,
        "best_mib_s": best,
        "local_vs_cp": round(best["protocol, local store"] / best["cp"], 3),
        "local_vs_cp_sync": round(best["protocol, local store"] / best["cp + sync"], 3),
        "s3_vs_boto3": round(best["protocol, s3 (moto)"] / best["boto3 upload_file (moto)"], 3),
        "parts_sent_again": resent,
        "cpu": cpu,
    }


def bench_drs(analyses: int, lookups: int) -> dict[str, Any]:
    from catalog.tables import TableStore

    root = source_catalog(analyses)
    ids = TableStore(root / "tables").read("files").column("object_id").to_pylist()
    sample = random.Random(3).sample(ids, min(lookups, len(ids)))
    del ids
    server = Server(root, threads=8, timeout=1800)
    print(f"serve over {analyses:,} analyses up in {server.start_seconds} s", flush=True)
    try:
        api = Http(server.base, server.token)
        for oid in sample[:50]:  # warm-up
            api.ok("GET", f"/ga4gh/drs/v1/objects/{oid}")
        times = []
        for oid in sample:
            t0 = time.perf_counter()
            status, _, body = api.call("GET", f"/ga4gh/drs/v1/objects/{oid}")
            times.append(time.perf_counter() - t0)
            if status not in (200, 404):  # 404: a SUPPRESSED analysis' file
                raise SystemExit(f"DRS lookup answered {status}: {body!r}")
    finally:
        server.stop()
    return {
        "analyses": analyses,
        "lookups": len(sample),
        "latency_ms": summarize_ms(times),
        "serve_start_s": server.start_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--analyses", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--skip-upload", action="store_true")
    parser.add_argument("--skip-drs", action="store_true")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg()}
    if not args.skip_upload:
        work = Path(tempfile.mkdtemp(prefix="upload-", dir=BENCH_DIR / "data"))
        try:
            result["upload"] = bench_upload(work, args.size_mib, args.rounds)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if not args.skip_drs:
        result["drs"] = bench_drs(args.analyses, args.lookups)
    result["load_after"] = os.getloadavg()
    rows = []
    if "upload" in result:
        up = result["upload"]
        for name, value in up["best_mib_s"].items():
            rows.append([name, f"{value:.1f} MiB/s", ""])
        rows.append(["local / cp", f"{up['local_vs_cp']:.0%}", f">= {TARGETS['local_vs_cp']:.0%}"])
        rows.append(["s3 / boto3", f"{up['s3_vs_boto3']:.0%}", f">= {TARGETS['s3_vs_boto3']:.0%}"])
    if "drs" in result:
        lat = result["drs"]["latency_ms"]
        rows.append(["DRS lookup p50", f"{lat['p50_ms']:.2f} ms", f"<= {TARGETS['drs_p50_ms']} ms"])
        rows.append(["DRS lookup p99", f"{lat['p99_ms']:.2f} ms", ""])
    print(fmt_table(rows, ["figure", "measured", "target"]))
    print(f"load {result['load_before']} -> {result['load_after']}")
    path = write_result("upload", result)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
