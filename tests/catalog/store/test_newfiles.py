"""New files that get their name only once written whole (catalog.store.newfiles)."""

from __future__ import annotations

import os
import queue
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from catalog.store.newfiles import Folder, write_file


@pytest.fixture(params=["O_TMPFILE", "temporary name"])
def folder(request, tmp_path: Path):
    with Folder(tmp_path) as f:
        if request.param == "temporary name":
            f.anonymous = False  # as on a file system without O_TMPFILE
        elif not f.anonymous:
            pytest.skip("no O_TMPFILE here")
        yield f


def test_a_new_file_appears_whole_under_its_name(folder: Folder, tmp_path: Path) -> None:
    new = folder.new()
    new.file.write(b"whole content")
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".tmp-")] == []
    new.sync()
    new.name_as("object")
    new.close()
    folder.sync()
    assert (tmp_path / "object").read_bytes() == b"whole content"
    assert [p.name for p in tmp_path.iterdir()] == ["object"]  # no temporary name left


def test_a_taken_name_is_refused_or_replaced(folder: Folder, tmp_path: Path) -> None:
    (tmp_path / "taken").write_bytes(b"old")
    new = folder.new()
    new.file.write(b"new")
    with pytest.raises(FileExistsError):
        new.name_as("taken")
    assert (tmp_path / "taken").read_bytes() == b"old"
    new.name_as("taken", replace=True)
    new.close()
    assert (tmp_path / "taken").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_a_file_never_named_leaves_nothing(folder: Folder, tmp_path: Path) -> None:
    new = folder.new()
    new.file.write(b"abandoned")
    new.close()
    new.close()  # twice is harmless
    assert list(tmp_path.iterdir()) == []


def test_files_are_created_as_open_creates_them(folder: Folder, tmp_path: Path) -> None:
    new = folder.new()
    new.name_as("x")
    new.close()
    (tmp_path / "y").write_bytes(b"")
    assert os.stat(tmp_path / "x").st_mode == os.stat(tmp_path / "y").st_mode


# -- write_file: one file written whole or not at all ---------------------------------------------


@pytest.fixture(params=["O_TMPFILE", "temporary name"])
def tmpfile_mode(request, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """write_file with nameless files, and as on a file system without O_TMPFILE."""
    if request.param == "temporary name":
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    else:
        with Folder(tmp_path) as f:
            if not f.anonymous:
                pytest.skip("no O_TMPFILE here")
    return request.param


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("staged", [False, True], ids=["beside", "staging folder"])
def test_write_file_writes_a_new_file_whole(tmpfile_mode: str, staged: bool, tmp_path: Path):
    target_dir, staging = tmp_path / "out", tmp_path / "staging"
    target_dir.mkdir()
    staging.mkdir()
    (tmp_path / "made-by-open").write_bytes(b"")

    write_file(target_dir / "a.json", b'{"a": 1}\n', staging_dir=staging if staged else None)

    assert (target_dir / "a.json").read_bytes() == b'{"a": 1}\n'
    assert _names(target_dir) == ["a.json"]  # no temporary name left
    assert _names(staging) == []
    st = os.stat(target_dir / "a.json")
    assert st.st_mode == os.stat(tmp_path / "made-by-open").st_mode  # as open() makes files
    assert st.st_nlink == 1


@pytest.mark.parametrize("staged", [False, True], ids=["beside", "staging folder"])
def test_write_file_replaces_whole_or_refuses(tmpfile_mode: str, staged: bool, tmp_path: Path):
    target_dir, staging = tmp_path / "out", tmp_path / "staging"
    target_dir.mkdir()
    staging.mkdir()
    target = target_dir / "a.json"
    target.write_bytes(b"old")
    kwargs = {"staging_dir": staging} if staged else {}

    with pytest.raises(FileExistsError):
        write_file(target, b"new", replace=False, **kwargs)
    assert target.read_bytes() == b"old"
    assert _names(target_dir) == ["a.json"] and _names(staging) == []

    with open(target, "rb") as reader:  # a reader of the old file keeps it whole
        write_file(target, b"new", **kwargs)
        assert reader.read() == b"old"
    assert target.read_bytes() == b"new"
    assert _names(target_dir) == ["a.json"] and _names(staging) == []


def test_write_file_syncs_the_file_and_its_folder_only_when_durable(
    tmpfile_mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_file(tmp_path / "durable", b"1")
    assert synced == ["file", "folder"]
    synced.clear()
    write_file(tmp_path / "durable", b"2")  # replacing, too
    assert synced == ["file", "folder"]
    synced.clear()
    write_file(tmp_path / "quick", b"3", durable=False, staging_dir=tmp_path)
    write_file(tmp_path / "quick", b"4", durable=False, staging_dir=tmp_path)
    assert synced == []
    assert (tmp_path / "durable").read_bytes() == b"2"
    assert (tmp_path / "quick").read_bytes() == b"4"


def test_a_watched_folder_sees_one_create_per_write_through_a_staging_folder(
    tmpfile_mode: str, tmp_path: Path
):
    """A new file is hard-linked in and a replaced one renamed in from the staging folder: the
    watched folder sees neither a temporary name nor a move (watchdog pairs every move against
    its queue of pending events)."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    staging.mkdir()
    events: queue.SimpleQueue = queue.SimpleQueue()

    class Handler(FileSystemEventHandler):
        def dispatch(self, event) -> None:
            events.put(event)

    observer = Observer()
    observer.schedule(Handler(), str(inbox))
    observer.start()
    try:
        target = inbox / "r.json"
        write_file(target, b"1", durable=False, staging_dir=staging, tmp_prefix=".t-")
        write_file(target, b"2", durable=False, staging_dir=staging, tmp_prefix=".t-")
        (inbox / "marker").write_bytes(b"")  # every event of the writes comes before its close
        seen = []
        while True:
            event = events.get(timeout=10)
            if event.src_path == str(inbox / "marker"):
                if event.event_type == "closed":
                    break
                continue
            seen.append(event)
    finally:
        observer.stop()
        observer.join()
    assert target.read_bytes() == b"2"
    created = [e.src_path for e in seen if e.event_type == "created"]
    assert created == [str(target), str(target)]
    assert [e for e in seen if e.event_type == "moved"] == []
    assert not any(os.path.basename(e.src_path).startswith(".t-") for e in seen)
    assert _names(staging) == []


def test_a_staging_folder_on_another_file_system_falls_back_beside_the_target(
    tmpfile_mode: str, tmp_path: Path
):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system to stage on")
    staging = Path(tempfile.mkdtemp(dir=shm))
    try:
        target = tmp_path / "r.json"
        write_file(target, b"old", durable=False, staging_dir=staging, tmp_prefix=".t-")
        write_file(target, b"new", durable=False, staging_dir=staging, tmp_prefix=".t-")
        assert target.read_bytes() == b"new"
        assert _names(tmp_path) == ["r.json"]
        assert _names(staging) == []
    finally:
        shutil.rmtree(staging)
