"""New files that get their name only once written whole.

    Folder(path)                  a directory opened once for many new files (a context manager)
      .new() -> NewFile           a file with no name yet
      .new_anonymous()            the same, or None where only a temporary name would do
      .sync()                     fsync the directory (makes the names given so far durable)
    NewFile
      .file                       buffered binary writer
      .sync()                     flush and fsync the bytes
      .name_as(name, replace=)    give it its name; FileExistsError when taken and not replace
      .close()                    close; a file never named leaves nothing behind

Where the file system has O_TMPFILE (ext4, xfs, btrfs, tmpfs) the file is created without a name
and linked in place through /proc/self/fd; elsewhere it gets a hidden temporary name that is
renamed. Creating and removing that temporary directory entry is a tenth of a small-sidecar
burst's CPU (bench/watcher.py); without it a new object is one directory insert.
"""

from __future__ import annotations

import errno
import os
import uuid
from typing import BinaryIO

TMP_PREFIX = ".tmp-"
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT)


class Folder:
    """An open directory in which new files are made."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.anonymous = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")

    def new(self) -> NewFile:
        return NewFile(self)

    def new_anonymous(self) -> NewFile | None:
        """A nameless new file; None where the file system cannot make one (no temporary
        name is ever created in this folder)."""
        if not self.anonymous:
            return None
        new = NewFile(self, anonymous_only=True)
        return new if new.fd >= 0 else None

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NewFile:
    """A file being written in a Folder; it has no name (or a hidden one) until ``name_as``."""

    def __init__(self, folder: Folder, *, anonymous_only: bool = False) -> None:
        self.folder = folder
        self.tmp_name: str | None = None
        self.fd = fd = -1
        if folder.anonymous:
            try:
                fd = os.open(
                    ".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666, dir_fd=folder.fd
                )
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
                folder.anonymous = False  # this file system has no O_TMPFILE: temporary names
                if anonymous_only:
                    return
        if fd < 0:
            self.tmp_name = f"{TMP_PREFIX}{uuid.uuid4().hex}"
            fd = os.open(
                self.tmp_name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                0o666,
                dir_fd=folder.fd,
            )
        self.fd = fd
        self.file: BinaryIO = open(fd, "wb", closefd=False)  # noqa: SIM115 - closed by close()

    def start_writeback(self) -> None:
        """Start writing the file to disk without waiting for it. Files synced together cost
        about half as much when their writeback is started for all of them first: the file
        system then allocates their blocks together and their fsyncs share journal commits."""
        self.file.flush()
        if hasattr(os, "posix_fadvise"):  # DONTNEED: write back dirty pages now (Linux)
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def sync(self) -> None:
        self.file.flush()
        os.fsync(self.fd)

    def name_as(self, name: str, *, replace: bool = False) -> None:
        """Give the file ``name`` in its folder (atomically: absent, then whole)."""
        self.file.flush()
        dfd = self.folder.fd
        if self.tmp_name is None:
            try:
                os.link(f"/proc/self/fd/{self.fd}", name, dst_dir_fd=dfd, follow_symlinks=True)
                return
            except FileExistsError:
                if not replace:
                    raise
            # replacing a file: through a temporary name, as rename is the atomic replace
            self.tmp_name = f"{TMP_PREFIX}{uuid.uuid4().hex}"
            os.link(f"/proc/self/fd/{self.fd}", self.tmp_name, dst_dir_fd=dfd, follow_symlinks=True)
        if replace:
            os.replace(self.tmp_name, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        else:
            os.link(self.tmp_name, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            os.unlink(self.tmp_name, dir_fd=dfd)
        self.tmp_name = None

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            self.file.close()
        finally:
            os.close(self.fd)
            self.fd = -1
            if self.tmp_name is not None:
                try:
                    os.unlink(self.tmp_name, dir_fd=self.folder.fd)
                except FileNotFoundError:
                    pass
                self.tmp_name = None
