"""Fixtures for the watcher tests: real inotify on real folders in tmp_path.

Loaded by the watcher test modules with ``pytest_plugins = ["watcher_fixtures"]``;
``no_leaked_threads`` fails any test that leaves a watcher thread (observer, pools, coordinator,
registrar) running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from watcher_kit import wait_for

from catalog.catalog import Catalog
from watcher import Watcher

FAST = {
    "watch_settle": 0.3,
    "watch_linger": 0.01,
    "refresh_interval": 0.1,
    "watch_poll_interval": 0.2,
}


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads behind (watchdog observers must be stopped and joined)."""
    before = set(threading.enumerate())
    yield
    extra: list[threading.Thread] = []

    def settled() -> bool:
        extra[:] = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        return not extra

    try:
        wait_for(settled, 5.0, "threads to end")
    except AssertionError:
        pytest.fail(f"leaked threads: {[t.name for t in extra]}")


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
