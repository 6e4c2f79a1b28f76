"""Where things are in a watched folder: sidecar and outcome names, study folders, safe paths.

A watched folder holds one sub-folder per study; a sidecar ``<name>.song.json`` anywhere below
``<folder>/<studyId>/`` describes the data files sitting in its own folder. The watcher writes
``<name>.song.receipt.json`` or ``<name>.song.errors.json`` beside it. Names starting with a dot
are never sidecars (editors and copy tools write their temporary files that way).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from catalog.errors import problem

SIDECAR_SUFFIX = ".song.json"
RECEIPT_SUFFIX = ".song.receipt.json"
ERRORS_SUFFIX = ".song.errors.json"
TMP_PREFIX = ".songlake-tmp-"


def is_sidecar(name: str) -> bool:
    """A ``*.song.json`` name that is not hidden (temporary files of copy tools are)."""
    return (
        name.endswith(SIDECAR_SUFFIX)
        and not name.startswith(".")
        and len(name) > len(SIDECAR_SUFFIX)
    )


def is_outcome(name: str) -> bool:
    """The watcher's own files: receipts, errors files and their temporary files."""
    return (
        name.endswith(RECEIPT_SUFFIX) or name.endswith(ERRORS_SUFFIX) or name.startswith(TMP_PREFIX)
    )


def receipt_path(sidecar: str) -> str:
    return sidecar[: -len(SIDECAR_SUFFIX)] + RECEIPT_SUFFIX


def errors_path(sidecar: str) -> str:
    return sidecar[: -len(SIDECAR_SUFFIX)] + ERRORS_SUFFIX


def is_within(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or below it (both absolute and normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class Folder:
    """A tree sidecars are taken from.

    Watched folders map their first sub-folder to a study (``study_from_folder``); a one-shot
    ``ingest`` of a tree outside them takes the study from the payload instead.
    """

    path: str  # absolute, symlinks resolved
    study_from_folder: bool = True

    @classmethod
    def at(cls, path: str | os.PathLike[str], *, study_from_folder: bool = True) -> Folder:
        return cls(os.path.realpath(os.fspath(path)), study_from_folder)

    def contains(self, path: str) -> bool:
        return is_within(path, self.path)

    def study_of(self, sidecar: str) -> str | None:
        """The study folder a sidecar sits in: ``<folder>/<studyId>/.../x.song.json``."""
        prefix = self.path.rstrip(os.sep) + os.sep
        if sidecar.startswith(prefix) and os.sep + "." not in sidecar and os.sep * 2 not in sidecar:
            rel = sidecar[len(prefix) :]  # the common case, without relpath's normalisation
        else:
            rel = os.path.relpath(sidecar, self.path)
        parts = rel.split(os.sep)
        if len(parts) < 2 or parts[0] in ("", ".", ".."):
            return None
        return parts[0]


def data_file_path(folder: Folder, sidecar: str, index: int, name: str) -> tuple[str, dict | None]:
    """Where a listed fileName lives, or a problem when the name would leave the sidecar's folder.

    Only names inside the sidecar's own folder are allowed (no absolute paths, no ``..``, no NUL),
    whatever the analysis type's schema says: the watcher must never read anything else.
    """
    pointer = f"/files/{index}/fileName"
    here = os.path.dirname(sidecar)
    if not name or "\x00" in name or os.path.isabs(name) or name in (".", ".."):
        return "", problem(pointer, "fileName", f"'{name}' is not a file name in this folder")
    if os.sep not in name and (os.altsep is None or os.altsep not in name):
        return f"{here}{os.sep}{name}", None  # a plain name in the sidecar's own folder
    target = os.path.normpath(os.path.join(here, name))
    if not is_within(target, here) or target == here:
        return "", problem(
            pointer, "fileName", f"'{name}' points outside the sidecar's folder, which is refused"
        )
    return target, None


def symlink_problem(folder: Folder, path: str, pointer: str, label: str) -> dict | None:
    """A problem when ``path`` is (or passes through) a symlink that leaves the folder."""
    real = os.path.realpath(path)
    if real != path and not folder.contains(real):
        return problem(
            pointer,
            "symlink",
            f"{label} is a symbolic link to {real}, outside {folder.path}; links leaving the "
            "watched folder are refused",
        )
    return None


def folder_link_problem(sidecar: str, path: str, pointer: str, label: str) -> dict | None:
    """A problem when a folder on the way from the sidecar's folder to ``path`` is a symbolic link
    that leaves the sidecar's folder (``lstat`` sees a link only in the last component)."""
    here = os.path.dirname(sidecar)
    parent = os.path.dirname(path)
    if parent == here:
        return None  # a plain name: no folder on the way
    real_here = os.path.realpath(here)
    real = os.path.realpath(parent)
    if is_within(real, real_here):
        return None
    return problem(
        pointer,
        "symlink",
        f"{label} passes through a symbolic link to {real}, outside the sidecar's folder; "
        "links leaving it are refused",
    )


def fingerprint(st: os.stat_result) -> tuple[int, int, int]:
    """What says a file is unchanged: (size, mtime_ns, inode)."""
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)
