"""A hostile corpus dropped into a live inbox: every item gets one outcome file, none is looked at
again until it changes, good sidecars in the same batch still register, and the watcher idles."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from catalog import Catalog

from .conftest import errors_of, read_json, receipt_of, wait_errors, wait_receipt


def _sidecar(folder: Path, name: str, body: bytes | str | dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.song.json"
    if isinstance(body, dict):
        body = json.dumps(body)
    path.write_bytes(body.encode() if isinstance(body, str) else body)
    return path


def _good_sidecars(inbox: Path, payloads, count: int = 3) -> list[Path]:
    good = []
    for i in range(count):
        payload = payloads.variant_call(files=[payloads.file(f"g{i}.vcf.gz")])
        folder = inbox / f"good{i}"
        payloads.write_files(payload, folder)
        good.append(_sidecar(folder, f"g{i}", payload))
    return good


def _corpus(catalog: Catalog, inbox: Path, payloads, tmp_path: Path) -> dict[str, Path]:
    """name -> sidecar of every hostile item (each must end with an errors file)."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    items: dict[str, Path] = {}
    items["malformed"] = _sidecar(inbox / "malformed", "m", '{"studyId": "ABC123",')
    items["not-utf8"] = _sidecar(inbox / "latin1", "l", b'{"studyId": "\xff\xfe"}')
    items["huge"] = _sidecar(inbox / "huge", "h", b'{"x": "' + b"a" * (20 << 20) + b'"}')
    items["empty"] = _sidecar(inbox / "empty", "e", b"")
    items["deep"] = _sidecar(inbox / "deep", "d", "[" * 5000 + "]" * 5000)
    items["surrogate"] = _sidecar(
        inbox / "surrogate", "s", json.dumps(payloads.variant_call(info={"x": "\ud800"}))
    )

    def with_files(key: str, files: list[dict], **extra) -> dict:
        payload = payloads.variant_call(files=files, **extra)
        items[key] = _sidecar(inbox / key, key, payload)
        return payload

    # a data file that is a link out of the inbox
    f = payloads.file("h.vcf.gz")
    (outside / "h.vcf.gz").write_bytes(payloads.contents[f["fileMd5sum"]])
    (inbox / "link-file").mkdir()
    os.symlink(outside / "h.vcf.gz", inbox / "link-file" / "h.vcf.gz")
    with_files("link-file", [f])
    # a folder on the way of a fileName that is a link out of the inbox
    f = payloads.file("sub/x.vcf.gz")
    (outside / "sub" / "x.vcf.gz").write_bytes(payloads.contents[f["fileMd5sum"]])
    (inbox / "link-folder").mkdir()
    os.symlink(outside / "sub", inbox / "link-folder" / "sub")
    with_files("link-folder", [f])
    # a link loop, a FIFO and a socket where data files should be
    (inbox / "loop").mkdir()
    os.symlink(inbox / "loop" / "b.vcf.gz", inbox / "loop" / "a.vcf.gz")
    os.symlink(inbox / "loop" / "a.vcf.gz", inbox / "loop" / "b.vcf.gz")
    with_files("loop", [payloads.file("a.vcf.gz")])
    (inbox / "fifo").mkdir()
    os.mkfifo(inbox / "fifo" / "p.vcf.gz")
    with_files("fifo", [payloads.file("p.vcf.gz")])
    (inbox / "sock").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(inbox / "sock" / "k.vcf.gz"))
    sock.close()
    with_files("sock", [payloads.file("k.vcf.gz")])
    # a FIFO where the sidecar should be
    (inbox / "fifo-sidecar").mkdir()
    os.mkfifo(inbox / "fifo-sidecar" / "f.song.json")
    items["fifo-sidecar"] = inbox / "fifo-sidecar" / "f.song.json"
    # sizes no file has, names twice, a study that does not exist, the wrong study folder
    with_files("huge-size", [payloads.file("z.vcf.gz", fileSize=2**63)])
    with_files("negative-size", [payloads.file("n.vcf.gz", fileSize=-1)])
    twice = [payloads.file("t.vcf.gz", content=b"t\n"), payloads.file("t.vcf.gz", content=b"t\n")]
    (inbox / "same-name").mkdir()
    (inbox / "same-name" / "t.vcf.gz").write_bytes(b"t\n")
    with_files("same-name", twice)
    unknown = payloads.variant_call("NOPE")
    payloads.write_files(unknown, inbox.parent / "NOPE" / "u")
    items["unknown-study"] = _sidecar(inbox.parent / "NOPE" / "u", "u", unknown)
    items["wrong-folder"] = _sidecar(inbox / "wrong", "w", payloads.variant_call("XYZ"))
    # a file that vanishes once the sidecar names it
    f = payloads.file("v.vcf.gz")
    (inbox / "vanish").mkdir()
    (inbox / "vanish" / "v.vcf.gz").write_bytes(payloads.contents[f["fileMd5sum"]])
    with_files("vanish", [f])
    (inbox / "vanish" / "v.vcf.gz").unlink()
    return items


def test_a_hostile_corpus_gets_one_outcome_each_and_the_watcher_idles(
    catalog, start_watcher, inbox, payloads, tmp_path
) -> None:
    w = start_watcher(watch_pending_timeout=1.0, watch_rescan_interval=0.5)
    good = _good_sidecars(inbox, payloads)  # they arrive with the bad ones and must not wait
    items = _corpus(catalog, inbox, payloads, tmp_path)
    for sidecar in good:
        wait_receipt(sidecar, timeout=30)
    outcomes = {}
    for name, sidecar in items.items():
        doc = wait_errors(sidecar, timeout=30)
        assert not receipt_of(sidecar).exists(), name
        outcomes[name] = doc["errorId"]
    assert outcomes == {
        "malformed": "payload.parsing",
        "not-utf8": "payload.parsing",
        "huge": "payload.parsing",
        "empty": "payload.parsing",
        "deep": "payload.parsing",
        "surrogate": "payload.parsing",
        "link-file": "file.symlink.outside",
        "link-folder": "file.symlink.outside",
        "loop": "file.not.regular",
        "fifo": "file.not.regular",
        "sock": "file.not.regular",
        "fifo-sidecar": "payload.parsing",
        "huge-size": "schema.violation",
        "negative-size": "schema.violation",
        "same-name": "schema.violation",
        "unknown-study": "study.id.does.not.exist",
        "wrong-folder": "study.id.mismatch",
        "vanish": "file.not.found",
    }
    assert len(catalog.model.analyses) == 3
    # handled: no item is looked at again, no errors file rewritten, and the watcher idles
    assert w.wait_idle(10)
    stamps = {n: os.stat(errors_of(p)).st_mtime_ns for n, p in items.items()}
    looks = sum(w.stats.values())
    cpu = time.process_time()
    time.sleep(2.0)  # four rescans
    busy = time.process_time() - cpu
    assert {n: os.stat(errors_of(p)).st_mtime_ns for n, p in items.items()} == stamps
    assert sum(w.stats.values()) - looks <= 2, w.stats
    assert busy < 0.1, f"the idle watcher used {busy / 2:.0%} of a core"
    assert w._thread is not None and w._thread.is_alive()


def test_a_receipt_path_taken_by_a_folder_gets_one_errors_file(
    catalog, start_watcher, inbox, payloads
) -> None:
    w = start_watcher(watch_rescan_interval=0.3)
    payload = payloads.variant_call()
    payloads.write_files(payload, inbox)
    receipt_of(inbox / "r.song.json").mkdir()
    sidecar = _sidecar(inbox, "r", payload)
    doc = wait_errors(sidecar)
    assert "receipt" in doc["message"]
    assert len(catalog.model.analyses) == 1  # registered; only its receipt cannot be written
    assert w.wait_idle(10)
    stamp = os.stat(errors_of(sidecar)).st_mtime_ns
    looks = sum(w.stats.values())
    time.sleep(1.0)
    assert os.stat(errors_of(sidecar)).st_mtime_ns == stamp
    assert sum(w.stats.values()) - looks <= 1, w.stats


def test_a_link_out_of_the_inbox_is_judged_once(catalog, start_watcher, inbox, payloads) -> None:
    """The hot loop: a data file linked to /etc/hostname was rejected ~600 times a second."""
    w = start_watcher()
    target = Path("/etc/hostname") if Path("/etc/hostname").exists() else Path("/etc/passwd")
    data = target.read_bytes()
    f = payloads.file("h.vcf.gz", content=data)
    folder = inbox / "t"
    folder.mkdir()
    os.symlink(target, folder / "h.vcf.gz")
    sidecar = _sidecar(folder, "t", payloads.variant_call(files=[f]))
    wait_errors(sidecar, error_id="file.symlink.outside")
    time.sleep(1.0)
    assert w.stats["rejected"] <= 2, w.stats
    assert read_json(errors_of(sidecar))["problems"][0]["pointer"] == "/files/0/fileName"
    assert w.wait_idle(10)


def test_one_sidecar_failing_unexpectedly_does_not_hold_back_its_batch(
    catalog, start_watcher, inbox, payloads
) -> None:
    """A folder name that is not UTF-8 (a Latin-1 'é') reaches the catalog as a lone surrogate,
    which no table can store: that sidecar gets an errors file, the others of its batch commit."""
    good = _good_sidecars(inbox, payloads)
    bad_dir = os.fsdecode(os.fsencode(str(inbox)) + b"/caf\xe9")
    payload = payloads.variant_call(files=[payloads.file("b.vcf.gz")])
    payloads.write_files(payload, Path(bad_dir))
    bad = _sidecar(Path(bad_dir), "b", payload)
    w = start_watcher(watch_linger=0.5)
    for sidecar in good:
        wait_receipt(sidecar, timeout=30)
    doc = wait_errors(bad, timeout=30)
    assert doc["errorId"] == "unknown.error"
    assert len(catalog.model.analyses) == 3
    assert w.wait_idle(10)
