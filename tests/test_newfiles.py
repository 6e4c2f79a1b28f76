"""New files that get their name only once written whole (catalog.newfiles)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catalog.store.newfiles import Folder


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
