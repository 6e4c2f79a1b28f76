"""Two watchers, each with its own local state (as on two machines), on one shared inbox and one
catalog root: every sidecar is registered once, and both watchers settle it (issue 12)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from catalog import sql
from catalog.catalog import Catalog
from catalog.settings import load_settings
from tests.conftest import REPO, STUDY, Payloads
from tests.watcher.conftest import drop, errors_of, read_json, receipt_of, wait_for

N = 150


def watcher(root: Path, state: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGLAKE_")}
    env.update(
        PYTHONPATH=str(REPO),
        SONGLAKE_LOCAL_STATE_DIR=str(state),  # this "machine's" ledger and lock
        SONGLAKE_WATCH_POLL_INTERVAL="0.2",
        SONGLAKE_WATCH_SETTLE="0.3",
    )
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "songlake", "--root", str(root), "watch", "--polling"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=REPO,
        )


def test_two_watchers_on_one_inbox_register_each_sidecar_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    cat = Catalog.init(load_settings(root))
    cat.create_study({"studyId": STUDY})
    payloads = Payloads(tmp_path / "data")
    folder = root / "inbox" / STUDY / "batch"
    sidecars = []
    for i in range(N):
        p = payloads.variant_call(
            samples=[payloads.sample(f"two-sa{i}", f"two-sp{i}", f"two-do{i}")],
            files=[payloads.file(f"two{i}.vcf.gz")],
        )
        sidecars.append(drop(folder, f"two{i}", p, payloads.contents))
    # both "machines" find the whole inbox at once when they start: they race for every sidecar
    procs = [watcher(root, tmp_path / f"machine-{m}", tmp_path / f"{m}.log") for m in "ab"]
    try:

        def settled() -> bool:
            return all(read_json(receipt_of(s)) for s in sidecars)

        wait_for(settled, 120, "a receipt for every sidecar")
        assert not [s for s in sidecars if errors_of(s).exists()]
        ids = {read_json(receipt_of(s))["analysisId"] for s in sidecars}  # type: ignore[index]
        assert len(ids) == N
        _, rows = sql.run(Catalog(load_settings(root)).tables, "SELECT count(*) FROM analyses")
        assert rows[0][0] == N  # once each, though two watchers saw every sidecar
        ledgers = [tmp_path / f"machine-{m}" / "watcher.sqlite3" for m in "ab"]
        assert all(p.exists() for p in ledgers)  # both really watched
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    logs = "".join((tmp_path / f"{m}.log").read_text() for m in "ab")
    assert "Traceback" not in logs
