"""Song's analysis messages from the committed history: the JSONL log, cursors, replay, status,
misconfigured sinks, and the outbox reader underneath (real Delta tables in tmp_path)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog import Catalog, SubmitItem
from catalog.errors import BadRequest, DispatcherBusy
from catalog.events import Dispatcher, start_background, status
from catalog.events.config import events_config, parse_events
from catalog.events.outbox import BEGINNING, Cut, Outbox, Position
from catalog.model import now
from catalog.settings import load_settings
from catalog.write.registration import ORDER
from catalog.write.validation import Planner
from songlake.cli import main
from tests.catalog.events.conftest import FAST, idle, log_lines
from tests.conftest import STUDY

MESSAGE_KEYS = ["analysisId", "studyId", "state", "action", "songServerId", "analysis"]


@pytest.fixture
def dispatch(catalog: Catalog, no_leaked_threads: None) -> Iterator[Callable[..., Dispatcher]]:
    """Start dispatchers over the test catalog; every one is stopped at the end."""
    started: list[Dispatcher] = []

    def start(events: dict | None = None, **kw) -> Dispatcher:
        d = Dispatcher(catalog, config=parse_events({**FAST, **(events or {})}), **kw)
        d.start(standby=False)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def actions(lines: list[dict]) -> list[tuple[str, str, str]]:
    return [(m["analysisId"], m["action"], m["state"]) for m in lines]


def test_register_publish_suppress_reach_the_log_in_order_with_songs_shape(
    catalog, submitted, upload, dispatch
):
    aid, payload = submitted
    upload(aid, payload)
    catalog.publish(STUDY, aid)
    d = dispatch()
    catalog.suppress(STUDY, aid)
    idle(d)

    lines = log_lines(catalog)
    assert actions(lines) == [
        (aid, "CREATE", "UNPUBLISHED"),
        (aid, "PUBLISH", "PUBLISHED"),
        (aid, "SUPPRESS", "SUPPRESSED"),
    ]
    for seen, m in enumerate(lines):
        assert list(m) == MESSAGE_KEYS  # Song's field order, nothing more
        assert m["studyId"] == STUDY
        assert m["songServerId"] == "song.overture"
        # the analysis as it was when the message went out (re-read, as Song does)
        assert len(m["analysis"]["analysisStateHistory"]) >= seen
    assert lines[-1]["analysis"] == catalog.get_analysis(STUDY, aid)  # exactly as GET returns it
    assert d.workers[0].stats["delivered"] == 3


def test_updates_send_songs_publish_by_default_and_update_only_when_asked(
    catalog, submitted, upload, dispatch, tmp_path
):
    aid, payload = submitted
    upload(aid, payload)
    catalog.publish(STUDY, aid)
    body = {
        "analysisType": {"name": "variantCall"},
        "experiment": {"variantCallingTool": "gold", "matchedNormalSampleSubmitterId": "n"},
    }
    catalog.update_analysis(STUDY, aid, body)
    catalog.suppress(STUDY, aid)
    first = dispatch()
    idle(first)
    first.stop()
    # Song's AnalysisActions has no UPDATE: a consumer deserialising its enum must not break
    assert actions(log_lines(catalog)) == [
        (aid, "CREATE", "UNPUBLISHED"),
        (aid, "PUBLISH", "PUBLISHED"),
        (aid, "PUBLISH", "PUBLISHED"),
        (aid, "SUPPRESS", "SUPPRESSED"),
    ]
    extension = {"sinks": [{"name": "ext", "type": "jsonl", "path": str(tmp_path / "e.jsonl")}]}
    idle(dispatch({**extension, "update_action": "UPDATE"}))
    lines = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [m["action"] for m in lines] == ["CREATE", "PUBLISH", "UPDATE", "SUPPRESS"]


def test_each_message_carries_the_analysis_as_of_its_change_and_replay_repeats_the_bytes(
    catalog, submitted, upload, dispatch, tmp_path
):
    aid, payload = submitted
    upload(aid, payload)
    created = catalog.get_analysis(STUDY, aid)
    catalog.publish(STUDY, aid)
    published = catalog.get_analysis(STUDY, aid)
    catalog.patch_analysis(STUDY, aid, {"experiment": {"variantCallingTool": "gold"}})
    patched = catalog.get_analysis(STUDY, aid)
    catalog.unpublish(STUDY, aid)
    unpublished = catalog.get_analysis(STUDY, aid)
    oid = unpublished["files"][0]["objectId"]
    catalog.update_file(STUDY, oid, {"info": {"checked": True}})  # no event of its own
    catalog.suppress(STUDY, aid)
    final = catalog.get_analysis(STUDY, aid)
    assert patched["experiment"]["variantCallingTool"] == "gold"
    assert created["experiment"]["variantCallingTool"] != "gold"

    # delivered only now, long after every change: each message still shows its own moment
    d = dispatch()
    idle(d)
    d.stop()
    lines = log_lines(catalog)
    assert [(m["action"], m["state"]) for m in lines] == [
        ("CREATE", "UNPUBLISHED"),
        ("PUBLISH", "PUBLISHED"),
        ("PUBLISH", "PUBLISHED"),
        ("UNPUBLISH", "UNPUBLISHED"),
        ("SUPPRESS", "SUPPRESSED"),
    ]
    assert [m["analysis"] for m in lines] == [created, published, patched, unpublished, final]
    assert final["files"][0]["info"] == {"checked": True}
    assert unpublished["files"][0]["info"] != {"checked": True}

    first = (catalog.settings.root / "events" / "song-analysis.jsonl").read_bytes()
    runner = CliRunner()
    root = str(catalog.settings.root)
    for _ in range(2):  # replay twice from the beginning, then from the PUBLISH on
        result = runner.invoke(main, ["--root", root, "events", "replay", "--from", "1"])
        assert result.exit_code == 0, result.output
    log = catalog.settings.root / "events" / "song-analysis.jsonl"
    assert log.read_bytes() == first * 3


def test_a_deleted_file_is_in_the_messages_before_its_deletion_and_gone_after(
    catalog, payloads, dispatch
):
    payload = payloads.variant_call(files=[payloads.file("a.vcf.gz"), payloads.file("b.vcf.gz")])
    aid = catalog.submit(payload, STUDY)
    gone = next(f["objectId"] for f in catalog.get_analysis(STUDY, aid)["files"])
    catalog.delete_files(STUDY, [gone])
    catalog.suppress(STUDY, aid)
    idle(dispatch())
    created, suppressed = log_lines(catalog)
    assert [f["fileName"] for f in created["analysis"]["files"]] == ["a.vcf.gz", "b.vcf.gz"]
    assert [f["fileName"] for f in suppressed["analysis"]["files"]] == ["b.vcf.gz"]
    assert suppressed["analysis"] == catalog.get_analysis(STUDY, aid)


def test_a_dispatcher_of_another_process_sends_a_file_update_with_the_next_change(
    catalog, submitted, no_leaked_threads
):
    aid, _ = submitted
    # the dispatcher's own catalog, as `songlake events run` opens it: it learns of the writer's
    # commits only from the Delta logs
    d = Dispatcher(Catalog(catalog.settings), config=parse_events(FAST))
    d.start(standby=False)
    try:
        idle(d)  # caught up, its read model freshly refreshed
        oid = catalog.get_analysis(STUDY, aid)["files"][0]["objectId"]
        catalog.update_file(STUDY, oid, {"info": {"qc": "passed"}})  # a files commit, no event
        catalog.suppress(STUDY, aid)  # then a state change alone (the read model's quick path)
        idle(d)
    finally:
        d.stop()
    suppressed = log_lines(catalog)[-1]
    assert suppressed["action"] == "SUPPRESS"
    assert suppressed["analysis"]["files"][0]["info"] == {"qc": "passed"}
    assert suppressed["analysis"] == catalog.get_analysis(STUDY, aid)


def test_changes_of_an_analysis_that_never_committed_are_never_sent(catalog, payloads, dispatch):
    ghost = "0b3f5a5e-8a43-4d6b-9a55-4a4f2a9d8f10"
    plan = Planner(catalog.model, catalog.registry).plan(
        payloads.variant_call(), STUDY, ghost, created_at=now()
    )
    for name in ORDER[:-1]:  # a crash: the children committed, the analyses row never did
        catalog.tables.append(name, plan.rows[name])
    catalog.tables.append(
        "analysis_state_history",
        [
            {
                "event_id": "e-ghost",
                "analysis_id": ghost,
                "study_id": STUDY,
                "initial_state": "UNPUBLISHED",
                "updated_state": "PUBLISHED",
                "updated_at": now(),
            }
        ],
    )
    real = catalog.submit(payloads.variant_call(), STUDY)
    catalog.suppress(STUDY, real)
    idle(dispatch())
    assert actions(log_lines(catalog)) == [
        (real, "CREATE", "UNPUBLISHED"),
        (real, "SUPPRESS", "SUPPRESSED"),
    ]


def test_restart_resumes_from_the_cursor_and_the_log_holds_each_message_once(
    catalog, payloads, dispatch
):
    first = catalog.submit(payloads.variant_call(), STUDY)
    d = dispatch()
    idle(d)
    d.stop()
    second = catalog.submit(payloads.variant_call(), STUDY)
    catalog.suppress(STUDY, first)
    path = catalog.settings.root / "events" / "song-analysis.jsonl"
    with path.open("ab") as fh:  # written after the last cursor save, as by a kill -9
        fh.write(b'{"half a line')
    idle(dispatch())
    assert actions(log_lines(catalog)) == [
        (first, "CREATE", "UNPUBLISHED"),
        (second, "CREATE", "UNPUBLISHED"),
        (first, "SUPPRESS", "SUPPRESSED"),
    ]
    saved = json.loads((catalog.settings.state_dir / "events" / "song-analysis.json").read_text())
    assert saved["sink_state"]["offset"] == path.stat().st_size
    assert Position.from_json(saved["position"]).start == Outbox(catalog.settings.tables_dir).head()


def test_a_new_sink_can_start_now_and_batches_are_bounded(catalog, payloads, dispatch, tmp_path):
    ids = [
        r.analysis_id
        for r in catalog.submit_batch(
            [SubmitItem(payloads.variant_call(), STUDY) for _ in range(3)]
        )
    ]
    for aid in ids:  # three commits
        catalog.suppress(STUDY, aid)
    late = {"name": "late", "type": "jsonl", "path": str(tmp_path / "late.jsonl"), "start": "now"}
    d = dispatch(
        {"sinks": [{"name": "all", "type": "jsonl"}, late], "batch_commits": 1, "chunk_events": 2}
    )
    idle(d)
    catalog.suppress(STUDY, ids[1])
    idle(d)
    lines = log_lines(catalog, "all")
    assert [m["action"] for m in lines] == ["CREATE"] * 3 + ["SUPPRESS"] * 4
    assert [m["analysisId"] for m in lines[3:]] == ids + [ids[1]]
    late_lines = [json.loads(x) for x in (tmp_path / "late.jsonl").read_text().splitlines()]
    assert actions(late_lines) == [(ids[1], "SUPPRESS", "SUPPRESSED")]


def test_a_misconfigured_sink_is_named_and_the_others_keep_working(catalog, submitted, dispatch):
    aid, _ = submitted
    d = dispatch(
        {
            "sinks": [
                {"name": "hook", "type": "webhook"},  # no url
                {"name": "typo", "type": "jsonl", "pathh": "x.jsonl"},
                {"name": "ftp", "type": "webhook", "url": "ftp://example.org/x"},
                {"name": "queue", "type": "carrier-pigeon"},
                {"name": "good", "type": "jsonl"},
            ]
        }
    )
    idle(d)
    problems = dict(d.problems)
    assert problems["hook"] == "events sink 'hook': 'url' is required"
    assert "unknown option(s) pathh" in problems["typo"]
    assert "http:// or https://" in problems["ftp"]
    assert "type must be one of jsonl, webhook, kafka" in problems["queue"]
    assert [w.name for w in d.workers] == ["good"]
    assert actions(log_lines(catalog, "good")) == [(aid, "CREATE", "UNPUBLISHED")]


def test_one_dispatcher_per_root_delivers_and_a_second_stands_by(catalog, submitted, dispatch):
    first = dispatch()
    second = Dispatcher(catalog, config=parse_events(FAST))
    with pytest.raises(DispatcherBusy, match="Another events dispatcher"):
        second.start(standby=False)
    second.start(standby=True)
    try:
        idle(first)
        assert not second.started.is_set()
        first.stop()
        deadline = time.monotonic() + 10
        while not second.started.is_set():
            assert time.monotonic() < deadline, "the standby never took over"
            second.started.wait(0.1)
        catalog.suppress(STUDY, submitted[0])
        idle(second)
    finally:
        second.stop()
    assert [m["action"] for m in log_lines(catalog)] == ["CREATE", "SUPPRESS"]


def test_serve_runs_the_dispatcher_unless_disabled(settings, no_leaked_threads, caplog):
    (settings.root).mkdir(parents=True)
    (settings.config_file).write_text("[events]\nenabled = false\n")
    cat = Catalog.init(load_settings(settings.root))
    assert start_background(cat) is None
    (settings.config_file).write_text(
        '[events]\npoll_interval = 0.02\n[[events.sinks]]\nname = "hook"\ntype = "webhook"\n'
    )
    cat = Catalog(load_settings(settings.root))
    cat.create_study({"studyId": STUDY})
    d = start_background(cat)
    assert d is not None
    try:
        idle(d)
        assert d.started.is_set() and [w.name for w in d.workers] == ["song-analysis"]
    finally:
        d.stop()
    assert "events sink 'hook': 'url' is required (left out; the other sinks run)" in caplog.text


# -- configuration ---------------------------------------------------------------------------------


def test_sinks_come_from_songlake_toml_and_environment(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    (root / "songlake.toml").write_text(
        'song_server_id = "song.test"\n[events]\nupdate_action = "PUBLISH"\n'
        '[[events.sinks]]\nname = "maestro"\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\n'
        'secret_env = "HOOK_SECRET"\n'
    )
    config = events_config(load_settings(root))
    assert config.update_action == "PUBLISH"
    assert config.problems == (
        (
            "maestro",
            "events sink 'maestro': the environment variable HOOK_SECRET (secret_env) is not set",
        ),
    )
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    config = events_config(load_settings(root))
    assert [(s.name, s.type) for s in config.sinks] == [
        ("song-analysis", "jsonl"),
        ("maestro", "webhook"),
    ]
    monkeypatch.setenv("SONGLAKE_EVENTS", json.dumps({"jsonl": False, "sinks": []}))
    assert events_config(load_settings(root)).sinks == ()
    monkeypatch.setenv("SONGLAKE_EVENTS", json.dumps({"update_action": "SHOUT"}))
    with pytest.raises(BadRequest, match="update_action"):
        events_config(load_settings(root))
    monkeypatch.setenv("SONGLAKE_EVENTS", json.dumps({"pol_interval": 1}))
    with pytest.raises(BadRequest, match="Unknown setting events.pol_interval"):
        events_config(load_settings(root))


# -- the outbox ------------------------------------------------------------------------------------


def test_outbox_merges_both_tables_in_commit_order_and_positions_round_trip(catalog, payloads):
    aid = catalog.submit(payloads.variant_call(), STUDY)
    body = {
        "analysisType": {"name": "variantCall"},
        "experiment": {"variantCallingTool": "x", "matchedNormalSampleSubmitterId": "n"},
    }
    catalog.unpublish(STUDY, aid)
    catalog.update_analysis(STUDY, aid, body)
    catalog.suppress(STUDY, aid)
    outbox = Outbox(catalog.settings.tables_dir)
    head = outbox.head()
    assert head == Cut(
        catalog.tables.version("analyses"), catalog.tables.version("analysis_state_history")
    )
    changes = outbox.changes(BEGINNING, head)
    assert [(c.table, c.data_version, c.updated_state) for c in changes] == [
        ("analyses", 1, None),
        ("analysis_state_history", None, "UNPUBLISHED"),
        ("analyses", 2, None),
        ("analysis_state_history", None, "SUPPRESSED"),
    ]
    assert outbox.batch_end(BEGINNING, head, 2) == Cut(1, 1)
    walked = list(outbox.iter_from(Position(BEGINNING), head, max_commits=1))
    assert [c for _, c in walked] == changes
    middle = walked[1][0]
    assert Position.parse(middle.token()) == middle
    assert [c for _, c in outbox.iter_from(middle, head, 1)] == changes[2:]
    assert outbox.pending(middle, head) == (2, changes[2].committed_ms)
    for bad in ("", "1.2.3", "5.5.4.4.0", "a.b.c.d.e", "1.1.1.1.3"):
        with pytest.raises(BadRequest, match="is not an event id"):
            Position.parse(bad)
    when = datetime.fromtimestamp(changes[2].committed_ms / 1000).astimezone()
    assert outbox.cut_before(when) == Cut(1, 1)


# -- command line ----------------------------------------------------------------------------------


def run(root: Path, *args: str) -> object:
    result = CliRunner().invoke(main, ["--root", str(root), *args], catch_exceptions=False)
    return result


def test_cli_run_status_and_replay(catalog, payloads, no_leaked_threads):
    root = catalog.settings.root
    (root / "songlake.toml").write_text(
        'song_server_id = "lake.test"\n[events]\npoll_interval = 0.02\n'
    )
    aid = catalog.submit(payloads.variant_call(), STUDY)
    result = run(root, "events", "status")
    assert result.exit_code == 0, result.output
    assert "dispatcher: not running" in result.output
    row = next(ln for ln in result.output.splitlines() if ln.startswith("song-analysis"))
    assert row.split()[:4] == ["song-analysis", "jsonl", "stopped", "1"]

    result = run(root, "events", "run", "--once")
    assert result.exit_code == 0, result.output
    catalog.suppress(STUDY, aid)
    status = json.loads(run(root, "events", "status", "--json").output)
    assert status["sinks"][0]["lag"] == 1 and status["sinks"][0]["delivered"] == 1
    assert run(root, "events", "run", "--once").exit_code == 0
    assert [m["action"] for m in log_lines(catalog)] == ["CREATE", "SUPPRESS"]
    assert {m["songServerId"] for m in log_lines(catalog)} == {"lake.test"}

    version = catalog.tables.version("commits")  # the suppress was the last catalog version
    result = run(root, "events", "replay", "--from", str(version))
    assert result.exit_code == 0, result.output
    assert [m["action"] for m in log_lines(catalog)] == ["CREATE", "SUPPRESS", "SUPPRESS"]
    result = run(root, "events", "replay", "--from", "0", "--sink", "song-analysis")
    assert [m["action"] for m in log_lines(catalog)] == [
        "CREATE",
        "SUPPRESS",
        "SUPPRESS",
        "CREATE",
        "SUPPRESS",
    ]
    assert "song-analysis  2" in result.output
    result = run(root, "events", "replay", "--from", "2999-01-01T00:00:00")
    assert result.exit_code == 0 and len(log_lines(catalog)) == 5

    result = CliRunner().invoke(
        main, ["--root", str(root), "events", "replay", "--from", "0", "--sink", "nope"]
    )
    assert result.exit_code == 1
    assert "No events sink named nope (configured: song-analysis)" in result.output
    result = CliRunner().invoke(main, ["--root", str(root), "events", "replay", "--from", "soon"])
    assert result.exit_code == 1 and "ISO-8601" in result.output


def test_cli_run_names_a_misconfigured_sink_and_still_delivers_the_others(catalog, submitted):
    root = catalog.settings.root
    (root / "songlake.toml").write_text(
        "[events]\npoll_interval = 0.02\n"
        '[[events.sinks]]\nname = "broken"\ntype = "webhook"\nurl = "nope"\n'
        '[[events.sinks]]\nname = "log"\ntype = "jsonl"\n'
    )
    result = CliRunner().invoke(main, ["--root", str(root), "events", "run", "--once"])
    assert result.exit_code == 1
    assert "error: events sink 'broken': url must be an http:// or https:// URL" in result.output
    assert "(left out; the other sinks run)" in result.output
    assert "not delivering: broken" in result.output
    assert actions(log_lines(catalog, "log")) == [(submitted[0], "CREATE", "UNPUBLISHED")]
    status = run(root, "events", "status").output
    assert "broken" in status and "misconfigured" in status


def test_replay_is_handed_to_the_running_dispatcher(catalog, submitted, dispatch):
    d = dispatch()
    idle(d)
    result = run(catalog.settings.root, "events", "replay", "--from", "0")
    assert result.exit_code == 0 and "taken by the running dispatcher" in result.output
    deadline = time.monotonic() + 20
    while len(log_lines(catalog)) < 2:
        assert time.monotonic() < deadline, "the replay was never delivered"
        d.stop_event.wait(0.05)
    assert actions(log_lines(catalog)) == [(submitted[0], "CREATE", "UNPUBLISHED")] * 2


def test_a_full_log_is_rotated_and_an_unreadable_cursor_is_reported(catalog, payloads, dispatch):
    first = catalog.submit(payloads.variant_call(), STUDY)
    d = dispatch({"jsonl": False, "sinks": [{"name": "log", "type": "jsonl", "max_bytes": 1}]})
    idle(d)
    second = catalog.submit(payloads.variant_call(), STUDY)
    idle(d)
    d.stop()
    folder = catalog.settings.root / "events"
    rotated = json.loads((folder / "log.1.jsonl").read_text())
    assert rotated["analysisId"] == first
    assert [m["analysisId"] for m in log_lines(catalog, "log")] == [second]

    cursor = catalog.settings.state_dir / "events" / "log.json"
    cursor.write_text("{not json")
    events = {"jsonl": False, "sinks": [{"name": "log", "type": "jsonl"}]}
    d = dispatch(events)
    idle(d)  # a worker in error counts as settled
    assert "The cursor of events sink 'log'" in (d.workers[0].error or "")
    settings = dataclasses.replace(catalog.settings, events=events)
    _, rows = status(settings)
    assert rows[0]["status"] == "error" and "is unreadable" in rows[0]["last_error"]
