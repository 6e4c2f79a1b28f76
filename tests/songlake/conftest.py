"""What the application tests share: `songlake serve`'s composition (API, console and watcher
around one catalog) on a real server on 127.0.0.1, and Debian's chromium driven by Playwright."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.auth import ensure_admin_token
from api.server import ApiServer
from catalog.catalog import Catalog
from songlake.serve import make_app
from watcher import Watcher

CHROMIUM = Path("/usr/bin/chromium")
#: how the issue asks chromium to run: headless, no sandbox (root in a container), nothing fetched
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FAST = {"watch_settle": 0.3, "watch_linger": 0.01, "refresh_interval": 0.1}


def wait_until(predicate: Any, what: str, timeout: float = 20.0) -> Any:
    """Poll until `predicate` answers something true (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Served:
    """A running `songlake serve`: its base URL, catalog and admin token."""

    url: str
    catalog: Catalog
    token: str


@pytest.fixture
def served(catalog: Catalog) -> Iterator[Served]:
    """API + console + watcher over the test catalog, as `songlake serve` wires them."""
    settings = dataclasses.replace(catalog.settings, **FAST)
    catalog.settings = settings
    token = ensure_admin_token(settings)[0].read_text().strip()
    watcher = Watcher(catalog, settings).start()
    server = ApiServer(make_app(catalog, settings), "127.0.0.1", 0, threads=8)
    thread = threading.Thread(target=server.run, name="songlake-console-server")
    thread.start()
    try:
        yield Served(f"http://{server.host}:{server.port}", catalog, token)
    finally:
        server.stop()
        thread.join(timeout=10)
        watcher.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's chromium under Playwright; the test is skipped when either is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium): browser tests skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests put a screenshot of every page (under the run's temp dir)."""
    return tmp_path_factory.mktemp("screenshots")
