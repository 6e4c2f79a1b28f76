"""New files that get their name only once written whole.

    write_file(path, data)        one file written whole or not at all (durable or not, replacing
                                  or not, its temporary name, if any, in a staging folder)
    Folder(path, tmp_prefix=)     a directory opened once for many new files (a context manager)
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

A nameless file also lets a watched folder see a new file as a single create (a hard link), not a
rename: watchdog pairs every move event against its whole queue of pending events, which is
quadratic in a burst. ``write_file``'s ``staging_dir`` keeps the temporary names that replacing
a file needs out of such a folder too.
"""

from __future__ import annotations

import errno
import os
import uuid
from typing import BinaryIO

TMP_PREFIX = ".tmp-"
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT)


def write_file(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    durable: bool = True,
    replace: bool = True,
    staging_dir: str | os.PathLike[str] | None = None,
    tmp_prefix: str = TMP_PREFIX,
) -> None:
    """Write ``path`` whole or not at all: readers see no file (or the old one), then ``data``.

    ``durable``: the bytes and the name are on disk when it returns (the file, then its folder,
    fsynced). ``replace``: an existing file is replaced (one rename); else FileExistsError.
    ``staging_dir``: where the temporary name of a replacement is made, when it is on the same
    file system, so that ``path``'s folder sees one hard link for a new file and one rename for a
    replaced one. Temporary names begin with ``tmp_prefix``.
    """
    head, name = os.path.split(os.fspath(path))
    with Folder(head or os.curdir, tmp_prefix=tmp_prefix) as folder:
        if staging_dir is None:
            _write_in(folder, name, data, durable=durable, replace=replace)
        else:
            _write_staged(
                folder, name, data, os.fspath(staging_dir), durable=durable, replace=replace
            )
        if durable:
            folder.sync()


def _write_in(folder: Folder, name: str, data: bytes, *, durable: bool, replace: bool) -> None:
    """A nameless file linked in, or one with a temporary name in ``folder``, renamed."""
    new = folder.new()
    try:
        new.file.write(data)
        if durable:
            new.sync()
        new.name_as(name, replace=replace)
    finally:
        new.close()


def _write_staged(
    folder: Folder, name: str, data: bytes, staging: str, *, durable: bool, replace: bool
) -> None:
    """A nameless file linked in; a replacement takes a temporary name in ``staging`` and is
    renamed into ``folder`` (beside the target only when ``staging`` is on another file system)."""
    new = folder.new_anonymous()
    if new is None:  # no nameless files here
        _write_through(folder, name, data, staging, durable=durable, replace=replace)
        return
    try:
        new.file.write(data)
        if durable:
            new.sync()
        try:
            new.name_as(name)
            return
        except FileExistsError:
            if not replace:
                raise
        with Folder(staging) as stage:
            tmp = folder.tmp_prefix + uuid.uuid4().hex
            try:  # linkat with a directory fd: it follows the /proc link (link() would not)
                os.link(f"/proc/self/fd/{new.fd}", tmp, dst_dir_fd=stage.fd, follow_symlinks=True)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                new.name_as(name, replace=True)  # another file system: beside the target
                return
            try:
                os.replace(tmp, name, src_dir_fd=stage.fd, dst_dir_fd=folder.fd)
            except BaseException:
                os.unlink(tmp, dir_fd=stage.fd)
                raise
    finally:
        new.close()


def _write_through(
    folder: Folder, name: str, data: bytes, staging: str, *, durable: bool, replace: bool
) -> None:
    """Without nameless files: a file with a temporary name in ``staging``, hard-linked into
    ``folder`` when new, renamed over the old file otherwise."""
    tmp = os.path.join(staging, folder.tmp_prefix + uuid.uuid4().hex)
    target = os.path.join(folder.path, name)
    try:
        with open(tmp, "xb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            if not replace:
                raise
            os.replace(tmp, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _write_in(folder, name, data, durable=durable, replace=replace)
    finally:
        _unlink(tmp)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Folder:
    """An open directory in which new files are made."""

    def __init__(self, path: str | os.PathLike[str], *, tmp_prefix: str = TMP_PREFIX) -> None:
        self.path = os.fspath(path)
        self.tmp_prefix = tmp_prefix  # how temporary names made here begin
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
            self.tmp_name = folder.tmp_prefix + uuid.uuid4().hex
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
            self.tmp_name = self.folder.tmp_prefix + uuid.uuid4().hex
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
