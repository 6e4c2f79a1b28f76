"""Helpers for tests with several writer processes: a race started at one instant, a serve."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import REPO

# One writer process: opens the catalog, says it is ready, waits for the starting gun, writes.
WRITER = """
import json, os, sys, time
from catalog import Catalog, SonglakeError, load_settings
root, ready, go, op, arg = sys.argv[1:6]
cat = Catalog(load_settings(root))
if os.environ.get("LEASE_S3"):  # the writer lease in an S3 object: url bucket key ttl
    import boto3
    from catalog.store.s3lease import S3Lease
    url, bucket, key, ttl = os.environ["LEASE_S3"].split()
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    cat.committer.lease = S3Lease(client, bucket, key, ttl=float(ttl))
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.0002)
body = json.loads(open(arg).read())
try:
    if op == "submit":
        from catalog import SubmitItem
        ids = body.get("ids") or [None] * len(body["payloads"])
        items = [SubmitItem(p, body["study"], analysis_id=i) for p, i in zip(body["payloads"], ids)]
        out = [r.analysis_id or {"error": r.error.error_id, "message": str(r.error)}
               for r in cat.submit_batch(items)]
    elif op == "study":
        out = cat.create_study(body)["studyId"]
    elif op == "type":
        out = cat.register_type(body).version
    else:
        raise SystemExit("unknown op " + op)
    print(json.dumps({"ok": out, "status": cat.committer.status()}))
except SonglakeError as exc:
    print(json.dumps({"error": exc.error_id, "message": str(exc)}))
"""


def writer(
    root: Path, folder: Path, name: str, op: str, body: Any, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """A writer process that waits at ``folder/go`` once its catalog is open."""
    (folder / f"{name}.json").write_text(json.dumps(body))
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITER,
            str(root),
            str(folder / f"{name}.ready"),
            str(folder / "go"),
            op,
            str(folder / f"{name}.json"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def result(proc: subprocess.Popen) -> dict[str, Any]:
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def wait_ready(folder: Path, names: list[str], procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 120
    while not all((folder / f"{n}.ready").exists() for n in names):
        assert time.monotonic() < deadline, "writers never got ready"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)


def race(root: Path, folder: Path, ops: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Run each (op, body) in its own process, all released at the same instant."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "go").unlink(missing_ok=True)
    names = [f"w{i}" for i in range(len(ops))]
    procs = [writer(root, folder, n, op, body) for n, (op, body) in zip(names, ops, strict=True)]
    wait_ready(folder, names, procs)
    (folder / "go").touch()
    out = [result(p) for p in procs]
    for n in names:
        (folder / f"{n}.ready").unlink()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def songlake(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "songlake"), *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGLAKE_")}
    env.update(extra)
    return env


def kill_9(proc: subprocess.Popen) -> None:
    """SIGKILL, as a crash: no cleanup of any kind runs in the process."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def start_first(
    root: Path, folder: Path, body: Any, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Writer ``a`` submitting ``body``, released at once: the one to take the lease first."""
    folder.mkdir(parents=True, exist_ok=True)
    a = writer(root, folder, "a", "submit", body, env=env)
    wait_ready(folder, ["a"], [a])
    (folder / "go").touch()
    return a
