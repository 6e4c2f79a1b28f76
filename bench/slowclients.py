"""Clients that never read, against `songlake serve` in its own process: 200 connections that
request a 48 MB download and never read it, plus 60 slowloris sockets (headers never finished),
while one keep-alive client times GET /isAlive. Prints p50/p99 and the server's RSS, before and
during, and writes bench/results/slowclients.json. (Before the bytes went to waitress's
file_wrapper, 33 such clients took /isAlive down.)"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import fmt_table, machine, summarize_ms, write_result  # noqa: E402
from bench.common import payload as bench_payload  # noqa: E402
from catalog import Catalog, SubmitItem  # noqa: E402
from catalog.settings import Settings  # noqa: E402

HOLDERS = int(os.environ.get("HOLDERS", 200))
SLOWLORIS = int(os.environ.get("SLOWLORIS", 60))
SIZE = 48 * 1024 * 1024
SETTLE = float(os.environ.get("SETTLE", 10))
STUDY = "SLOW"


def _object(root: Path) -> str:
    cat = Catalog.init(Settings(root=root))
    cat.create_study({"studyId": STUDY})
    data = root.parent / "data"
    data.mkdir()
    blob = os.urandom(1 << 20) * (SIZE >> 20)
    (data / "big.bin").write_bytes(blob)
    payload = bench_payload(STUDY, 0)  # the benchmarks' own variantCall, with one big file
    payload["files"] = [
        {
            "dataType": "x",
            "fileName": "big.bin",
            "fileSize": SIZE,
            "fileMd5sum": hashlib.md5(blob).hexdigest(),
            "fileAccess": "open",
            "fileType": "VCF",
        }
    ]
    item = SubmitItem(payload, STUDY, source_paths={"big.bin": str(data / "big.bin")})
    aid = cat.submit_batch([item])[0].analysis_id
    cat.upload(aid, data)
    cat.publish(STUDY, aid)
    return cat.analysis_files(STUDY, aid)[0]["objectId"]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().split("\n"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _probe(conn: http.client.HTTPConnection, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", "/isAlive")
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="slowclients-"))
    root = tmp / "root"
    oid = _object(root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "songlake", "--root", str(root), "serve", "--no-watch"]
        + ["--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    sockets: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                _probe(conn, 1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.request("GET", f"/download/{oid}?offset=0&length=-1")
        url = urlsplit(json.loads(conn.getresponse().read())["parts"][0]["url"])
        before = summarize_ms(_probe(conn, 300))
        rss_before = _rss_mb(server.pid)
        for _ in range(HOLDERS):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sockets.append(s)
        for _ in range(SLOWLORIS):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"GET /isAlive HTTP/1.1\r\nHost: x\r\nX-a: ")
            sockets.append(s)
        time.sleep(SETTLE)  # the holders' answers have started and stalled
        during = summarize_ms(_probe(conn, 300))
        rss_during = _rss_mb(server.pid)
    finally:
        for s in sockets:
            s.close()
        server.terminate()
        server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "holders": HOLDERS,
        "slowloris": SLOWLORIS,
        "object_mb": SIZE >> 20,
        "isalive_ms_before": before,
        "isalive_ms_during": during,
        "server_rss_mb_before": round(rss_before, 1),
        "server_rss_mb_during": round(rss_during, 1),
        "machine": machine(),
    }
    rows = [
        ["/isAlive p50 ms", f"{before['p50_ms']:.2f}", f"{during['p50_ms']:.2f}"],
        ["/isAlive p99 ms", f"{before['p99_ms']:.2f}", f"{during['p99_ms']:.2f}"],
        ["server RSS MB", f"{rss_before:.0f}", f"{rss_during:.0f}"],
    ]
    print(fmt_table(rows, ["figure", "idle", f"{HOLDERS} holders + {SLOWLORIS} slowloris"]))
    print("load", os.getloadavg(), "->", write_result("slowclients", result))


if __name__ == "__main__":
    main()
