"""The reconciliation scan: at start, every few minutes, and as the whole of ``--polling`` mode.

inotify misses what happens while no watcher runs and everything on network or FUSE mounts
(limits.md B5), so the watched folders are walked with ``os.scandir`` (not watchdog's snapshots:
ten times slower) and each sidecar's (size, mtime_ns, inode) is compared with the ledger. Hidden
folders are skipped and folder symlinks are not followed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from .layout import is_sidecar


def sidecars(top: str) -> Iterator[tuple[str, os.stat_result, frozenset[str]]]:
    """Every sidecar at or below ``top``: (path, lstat, names in its folder)."""
    if os.path.isfile(top):
        if is_sidecar(os.path.basename(top)):
            try:
                st = os.lstat(top)
            except FileNotFoundError:
                return
            folder = os.path.dirname(top)
            yield top, st, frozenset(os.listdir(folder))
        return
    stack = [top]
    while stack:
        here = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        names = frozenset(e.name for e in entries)
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith("."):
                        stack.append(entry.path)
                elif is_sidecar(entry.name):
                    yield entry.path, entry.stat(follow_symlinks=False), names
            except FileNotFoundError:
                continue


def stat_key(path: str) -> tuple[int, int, int] | None:
    """(size, mtime_ns, inode) following symlinks, None when absent."""
    try:
        st = os.stat(path)
    except OSError:  # absent, or a link loop
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)
