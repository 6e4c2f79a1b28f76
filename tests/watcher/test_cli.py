"""The watcher's commands: ``ingest`` (CliRunner on real trees), ``status``, and ``watch
--polling`` / ``serve`` as real processes that stop cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog.catalog import Catalog
from catalog.settings import load_settings
from songlake.cli import main
from tests.conftest import REPO
from tests.watcher.conftest import alive, errors_of, read_json, receipt_of, wait_for, wait_receipt

pytestmark = pytest.mark.usefixtures("no_leaked_threads")

EXAMPLE = REPO / "examples" / "DEMO"


def run(root: Path, *args: str, code: int = 0):
    result = CliRunner().invoke(main, ["--root", str(root), *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    run(root, "init")
    run(root, "study", "create", "DEMO")
    return root


def test_ingest_a_tree_with_a_progress_bar_then_again(root: Path, tmp_path: Path) -> None:
    tree = tmp_path / "backfill"
    shutil.copytree(EXAMPLE, tree / "run1")
    bad = tree / "run2"
    bad.mkdir()
    (bad / "broken.song.json").write_text("{")

    out = run(root, "ingest", str(tree), code=1)  # one sidecar could not be taken
    assert "2 sidecar(s): 1 registered, 1 rejected" in out.stdout
    assert "rejected:" in out.stdout and "broken.song.json" in out.stdout
    assert "sidecar/s" in out.stderr or "2/2" in out.stderr  # tqdm's bar
    receipt = read_json(receipt_of(tree / "run1" / "variant-call.song.json"))
    assert receipt is not None and receipt["studyId"] == "DEMO"
    assert read_json(errors_of(bad / "broken.song.json"))["errorId"] == "payload.parsing"

    shutil.rmtree(bad)
    again = run(root, "ingest", "--quiet", str(tree))  # idempotent: nothing registered twice
    assert "1 sidecar(s): 1 registered" in again.stdout
    assert Catalog(load_settings(root)).count_analyses("DEMO") == 1

    status = json.loads(run(root, "status", "--json").stdout)
    assert status["studies"]["DEMO"]["registered"] == 1
    assert status["watcherPid"] is None
    table = run(root, "status").stdout
    assert "watcher: not running" in table and "DEMO" in table


def start(root: Path, log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SONGLAKE_WATCH_POLL_INTERVAL": "0.2"}
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "songlake", "--root", str(root), *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=REPO,
        )
    return proc


def test_watch_polling_runs_until_told_to_stop(root: Path, tmp_path: Path) -> None:
    log = tmp_path / "watch.log"
    proc = start(root, log, "watch", "--polling")
    try:
        wait_for(lambda: b"songlake watching" in log.read_bytes() or proc.poll() is not None, 30)
        assert proc.poll() is None, log.read_text()
        shutil.copytree(EXAMPLE, root / "inbox" / "DEMO")
        wait_receipt(root / "inbox" / "DEMO" / "variant-call.song.json")
        status = json.loads(run(root, "status", "--json").stdout)
        assert status["watcherPid"] == proc.pid
        assert status["totals"]["registered"] == 1

        busy = CliRunner().invoke(main, ["--root", str(root), "ingest", str(root / "inbox")])
        assert busy.exit_code == 1
        assert "watcher.already.running" in busy.output
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-2000:]
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    assert {"started", "registered", "stopped"} <= {x.get("event") for x in lines}
    assert json.loads(run(root, "status", "--json").stdout)["watcherPid"] is None


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_serve_runs_the_watcher(root: Path, tmp_path: Path, stop_with: signal.Signals) -> None:
    log = tmp_path / "serve.log"
    proc = start(root, log, "serve", "--port", "0")
    try:
        wait_for(lambda: b"watcher started" in log.read_bytes() or proc.poll() is not None, 30)
        assert proc.poll() is None, log.read_text()
        workers = [
            int(pid)
            for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        ]
        shutil.copytree(EXAMPLE, root / "inbox" / "DEMO")
        receipt = wait_receipt(root / "inbox" / "DEMO" / "variant-call.song.json")
    finally:
        proc.send_signal(stop_with)
        proc.wait(timeout=30)
    # a SIGTERM (systemd, docker stop) stops the watcher as cleanly as Ctrl-C does
    assert b"watcher stopped" in log.read_bytes()
    assert b"leaked" not in log.read_bytes(), log.read_text()[-2000:]
    assert workers  # the upload processes (and multiprocessing's resource tracker) end too
    wait_for(lambda: not any(alive(pid) for pid in workers), 10, "the serve's children to end")
    assert Catalog(load_settings(root)).find_analysis(receipt["analysisId"])["studyId"] == "DEMO"


def test_a_second_serve_on_a_taken_port_says_so_in_one_line(root: Path, tmp_path: Path) -> None:
    """The README's second `make run` beside a running one: one line, exit 1, nothing started,
    announced or created first."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "first.log"
    first = start(root, log, "serve", "--no-watch", "--port", str(port))
    try:
        wait_for(lambda: b"songlake serving" in log.read_bytes() or first.poll() is not None, 30)
        assert first.poll() is None, log.read_text()
        other = tmp_path / "other-root"
        second = subprocess.run(
            [sys.executable, "-m", "songlake", "--root", str(other), "serve", "--port", str(port)],
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
            timeout=60,
        )
        assert second.returncode == 1
        assert second.stderr.decode() == (
            f"error: 127.0.0.1:{port} is in use (another songlake serve?): stop it or pass --port\n"
        )
        assert second.stdout == b""
        assert not other.exists()  # the port was checked before the root was made
        assert first.poll() is None  # the first server is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0, log.read_text()[-2000:]
