"""Drop-folder ingestion: sidecars dropped into watched folders are validated, registered, their
files copied into object storage, and a receipt (or an errors file) is written beside them.

    layout      names and places: sidecars, receipts, study folders, safe file names
    handler     watchdog events -> the coordinator's queue (filter and enqueue only)
    scanner     the reconciliation scan (start, periodic, --polling)
    readiness   is a sidecar ready? parse, study folder, files present with size and md5
    hashcache   md5 per (path, size, mtime_ns, inode)
    registrar   group-committed registrations, updates, receipt refreshes (the catalog thread)
    uploader    object storage, archive/delete after verification, receipts
    uploadpool  where upload jobs run: worker processes (default) or threads, in chunks
    receipts    the outcome files, written atomically
    ledger      durable watcher state (SQLite, WAL): intents, outcomes, pending since when
    coordinator the thread that owns the watcher's memory: busy paths, waits, timers, scans
    service     Watcher: threads and pools, start/stop, one-shot ingest
    status      the report behind ``songlake status``

``watcher`` imports ``catalog`` (never ``api``); ``catalog`` never imports ``watcher``.
"""

from typing import Any

__all__ = ["IngestReport", "Watcher", "WatcherBusy", "watched_folders", "watcher_running"]


def __getattr__(name: str) -> Any:
    """The service (and with it the whole catalog) is imported on first use only: the upload
    worker processes import ``watcher.uploadpool`` and need none of it."""
    if name in __all__:
        from . import service

        return getattr(service, name)
    raise AttributeError(f"module 'watcher' has no attribute {name!r}")
