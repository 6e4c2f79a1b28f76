"""kill -9 of ``songlake watch`` at several points of a burst of 500 sidecars: after a restart
every sidecar ends registered exactly once or rejected, no analysis is half-visible, and no data
file was removed (the intent row written before each commit makes the retry re-use its ids)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from catalog import sql
from catalog.catalog import Catalog
from tests.conftest import REPO
from tests.watcher.conftest import alive, errors_of, read_json, receipt_of, wait_for
from watcher.ledger import Ledger

N = 500
BAD = {7: "payload.parsing", 250: "mismatching.file.md5sum", 444: "study.id.mismatch"}


def start(root: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SONGLAKE_WATCH_LINGER": "0.01",
        "SONGLAKE_REFRESH_INTERVAL": "0.2",
        "SONGLAKE_WATCH_SETTLE": "0.3",
    }
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "songlake", "--root", str(root), "watch"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=REPO,
        )
    wait_for(
        lambda: b"songlake watching" in log.read_bytes()[offset:] or proc.poll() is not None, 30
    )
    assert proc.poll() is None, log.read_text()
    return proc


def build_burst(staging: Path, payloads) -> list[Path]:
    sidecars = []
    for i in range(N):
        folder = staging / f"r{i:03d}"
        folder.mkdir(parents=True)
        payload = payloads.variant_call(
            samples=[payloads.sample(f"SA{i}", f"SP{i}", f"DO{i}")],
            files=[payloads.file(f"x{i}.vcf.gz"), payloads.file(f"x{i}.vcf.gz.tbi")],
        )
        for f in payload["files"]:
            (folder / f["fileName"]).write_bytes(payloads.contents[f["fileMd5sum"]])
        if i == 250:
            payload["files"][0]["fileMd5sum"] = "0" * 32
        if i == 444:
            payload["studyId"] = "ELSEWHERE"
        text = "{ truncated" if i == 7 else json.dumps(payload)
        (folder / "s.song.json").write_text(text)
        sidecars.append(folder / "s.song.json")
    return sidecars


def outcomes(inbox: Path) -> int:
    return sum(
        1
        for i in range(N)
        if receipt_of(inbox / f"r{i:03d}" / "s.song.json").exists()
        or errors_of(inbox / f"r{i:03d}" / "s.song.json").exists()
    )


def receipts(inbox: Path) -> int:
    return sum(1 for i in range(N) if receipt_of(inbox / f"r{i:03d}" / "s.song.json").exists())


@pytest.mark.parametrize("kill_at", ["mid-commit", "receipts>=40", "receipts>=300"])
def test_kill_9_during_a_burst_then_restart(catalog, payloads, tmp_path, kill_at) -> None:
    root = catalog.settings.root
    staging = tmp_path / "staging" / "ABC123"
    build_burst(staging, payloads)
    data_files = sorted(p.name for p in staging.rglob("x*"))
    log = tmp_path / "watch.log"
    inbox = catalog.settings.inbox_dir / "ABC123"

    proc = start(root, log)
    shutil.move(str(staging), str(inbox))  # the whole burst appears at once
    if kill_at == "mid-commit":
        ledger = root / "state" / "watcher.sqlite3"
        wait_for(lambda: b"registering" in _rows(ledger), 30, "an intent row")
    else:
        wait_for(lambda: receipts(inbox) >= int(kill_at.split(">=")[1]), 60, kill_at)
    workers = children(proc.pid)
    assert len(workers) >= 2  # the upload worker processes
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # the workers notice and exit at once, rather than go on uploading for a dead watcher
    wait_for(lambda: not any(alive(pid) for pid in workers), 10, "the upload workers to exit")
    killed_with = outcomes(inbox)

    proc = start(root, log)
    try:
        wait_for(lambda: outcomes(inbox) == N, 90, "an outcome for every sidecar")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert killed_with < N or kill_at == "receipts>=300"

    after = Catalog(catalog.settings)
    good = [i for i in range(N) if i not in BAD]
    ids = []
    for i in good:
        receipt = read_json(receipt_of(inbox / f"r{i:03d}" / "s.song.json"))
        assert receipt is not None, f"r{i:03d} has no receipt"
        ids.append(receipt["analysisId"])
        for f in receipt["files"]:
            assert f["upload"]["status"] == "uploaded"
            spec = after.store.spec(f["objectId"])
            assert spec is not None and spec.object_md5 == f["fileMd5sum"]
    assert len(set(ids)) == len(good)  # registered exactly once each
    assert set(after.model.analyses) == set(ids)  # nothing else, nothing half-visible
    for i, error_id in BAD.items():
        errors = read_json(errors_of(inbox / f"r{i:03d}" / "s.song.json"))
        assert errors is not None and errors["errorId"] == error_id
    _, rows = sql.run(
        after.tables, "SELECT (SELECT count(*) FROM analyses), (SELECT count(*) FROM files)"
    )
    assert rows[0] == (len(good), 2 * len(good))
    for aid in ids[:: len(ids) // 25]:
        doc = after.find_analysis(aid)
        assert len(doc["files"]) == 2 and len(doc["samples"]) == 1
    assert sorted(p.name for p in inbox.rglob("x*")) == data_files  # no data file removed
    ledger = Ledger(root / "state" / "watcher.sqlite3", readonly=True)
    try:
        statuses = {(r.path, r.status) for r in ledger.all()}
    finally:
        ledger.close()
    assert not {s for _, s in statuses} - {"registered", "rejected"}
    after.repair(min_age_seconds=0)  # orphans of the killed batch are invisible and removable
    assert len(Catalog(catalog.settings).model.analyses) == len(good)


def _rows(path: Path) -> bytes:
    """The raw ledger bytes (database + WAL): enough to see an intent without opening it."""
    out = b""
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            out += p.read_bytes()
        except FileNotFoundError:
            pass
    return out


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out
