"""Bad input and faults the watcher must survive, each with its observable outcome: an errors
file with the right error id, pointer and rule, nothing registered, nothing read or touched
outside the watched folder, and the good sidecars of a burst registered regardless."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from catalog.catalog import Catalog
from tests.watcher.conftest import (
    drop,
    errors_of,
    read_json,
    receipt_of,
    wait_errors,
    wait_for,
    wait_receipt,
)

pytestmark = pytest.mark.usefixtures("no_leaked_threads")


def test_a_sidecar_that_is_not_json(catalog, start_watcher, inbox) -> None:
    start_watcher()
    sidecar = inbox / "x.song.json"
    sidecar.write_text("studyId: ABC123\n")
    errors = wait_errors(sidecar, error_id="payload.parsing")
    assert errors["problems"][0]["rule"] == "json"
    assert catalog.model.analyses == {}


def test_a_sidecar_truncated_mid_write_then_completed(
    catalog, start_watcher, inbox, payloads
) -> None:
    start_watcher()
    text = json.dumps(payloads.variant_call())
    payloads.write_files(payloads.variant_call(files=[]), inbox)  # nothing: files come below
    for f in json.loads(text)["files"]:
        (inbox / f["fileName"]).write_bytes(payloads.contents[f["fileMd5sum"]])
    sidecar = inbox / "t.song.json"
    sidecar.write_text(text[: len(text) // 2])  # the writer closed it half-way (it crashed)
    errors = wait_errors(sidecar, error_id="payload.parsing")
    assert "line 1" in errors["problems"][0]["message"]
    sidecar.write_text(text)  # written again, completely
    wait_receipt(sidecar)
    wait_for(lambda: not errors_of(sidecar).exists(), what="errors file to go")


def test_a_100_mb_sidecar_is_refused_without_reading_it(catalog, start_watcher, inbox) -> None:
    start_watcher()
    sidecar = inbox / "huge.song.json"
    with open(sidecar, "wb") as f:
        f.write(b'{"studyId": "ABC123", "pad": "' + b"x" * 100_000_000 + b'"}')
    # (a look during the write may first see a truncated document; the close event settles it)
    errors = wait_for(
        lambda: (
            (doc := read_json(errors_of(sidecar)))
            and doc["problems"][0]["rule"] == "maxBytes"
            and doc
        ),
        what="the maxBytes refusal",
    )
    assert errors["errorId"] == "payload.parsing"
    assert errors["sidecarSha256"] is None  # refused on its size alone, never read


def test_study_id_must_match_the_study_folder(catalog, start_watcher, inbox, payloads) -> None:
    catalog.create_study({"studyId": "OTHER"})
    start_watcher()
    sidecar = drop(inbox, "m", payloads.variant_call("OTHER"), payloads.contents)
    errors = wait_errors(sidecar, error_id="study.id.mismatch")
    assert errors["problems"][0]["pointer"] == "/studyId"
    assert errors["problems"][0]["rule"] == "studyFolder"

    loose = drop(catalog.settings.inbox_dir, "loose", payloads.variant_call(), payloads.contents)
    assert wait_errors(loose, error_id="study.id.mismatch")["problems"][0]["rule"] == "studyFolder"
    assert catalog.model.analyses == {}


def test_a_file_name_pointing_outside_the_folder(
    catalog, start_watcher, inbox, payloads, tmp_path
) -> None:
    w = start_watcher()
    secret = b"not yours\n"
    (inbox.parent / "secret.txt").write_bytes(secret)  # exists, with the declared md5
    payload = payloads.variant_call(files=[payloads.file("../secret.txt", secret)])
    sidecar = inbox / "escape.song.json"
    sidecar.write_text(json.dumps(payload))
    errors = wait_errors(sidecar)
    found = {(p["errorId"], p["pointer"]) for p in errors["problems"]}
    assert ("file.name.outside.folder", "/files/0/fileName") in found
    assert w.cache.hashed_files == 0  # the file outside was never read
    assert list(catalog.store.list_object_ids()) == []


def test_symlinks_leaving_the_inbox_are_refused(
    catalog, start_watcher, inbox, payloads, tmp_path
) -> None:
    start_watcher()
    outside = tmp_path / "outside"
    outside.mkdir()
    payload = payloads.variant_call()
    (outside / "a.vcf.gz").write_bytes(payloads.contents[payload["files"][0]["fileMd5sum"]])
    folder = inbox / "links"
    folder.mkdir()
    os.symlink(outside / "a.vcf.gz", folder / "a.vcf.gz")
    sidecar = folder / "l.song.json"
    sidecar.write_text(json.dumps(payload))
    errors = wait_errors(sidecar, error_id="file.symlink.outside")
    assert errors["problems"][0]["pointer"] == "/files/0/fileName"

    (outside / "s.song.json").write_text(json.dumps(payloads.variant_call()))
    os.symlink(outside / "s.song.json", inbox / "s.song.json")
    wait_errors(inbox / "s.song.json", error_id="file.symlink.outside")
    assert catalog.model.analyses == {}

    inside = inbox / "shared"  # a link that stays inside the inbox is fine
    inside.mkdir()
    good = payloads.variant_call(files=[payloads.file("b.vcf.gz")])
    (inbox / "b.vcf.gz").write_bytes(payloads.contents[good["files"][0]["fileMd5sum"]])
    os.symlink(inbox / "b.vcf.gz", inside / "b.vcf.gz")
    (inside / "ok.song.json").write_text(json.dumps(good))
    wait_receipt(inside / "ok.song.json")


@pytest.mark.parametrize(
    ("change", "error_id", "pointer"),
    [
        ({"fileMd5sum": "0" * 32}, "mismatching.file.md5sum", "/files/0/fileMd5sum"),
        ("grow", "mismatching.file.size", "/files/0/fileSize"),
    ],
)
def test_a_listed_file_whose_md5_or_size_differs(
    catalog, start_watcher, inbox, payloads, change, error_id, pointer
) -> None:
    start_watcher()
    payload = payloads.variant_call()
    data = payloads.contents[payload["files"][0]["fileMd5sum"]]
    if change == "grow":
        (inbox / "a.vcf.gz").write_bytes(data + b"more")
    else:
        (inbox / "a.vcf.gz").write_bytes(data)
        payload["files"][0].update(change)
    sidecar = inbox / "bad.song.json"
    sidecar.write_text(json.dumps(payload))
    errors = wait_errors(sidecar, error_id=error_id)
    assert errors["problems"][0]["pointer"] == pointer
    assert catalog.model.analyses == {}
    if change == "grow":  # fixing the file (not the sidecar) retries it
        (inbox / "a.vcf.gz").write_bytes(data)
        wait_receipt(sidecar)


def test_a_file_still_growing_when_the_sidecar_arrives(
    catalog, start_watcher, inbox, payloads
) -> None:
    w = start_watcher()
    content = os.urandom(200_000)
    payload = payloads.variant_call(files=[payloads.file("g.bam", content, fileType="BAM")])
    sidecar = inbox / "g.song.json"
    with open(inbox / "g.bam", "wb") as f:
        f.write(content[:50_000])
        f.flush()
        sidecar.write_text(json.dumps(payload))
        wait_for(lambda: w.known.get(str(sidecar)) and w.known[str(sidecar)].status == "pending")
        assert not receipt_of(sidecar).exists() and not errors_of(sidecar).exists()
        f.write(content[50_000:])
    wait_receipt(sidecar)


def test_two_sidecars_claiming_the_same_file(catalog, start_watcher, inbox, payloads) -> None:
    start_watcher()
    payload = payloads.variant_call()
    drop(inbox, "one", payload, payloads.contents)
    first, second = inbox / "one.song.json", inbox / "two.song.json"
    twin = dict(payload, info={"note": "another analysis of the same file"})
    second.write_text(json.dumps(twin))
    wait_for(
        lambda: (
            {receipt_of(first).exists(), receipt_of(second).exists()} == {True, False}
            and (errors_of(first).exists() or errors_of(second).exists())
        ),
        what="one receipt and one errors file",
    )
    loser = first if errors_of(first).exists() else second
    assert read_json(errors_of(loser))["errorId"] == "info.already.exists"
    assert len(catalog.model.analyses) == 1


def test_a_thousand_sidecars_at_once_with_a_few_bad_ones(
    catalog, start_watcher, payloads, tmp_path
) -> None:
    staging = tmp_path / "staging" / "ABC123"
    bad = {
        17: "payload.parsing",
        256: "mismatching.file.md5sum",
        511: "schema.violation",
        768: "study.id.mismatch",
        999: "file.name.outside.folder",
    }
    for i in range(1000):
        folder = staging / f"run{i:04d}"
        payload = payloads.variant_call(
            samples=[payloads.sample(f"sa{i}", f"sp{i}", f"do{i}")],
            files=[payloads.file(f"f{i}.vcf.gz")],
        )
        if i == 256:  # the file is there, its md5 is not the declared one
            folder.mkdir(parents=True)
            (folder / "f256.vcf.gz").write_bytes(
                payloads.contents[payload["files"][0]["fileMd5sum"]]
            )
            payload["files"][0]["fileMd5sum"] = "0" * 32
        elif i == 511:
            del payload["experiment"]
        elif i == 768:
            payload["studyId"] = "ELSEWHERE"
        elif i == 999:
            payload["files"][0]["fileName"] = "../../f.vcf.gz"
        sidecar = drop(folder, "s", payload, payloads.contents)
        if i == 17:
            sidecar.write_text("{ not json")
    start_watcher()
    shutil.move(str(staging), str(catalog.settings.inbox_dir / "ABC123"))  # all at once
    inbox = catalog.settings.inbox_dir / "ABC123"

    def outcomes() -> bool:
        done = sum(
            1
            for i in range(1000)
            if receipt_of(inbox / f"run{i:04d}" / "s.song.json").exists()
            or errors_of(inbox / f"run{i:04d}" / "s.song.json").exists()
        )
        return done == 1000

    wait_for(outcomes, timeout=90, what="an outcome for every sidecar")
    for i, error_id in bad.items():
        errors = read_json(errors_of(inbox / f"run{i:04d}" / "s.song.json"))
        assert errors is not None and error_id in {p["errorId"] for p in errors["problems"]}
    assert len(Catalog(catalog.settings).model.analyses) == 995
    assert len(list(catalog.store.list_object_ids())) == 995


@pytest.mark.parametrize(
    ("sidecar", "study"),
    [
        ("{f}/S1/a.song.json", "S1"),
        ("{f}/S1/run/deep/a.song.json", "S1"),
        ("{f}/S1/.hidden/a.song.json", "S1"),
        ("{f}//S1//a.song.json", "S1"),
        ("{f}/./S1/a.song.json", "S1"),
        ("{f}/a.song.json", None),  # not in a study folder
        ("{f}/../S1/a.song.json", None),  # outside the watched folder
        ("{f}-other/S1/a.song.json", None),  # a sibling folder that shares the prefix
    ],
)
def test_the_study_is_the_first_folder_under_the_watched_one(
    tmp_path, sidecar: str, study: str | None
) -> None:
    from watcher.layout import Folder

    folder = Folder.at(tmp_path / "inbox")
    assert folder.study_of(sidecar.format(f=folder.path)) == study
