"""The watcher end to end on real folders with real inotify: receipts, errors files, updates,
lifecycle-following receipts, readiness (slow and out-of-order writers), archive/delete, staging
of big files, idempotence across restarts, polling mode."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pytest

from catalog.catalog import Catalog
from catalog.errors import Busy
from catalog.model import object_id
from tests.conftest import REPO
from tests.watcher.conftest import (
    alive,
    drop,
    errors_of,
    read_json,
    receipt_of,
    wait_errors,
    wait_for,
    wait_receipt,
)
from watcher import WatcherBusy

pytestmark = pytest.mark.usefixtures("no_leaked_threads")

EXAMPLE = REPO / "examples" / "DEMO"


def test_the_example_dropped_into_the_inbox_gets_a_receipt(catalog, start_watcher) -> None:
    catalog.create_study({"studyId": "DEMO"})
    start_watcher()
    target = catalog.settings.inbox_dir / "DEMO"
    shutil.copytree(EXAMPLE, target)  # what the README tells a newcomer to do
    sidecar = target / "variant-call.song.json"
    receipt = wait_receipt(sidecar)

    aid = receipt["analysisId"]
    assert receipt["studyId"] == "DEMO" and receipt["state"] == "UNPUBLISHED"
    assert receipt["analysisType"] == {"name": "variantCall", "version": 1}
    assert receipt["analysisVersion"] == 1
    doc = Catalog(catalog.settings).get_analysis("DEMO", aid)  # queryable by anyone
    assert {f["fileName"] for f in doc["files"]} == {
        "example-tumour.vcf.gz",
        "example-tumour.variants.tsv",
    }
    for f in receipt["files"]:
        assert f["objectId"] == object_id(aid, f["fileName"])
        assert f["upload"]["status"] == "uploaded"
        spec = catalog.store.spec(f["objectId"])
        assert spec is not None and spec.object_md5 == f["fileMd5sum"]
    assert (target / "example-tumour.vcf.gz").exists()  # data files stay where they were dropped
    assert not errors_of(sidecar).exists()


def test_receipt_follows_publish_unpublish_and_suppress(
    catalog, start_watcher, inbox, payloads
) -> None:
    start_watcher()
    sidecar = drop(inbox, "a", payloads.variant_call(), payloads.contents)
    aid = wait_receipt(sidecar)["analysisId"]
    other = Catalog(catalog.settings)  # another process' catalog, e.g. the API of `serve`
    other.publish("ABC123", aid)
    wait_receipt(sidecar, state="PUBLISHED")
    other.unpublish("ABC123", aid)
    wait_receipt(sidecar, state="UNPUBLISHED")
    catalog.suppress("ABC123", aid)  # the watcher's own catalog object, as inside `serve`
    assert wait_receipt(sidecar, state="SUPPRESSED")["analysisId"] == aid


def test_receipts_from_an_earlier_run_follow_changes_made_while_stopped_and_after(
    catalog, start_watcher, inbox, payloads
) -> None:
    first = drop(inbox, "a", payloads.variant_call(), payloads.contents)
    other_payload = payloads.variant_call(
        samples=[payloads.sample("sa2", "sp2", "do2")], files=[payloads.file("b.vcf.gz")]
    )
    second = drop(inbox, "b", other_payload, payloads.contents)
    w = start_watcher()
    aid = wait_receipt(first)["analysisId"]
    other_aid = wait_receipt(second)["analysisId"]
    w.stop()

    other = Catalog(catalog.settings)  # another process, while no watcher runs
    other.publish("ABC123", aid)
    start_watcher()  # the new run follows the receipts the earlier one wrote
    assert wait_receipt(first, state="PUBLISHED")["analysisId"] == aid
    other.suppress("ABC123", other_aid)
    assert wait_receipt(second, state="SUPPRESSED")["analysisId"] == other_aid
    assert json.loads(receipt_of(first).read_text())["state"] == "PUBLISHED"


def test_editing_the_sidecar_of_an_unpublished_analysis_updates_it(
    catalog, start_watcher, inbox, payloads
) -> None:
    start_watcher()
    payload = payloads.variant_call()
    sidecar = drop(inbox, "a", payload, payloads.contents)
    aid = wait_receipt(sidecar)["analysisId"]

    payload["experiment"]["variantCallingTool"] = "silver bullet 2"
    sidecar.write_text(json.dumps(payload))
    receipt = wait_receipt(sidecar, analysisVersion=2)
    assert receipt["analysisId"] == aid
    doc = catalog.get_analysis("ABC123", aid)
    assert doc["experiment"]["variantCallingTool"] == "silver bullet 2"
    assert len(catalog.model.analyses) == 1


def test_a_changed_sidecar_of_a_published_analysis_is_refused(
    catalog, start_watcher, inbox, payloads
) -> None:
    start_watcher()
    payload = payloads.variant_call()
    sidecar = drop(inbox, "a", payload, payloads.contents)
    original = sidecar.read_text()
    aid = wait_receipt(sidecar)["analysisId"]
    catalog.publish("ABC123", aid)
    wait_receipt(sidecar, state="PUBLISHED")

    payload["experiment"]["variantCallingTool"] = "something else"
    sidecar.write_text(json.dumps(payload))
    errors = wait_errors(sidecar, error_id="illegal.analysis.update.request")
    assert errors["analysisId"] == aid
    assert "PUBLISHED" in errors["problems"][0]["message"]
    assert errors["problems"][0]["rule"] == "analysisState"
    assert read_json(receipt_of(sidecar))["state"] == "PUBLISHED"  # the registration stands
    doc = catalog.get_analysis("ABC123", aid)
    assert doc["experiment"]["variantCallingTool"] == "silver bullet"

    sidecar.write_text(original)  # reverting the edit clears the refusal
    wait_for(lambda: not errors_of(sidecar).exists(), what="errors file to go")
    assert wait_receipt(sidecar)["analysisVersion"] == 1


def test_an_update_cannot_change_the_files(catalog, start_watcher, inbox, payloads) -> None:
    start_watcher()
    payload = payloads.variant_call()
    sidecar = drop(inbox, "a", payload, payloads.contents)
    aid = wait_receipt(sidecar)["analysisId"]
    payload["files"] = [payloads.file("other.vcf.gz")]
    drop(inbox, "a", payload, payloads.contents)
    errors = wait_errors(sidecar, error_id="illegal.analysis.update.request")
    assert errors["problems"][0]["pointer"] == "/files"
    assert [f["fileName"] for f in catalog.get_analysis("ABC123", aid)["files"]] == ["a.vcf.gz"]


def test_every_problem_goes_into_the_errors_file_and_a_fix_removes_it(
    catalog, start_watcher, inbox, payloads
) -> None:
    start_watcher()
    payload = payloads.variant_call()
    payload["samples"][0]["donor"]["gender"] = "Unknown"
    del payload["experiment"]["variantCallingTool"]
    sidecar = drop(inbox, "a", payload, payloads.contents)
    errors = wait_errors(sidecar, error_id="schema.violation")
    pointers = {p["pointer"] for p in errors["problems"]}
    assert {"/samples/0/donor/gender", "/experiment/variantCallingTool"} <= pointers
    for p in errors["problems"]:
        assert p["errorId"] == "schema.violation" and p["rule"] and p["message"]
    assert errors["sidecar"] == "a.song.json"

    payload["samples"][0]["donor"]["gender"] = "Female"
    payload["experiment"]["variantCallingTool"] = "fixed"
    sidecar.write_text(json.dumps(payload))
    wait_receipt(sidecar)
    wait_for(lambda: not errors_of(sidecar).exists(), what="errors file to go")
    assert len(catalog.model.analyses) == 1


def test_same_sidecar_is_registered_once_across_restarts_and_copies(
    catalog, start_watcher, inbox, payloads
) -> None:
    payload = payloads.variant_call()
    sidecar = drop(inbox, "a", payload, payloads.contents)
    w = start_watcher()
    aid = wait_receipt(sidecar)["analysisId"]
    w.stop()

    receipt_of(sidecar).unlink()
    sidecar.touch()
    start_watcher()  # the start-up scan sees the touched sidecar and the missing receipt
    assert wait_receipt(sidecar)["analysisId"] == aid

    copy = inbox.parent / "ABC123" / "copy"
    shutil.copytree(inbox, copy, ignore=shutil.ignore_patterns("copy", "*.receipt.json"))
    assert wait_receipt(copy / "a.song.json")["analysisId"] == aid  # same content, same analysis
    assert len(Catalog(catalog.settings).model.analyses) == 1


def test_sidecar_first_and_slowly_written_files(catalog, start_watcher, inbox, payloads) -> None:
    w = start_watcher()
    content = os.urandom(300_000)
    payload = payloads.variant_call(files=[payloads.file("big.bam", content, fileType="BAM")])
    sidecar = inbox / "slow.song.json"
    sidecar.write_text(json.dumps(payload))  # the sidecar arrives before its data
    with open(inbox / "big.bam", "wb") as f:
        f.write(content[:100_000])
        f.flush()
        wait_for(lambda: w.known.get(str(sidecar)) and w.known[str(sidecar)].status == "pending")
        f.write(content[100_000:])  # the rest, still in the same open file
    receipt = wait_receipt(sidecar)
    assert receipt["files"][0]["upload"]["status"] == "uploaded"
    assert catalog.store.spec(receipt["files"][0]["objectId"]).object_size == 300_000


def test_a_data_file_change_that_raced_the_check_is_not_masked_by_the_sidecar_event(
    catalog, inbox, payloads
) -> None:
    # The sidecar's own "created" event arrived while it was being checked; the data file was
    # completed meanwhile, its close event lost (nothing waited on it yet). The retry for the
    # data file must win: the sidecar's event is dropped on release as "unchanged", and the
    # sidecar would otherwise stay pending until the next rescan (seen with ``cp -p``).
    from watcher import Watcher
    from watcher.readiness import Trigger
    from watcher.scanner import stat_key

    data = inbox / "raced.bam"
    data.write_bytes(b"partial")
    seen = stat_key(str(data))
    data.write_bytes(b"partial, now complete")
    sidecar = str(inbox / "raced.song.json")
    w = Watcher(catalog)
    try:
        c = w.coordinator
        c.dirty[sidecar] = Trigger("created", sidecar)
        c._watch_files(sidecar, {str(data): seen})
        assert c.dirty[sidecar] == Trigger("retry", str(data))
        assert c.rdeps[str(data)] == {sidecar}
        c.dirty[sidecar] = Trigger("ingest", sidecar)  # an explicit ingest is never replaced
        c._watch_files(sidecar, {str(data): seen})
        assert c.dirty[sidecar] == Trigger("ingest", sidecar)
    finally:
        w.stop()


def test_write_then_rename(catalog, start_watcher, inbox, payloads) -> None:
    start_watcher()
    payload = payloads.variant_call()
    drop(inbox, "ignored", {"files": payload["files"]}, payloads.contents)  # data files only
    (inbox / "ignored.song.json").unlink()
    tmp = inbox / ".partial.song.json.tmp"
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, inbox / "renamed.song.json")
    wait_receipt(inbox / "renamed.song.json")


def test_a_sidecar_waiting_too_long_is_rejected_then_taken_when_the_file_comes(
    catalog, start_watcher, inbox, payloads
) -> None:
    start_watcher(watch_pending_timeout=1.0)
    payload = payloads.variant_call(files=[payloads.file("a.vcf.gz"), payloads.file("b.vcf.gz")])
    missing = payload["files"][1]
    contents = {k: v for k, v in payloads.contents.items() if k != missing["fileMd5sum"]}
    sidecar = drop(inbox, "late", payload, contents)
    errors = wait_errors(sidecar, error_id="file.not.found")
    assert errors["problems"][0]["pointer"] == "/files/1/fileName"
    assert "b.vcf.gz" in errors["message"]

    (inbox / "b.vcf.gz").write_bytes(payloads.contents[missing["fileMd5sum"]])
    wait_receipt(sidecar)
    wait_for(lambda: not errors_of(sidecar).exists(), what="errors file to go")


def test_unchanged_files_are_not_hashed_again(catalog, start_watcher, inbox, payloads) -> None:
    w = start_watcher()
    payload = payloads.variant_call(files=[payloads.file("a.vcf.gz"), payloads.file("b.vcf.gz")])
    second = payload["files"][1]
    contents = {k: v for k, v in payloads.contents.items() if k != second["fileMd5sum"]}
    sidecar = drop(inbox, "x", payload, contents)
    wait_for(lambda: w.known.get(str(sidecar)) and w.known[str(sidecar)].status == "pending")
    looks = w.stats["pending"]
    subprocess.run(["touch", str(sidecar)], check=True)  # the user's way to say "look again"
    wait_for(lambda: w.stats["pending"] > looks, what="second look")
    assert w.cache.hashed_files == 1
    (inbox / "b.vcf.gz").write_bytes(payloads.contents[second["fileMd5sum"]])
    wait_receipt(sidecar)
    assert w.cache.hashed_files == 2


@pytest.mark.parametrize("mode", ["move", "delete"])
def test_dropped_files_are_archived_only_once_verified(
    catalog, start_watcher, inbox, payloads, tmp_path, mode
) -> None:
    archive = tmp_path / "archive"
    start_watcher(watch_after_upload=mode, watch_archive_dir=str(archive))
    payload = payloads.variant_call()
    sidecar = drop(inbox, "a", payload, payloads.contents)
    receipt = wait_receipt(sidecar)
    aid, entry = receipt["analysisId"], receipt["files"][0]
    assert not (inbox / "a.vcf.gz").exists()
    assert catalog.store.spec(entry["objectId"]).object_md5 == entry["fileMd5sum"]
    if mode == "move":
        moved = archive / "ABC123" / aid / "a.vcf.gz"
        assert entry["upload"]["archived"]["action"] == "moved"
        assert moved.read_bytes() == payloads.contents[entry["fileMd5sum"]]
    else:
        assert entry["upload"]["archived"]["action"] == "deleted"

    bad = payloads.variant_call(files=[payloads.file("bad.vcf.gz")])
    bad["files"][0]["fileMd5sum"] = "0" * 32  # never verified: never touched
    (inbox / "bad").mkdir()
    (inbox / "bad" / "bad.vcf.gz").write_bytes(b"whatever")
    bad["files"][0]["fileSize"] = len(b"whatever")
    bad_sidecar = inbox / "bad" / "b.song.json"
    bad_sidecar.write_text(json.dumps(bad))
    wait_errors(bad_sidecar, error_id="mismatching.file.md5sum")
    assert (inbox / "bad" / "bad.vcf.gz").read_bytes() == b"whatever"


def test_big_files_are_verified_while_copied_into_storage(
    catalog, start_watcher, inbox, payloads
) -> None:
    w = start_watcher(watch_stage_min_bytes=4096)
    content = os.urandom(50_000)
    payload = payloads.variant_call(files=[payloads.file("big.bam", content, fileType="BAM")])
    sidecar = drop(inbox, "big", payload, payloads.contents)
    receipt = wait_receipt(sidecar)
    spec = catalog.store.spec(receipt["files"][0]["objectId"])
    assert spec.object_size == 50_000 and spec.object_md5 == payload["files"][0]["fileMd5sum"]
    assert w.cache.hashed_files == 0  # verified by the copy itself: each byte read once

    wrong = payloads.variant_call(files=[payloads.file("w.bam", os.urandom(9000), fileType="BAM")])
    wrong["files"][0]["fileMd5sum"] = "f" * 32
    (inbox / "w").mkdir()
    (inbox / "w" / "w.bam").write_bytes(payloads.contents[next(reversed(payloads.contents))])
    wrong_sidecar = inbox / "w" / "w.song.json"
    wrong_sidecar.write_text(json.dumps(wrong))
    errors = wait_errors(wrong_sidecar, error_id="mismatching.file.md5sum")
    assert errors["problems"][0]["pointer"] == "/files/0/fileMd5sum"
    assert len(list(catalog.store.list_object_ids())) == 1  # the refused copy was removed


def test_a_sidecar_for_a_missing_study_is_retried_once_the_study_exists(
    catalog, start_watcher, payloads
) -> None:
    start_watcher()
    folder = catalog.settings.inbox_dir / "NEWSTUDY"
    sidecar = drop(folder, "a", payloads.variant_call("NEWSTUDY"), payloads.contents)
    errors = wait_errors(sidecar, error_id="study.id.does.not.exist")
    assert "songlake study create NEWSTUDY" in errors["message"]
    Catalog(catalog.settings).create_study({"studyId": "NEWSTUDY"})
    assert wait_receipt(sidecar)["studyId"] == "NEWSTUDY"
    # the receipt is written first, then the stale errors file removed: wait for the second step
    wait_for(lambda: not errors_of(sidecar).exists(), 10, "the stale errors file to go")


def test_auto_create_studies(catalog, start_watcher, payloads) -> None:
    start_watcher(auto_create_studies=True)
    sidecar = drop(
        catalog.settings.inbox_dir / "AUTO1", "a", payloads.variant_call("AUTO1"), payloads.contents
    )
    assert wait_receipt(sidecar)["studyId"] == "AUTO1"
    assert "AUTO1" in catalog.list_studies()


def test_polling_mode_sees_drops_without_inotify(catalog, start_watcher, inbox, payloads) -> None:
    w = start_watcher(polling=True)
    assert w._observer is None
    sidecar = drop(inbox, "p", payloads.variant_call(), payloads.contents)
    wait_receipt(sidecar)


def test_one_watcher_per_root(catalog, start_watcher) -> None:
    start_watcher()
    with pytest.raises(WatcherBusy) as raised:
        start_watcher()
    assert isinstance(raised.value, Busy)  # the error tree's leaf, not a class of the watcher's
    assert raised.value.error_id == "watcher.already.running"


# -- where uploads run (watcher/uploadpool.py) ----------------------------------------------------


def test_uploads_run_in_worker_processes_by_default(
    catalog, start_watcher, inbox, payloads
) -> None:
    w = start_watcher()
    workers = w._upload_pool.pids()
    assert len(workers) == catalog.settings.watch_upload_processes == 2
    assert os.getpid() not in workers
    sidecars = [
        drop(
            inbox,
            f"w{i}",
            payloads.variant_call(
                samples=[payloads.sample(f"S{i}", f"P{i}", f"D{i}")],
                files=[payloads.file(f"w{i}.vcf.gz")],
            ),
            payloads.contents,
        )
        for i in range(6)
    ]
    for sidecar in sidecars:
        receipt = wait_receipt(sidecar)
        spec = catalog.store.spec(receipt["files"][0]["objectId"])
        assert spec is not None and spec.object_md5 == receipt["files"][0]["fileMd5sum"]


def test_uploads_in_threads_when_asked(catalog, start_watcher, inbox, payloads) -> None:
    w = start_watcher(watch_upload_processes=0)
    assert w._upload_pool.pids() == []
    sidecar = drop(inbox, "t", payloads.variant_call(), payloads.contents)
    assert wait_receipt(sidecar)["files"][0]["upload"]["status"] == "uploaded"


def test_a_killed_upload_worker_is_replaced(catalog, start_watcher, inbox, payloads) -> None:
    w = start_watcher()
    first = w._upload_pool.pids()
    # the workers run at watch_upload_nice 5: on a busy machine the registrar gets a core first
    want = min(19, os.getpriority(os.PRIO_PROCESS, 0) + catalog.settings.watch_upload_nice)
    assert catalog.settings.watch_upload_nice == 5
    wait_for(
        lambda: all(os.getpriority(os.PRIO_PROCESS, pid) == want for pid in first),
        10,
        "the upload workers to lower their priority",
    )
    os.kill(first[0], signal.SIGKILL)
    wait_for(lambda: not alive(first[0]), 10, "the worker to die")
    sidecar = drop(inbox, "k", payloads.variant_call(), payloads.contents)
    receipt = wait_receipt(sidecar, timeout=30)  # a failed chunk is retried after 5 s
    assert receipt["files"][0]["upload"]["status"] == "uploaded"
    now = w._upload_pool.pids()
    assert len(now) == 2 and first[0] not in now


def test_a_receipt_written_with_an_older_state_is_rewritten(
    catalog, start_watcher, inbox, payloads
) -> None:
    """An upload worker writes the receipt with the state of registration time; when the state
    changed meanwhile (a publish between registration and receipt), the receipt is rewritten."""
    w = start_watcher()
    sidecar = drop(inbox, "s", payloads.variant_call(), payloads.contents)
    receipt = wait_receipt(sidecar)
    catalog.publish("ABC123", receipt["analysisId"])
    wait_receipt(sidecar, state="PUBLISHED")
    stale = {**receipt, "state": "UNPUBLISHED"}  # as a slow upload worker would leave it
    receipt_of(sidecar).write_text(json.dumps(stale))
    w.registrar.receipt_stale(str(sidecar))
    assert wait_receipt(sidecar, state="PUBLISHED")["analysisId"] == receipt["analysisId"]
