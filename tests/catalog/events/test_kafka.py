"""The Kafka sink's own logic against a stand-in producer with confluent-kafka's surface
(produce with a delivery callback, poll, flush): failures on demand that no real broker gives
at will. test_kafka_broker.py runs the sink against a real Kafka-protocol broker."""

from __future__ import annotations

import json
from typing import Any

import pytest

from catalog.events import Dispatcher
from catalog.events.config import parse_events, parse_sink
from catalog.events.kafka import KafkaSink, kafka_config
from catalog.events.sink import Record
from tests.catalog.events.conftest import FAST, idle, lifecycle


class FakeMessage:
    def __init__(self, topic: str, key: bytes, value: bytes) -> None:
        self._topic, self._key, self._value = topic, key, value

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


class KafkaError:
    def __init__(self, text: str, fatal: bool = False) -> None:
        self.text, self._fatal = text, fatal

    def fatal(self) -> bool:
        return self._fatal

    def __str__(self) -> str:
        return self.text


class FakeProducer:
    """Acknowledges on flush, in order, like an idempotent producer with the gapless guarantee:
    once one message fails, every later one of that flush fails with it. `fail(n, key)` may
    return an error for the n-th acknowledgement."""

    def __init__(self, fail=None, full_once: bool = False, lose: bool = False) -> None:
        self.fail = fail or (lambda n, key: None)
        self.acked: list[tuple[str, bytes, bytes, list]] = []
        self._pending: list[tuple[tuple, Any]] = []
        self.full_once = full_once
        self.lose = lose  # never call back: the flush timeout runs out
        self.polls = 0
        self.calls = 0
        self.config: dict | None = None

    def __call__(self, config: dict) -> FakeProducer:  # the factory: the sink passes its config
        self.config = config
        return self

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None) -> None:
        if self.full_once:
            self.full_once = False
            raise BufferError("Local: Queue full")
        self._pending.append(((topic, key, value, headers), on_delivery))

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        return 0

    def flush(self, timeout: float | None = None) -> int:
        pending, self._pending = self._pending, []
        if self.lose:
            return len(pending)
        error = None
        for item, callback in pending:
            self.calls += 1
            error = error or self.fail(self.calls, item[1])
            if error is None:
                self.acked.append(item)
            callback(error, FakeMessage(item[0], item[1], item[2]))
        return 0


class Ctx:
    """The worker's side of delivery, recorded."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, str, int]] = []
        self.dead: list[tuple[str, int]] = []
        self.slept: list[float] = []

    def stopping(self) -> bool:
        return False

    def sleep(self, seconds: float) -> bool:
        self.slept.append(seconds)
        return True

    def failed(self, record: Record, error: str, attempt: int) -> None:
        self.failures.append((record.event_id, error, attempt))

    def dead_letter(self, record: Record, error: str, attempts: int) -> None:
        self.dead.append((record.event_id, attempts))


def records(n: int, keys: int = 2) -> list[Record]:
    return [
        Record(f"e{i}", f"a{i % keys}", "PUBLISH", json.dumps({"i": i}).encode()) for i in range(n)
    ]


def sink(producer, **options) -> KafkaSink:
    spec = parse_sink({"name": "k", "type": "kafka", "backoff_initial": 0.01, **options})
    s = KafkaSink(spec, factory=producer)
    s.open({})
    return s


def test_kafka_messages_have_songs_shape_key_and_topic_in_order(
    catalog, payloads, no_leaked_threads
):
    expected = lifecycle(catalog, payloads, 4)
    producer = FakeProducer()
    d = Dispatcher(
        catalog,
        config=parse_events(
            {
                **FAST,
                "jsonl": False,
                "sinks": [{"name": "k", "type": "kafka", "bootstrap_servers": "broker:9093"}],
            }
        ),
        producers={"k": producer},
    )
    assert producer.config is None  # made when the worker opens the sink
    d.start(standby=False)
    try:
        idle(d)
    finally:
        d.stop()
    assert {t for t, *_ in producer.acked} == {"song-analysis"}
    by_key: dict[str, list[str]] = {}
    for _, key, value, headers in producer.acked:
        message = json.loads(value)
        assert list(message) == [
            "analysisId",
            "studyId",
            "state",
            "action",
            "songServerId",
            "analysis",
        ]
        assert key == message["analysisId"].encode()
        assert message["analysis"]["analysisState"] == message["state"]  # as of its change
        assert headers[0][0] == "songlake-event-id"
        by_key.setdefault(message["analysisId"], []).append(message["action"])
    assert by_key == expected
    assert len(producer.acked) == 12
    assert producer.config is not None and producer.config["bootstrap.servers"] == "broker:9093"


def test_a_failure_the_client_reports_resends_from_that_record_on_keeping_order():
    producer = FakeProducer(
        fail=lambda n, key: KafkaError("Broker: Not enough in-sync replicas") if n == 3 else None
    )
    ctx = Ctx()
    assert sink(producer).deliver(records(6), ctx) == 6
    assert ctx.failures == [("e2", "kafka: Broker: Not enough in-sync replicas", 1)]
    assert ctx.dead == [] and ctx.slept == [0.01]
    # at-least-once from the first failed record on, and nothing overtook it
    assert [json.loads(v)["i"] for _, _, v, _ in producer.acked] == [0, 1, 2, 3, 4, 5]
    assert [k for _, k, _, _ in producer.acked] == [b"a0", b"a1"] * 3


def test_a_fatal_client_error_gets_a_new_producer():
    made: list[FakeProducer] = []

    def factory(config: dict) -> FakeProducer:
        first = not made
        p = FakeProducer(
            fail=lambda n, key: KafkaError("Local: Fatal error", fatal=True) if first else None
        )
        made.append(p)
        return p

    ctx = Ctx()
    assert sink(factory).deliver(records(3), ctx) == 3
    assert len(made) == 2 and made[0].acked == [] and len(made[1].acked) == 3
    assert ctx.failures == [("e0", "kafka: Local: Fatal error", 1)]


def test_a_record_the_client_keeps_refusing_goes_to_the_dead_letters():
    producer = FakeProducer(
        fail=lambda n, key: KafkaError("Broker: Message too large") if key == b"a1" else None
    )
    ctx = Ctx()
    s = sink(producer, max_attempts=3)
    assert s.deliver(records(4), ctx) == 4
    assert ctx.dead == [("e1", 3), ("e3", 3)]
    assert [a for _, _, a in ctx.failures] == [1, 2, 3, 1, 2, 3]
    assert ctx.slept == [0.01, 0.02, 0.01, 0.02]
    assert [json.loads(v)["i"] for _, _, v, _ in producer.acked] == [0, 2]


def test_a_full_queue_is_drained_and_an_unacknowledged_flush_is_a_failure():
    producer = FakeProducer(full_once=True)
    ctx = Ctx()
    assert sink(producer).deliver(records(2), ctx) == 2
    assert producer.polls == 1 and len(producer.acked) == 2 and ctx.failures == []

    lost = FakeProducer(lose=True)
    ctx = Ctx()
    assert sink(lost, max_attempts=2, flush_timeout=0.01).deliver(records(1), ctx) == 1
    assert [e for _, e, _ in ctx.failures] == [
        "kafka: not acknowledged within 0.01s (1 queued)"
    ] * 2
    assert ctx.dead == [("e0", 2)]


def test_kafka_options_become_an_idempotent_librdkafka_config(monkeypatch):
    monkeypatch.setenv("KAFKA_PASSWORD", "pw")
    spec = parse_sink(
        {
            "name": "k",
            "type": "kafka",
            "bootstrap_servers": "b1:9093,b2:9093",
            "topic": "song_analysis",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "song",
            "sasl_password_env": "KAFKA_PASSWORD",
            "ssl_ca_location": "/etc/ca.pem",
            "config": {"compression.type": "zstd"},
        }
    )
    config = kafka_config(spec.options)
    assert config == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "enable.idempotence": True,
        "acks": "all",
        "client.id": "songlake",
        "linger.ms": 5,
        "enable.gapless.guarantee": True,
        "allow.auto.create.topics": False,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "song",
        "ssl.ca.location": "/etc/ca.pem",
        "sasl.password": "pw",
        "compression.type": "zstd",
    }
    assert KafkaSink(spec).topic == "song_analysis"
    confluent_kafka = pytest.importorskip("confluent_kafka")
    plain = kafka_config(
        parse_sink({"name": "k", "type": "kafka", "bootstrap_servers": "127.0.0.1:9"}).options
    )
    producer = confluent_kafka.Producer(plain)  # librdkafka checks every property name
    assert producer.flush(0) == 0
    with pytest.raises(confluent_kafka.KafkaException, match="No such configuration property"):
        confluent_kafka.Producer({**plain, "no.such.property": 1})
