"""What the watcher tests share: real inotify on real folders in tmp_path, waiting on conditions
with a deadline (never fixed sleeps), reading outcome files, dropping sidecars, and the fixtures
that start a watcher (stopped after the test; ``no_leaked_threads`` fails a test that leaves a
watcher thread running)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from catalog import Catalog
from watcher import Watcher


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def receipt_of(sidecar: Path) -> Path:
    return sidecar.with_name(sidecar.name[: -len(".song.json")] + ".song.receipt.json")


def errors_of(sidecar: Path) -> Path:
    return sidecar.with_name(sidecar.name[: -len(".song.json")] + ".song.errors.json")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def wait_receipt(sidecar: Path, timeout: float = 15.0, **expect: Any) -> dict[str, Any]:
    """The receipt once it exists (and has the expected top-level values)."""

    def ready() -> dict[str, Any] | None:
        doc = read_json(receipt_of(sidecar))
        if doc is not None and all(doc.get(k) == v for k, v in expect.items()):
            return doc
        return None

    return wait_for(ready, timeout, f"receipt of {sidecar.name} {expect or ''}")


def wait_errors(sidecar: Path, timeout: float = 15.0, error_id: str | None = None) -> dict:
    def ready() -> dict[str, Any] | None:
        doc = read_json(errors_of(sidecar))
        if doc is not None and (error_id is None or doc.get("errorId") == error_id):
            return doc
        return None

    return wait_for(ready, timeout, f"errors file of {sidecar.name} ({error_id or 'any'})")


def drop(folder: Path, name: str, payload: dict, contents: dict[str, bytes]) -> Path:
    """Write the payload's data files, then its sidecar, into ``folder``; returns the sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in payload["files"]:
        data = contents.get(f["fileMd5sum"])
        if data is not None:
            (folder / f["fileName"]).write_bytes(data)
    sidecar = folder / f"{name}.song.json"
    sidecar.write_text(json.dumps(payload))
    return sidecar


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone, or reaped while being read
        return False
    return state != "Z"


FAST = {
    "watch_settle": 0.3,
    "watch_linger": 0.01,
    "refresh_interval": 0.1,
    "watch_poll_interval": 0.2,
}


@pytest.fixture
def start_watcher(catalog: Catalog, no_leaked_threads: None) -> Iterator[Callable[..., Watcher]]:
    """Start a watcher on the test catalog (settings overridable); stopped after the test."""
    started: list[Watcher] = []

    def start(*, polling: bool = False, watch: bool = True, **overrides: Any) -> Watcher:
        settings = replace(catalog.settings, **{**FAST, **overrides})
        w = Watcher(catalog, settings, polling=polling).start(watch=watch)
        started.append(w)
        return w

    yield start
    for w in started:
        if w._thread is not None:
            w.stop()


@pytest.fixture
def inbox(catalog: Catalog) -> Path:
    """``<root>/inbox/ABC123``: the study folder of the test study."""
    folder = catalog.settings.inbox_dir / "ABC123"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
