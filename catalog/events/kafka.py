"""Song's own transport: each message produced to a Kafka topic, keyed by analysisId.

A thin layer over confluent-kafka, imported only when a Kafka sink opens; a producer factory can
be passed in instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import SinkError
from .sink import Delivery, Record, RetryPolicy, Sink, SinkSpec


def kafka_config(options: Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka properties for the options: an idempotent producer, acks from all replicas."""
    config: dict[str, Any] = {
        "bootstrap.servers": options["bootstrap_servers"],
        "enable.idempotence": True,
        "acks": "all",
        "client.id": "songlake",
        "linger.ms": 5,
        # a message that fails for good stops the producer rather than let later ones overtake it
        "enable.gapless.guarantee": True,
        # a missing topic is an error the sink reports, not one the client creates with defaults
        "allow.auto.create.topics": False,
    }
    password = options.get("sasl_password") or (
        os.environ.get(options["sasl_password_env"]) if options.get("sasl_password_env") else None
    )
    for key, prop in (
        ("security_protocol", "security.protocol"),
        ("sasl_mechanism", "sasl.mechanism"),
        ("sasl_username", "sasl.username"),
        ("ssl_ca_location", "ssl.ca.location"),
        ("ssl_certificate_location", "ssl.certificate.location"),
        ("ssl_key_location", "ssl.key.location"),
        ("ssl_key_password", "ssl.key.password"),
    ):
        if options.get(key):
            config[prop] = options[key]
    if password:
        config["sasl.password"] = password
    config.update(options.get("config") or {})
    return config


class KafkaSink(Sink):
    """Produces each message to a topic (``song-analysis``), key = analysisId, value = the JSON.

    The producer is idempotent with the gapless guarantee: retries inside the client neither
    duplicate nor reorder, and a record that fails for good fails every later one with it. When
    the client reports a failed delivery, every record from the first failed one on is produced
    again (at-least-once, order per key kept), on a new producer if the error was fatal or the
    records were not acknowledged within flush_timeout (its queue purged first, so that a
    record is not queued twice); after max_attempts the failed record goes to the dead letters.
    """

    type = "kafka"

    def __init__(
        self, spec: SinkSpec, *, factory: Callable[[dict[str, Any]], Any] | None = None
    ) -> None:
        super().__init__(spec)
        self.topic = spec.options["topic"]
        self.flush_timeout = float(spec.options["flush_timeout"])
        self.policy = RetryPolicy.of(spec.options)
        self.factory = factory
        self.producer: Any = None
        self._fatal = False

    def open(self, state: Mapping[str, Any]) -> None:
        if self.factory is None:
            try:
                from confluent_kafka import KafkaException, Producer
            except ImportError:
                raise SinkError(
                    f"events sink '{self.name}': a kafka sink needs confluent-kafka "
                    "(pip install 'songlake[kafka]')"
                ) from None

            def make(config: dict[str, Any]) -> Any:
                try:
                    return Producer(config)
                except KafkaException as exc:
                    raise SinkError(f"events sink '{self.name}': {exc}") from None

            self.factory = make
        self.producer = self.factory(kafka_config(self.spec.options))
        self._check_topic()

    def _check_topic(self) -> None:
        """SinkError unless the brokers answer and know the topic (what `events status` shows)."""
        list_topics = getattr(self.producer, "list_topics", None)
        if list_topics is None:  # a stand-in producer without metadata
            return
        servers = self.spec.options["bootstrap_servers"]
        try:
            metadata = list_topics(self.topic, timeout=min(self.flush_timeout, 10.0))
        except Exception as exc:  # confluent_kafka.KafkaException: no broker answered
            self.producer = None
            raise SinkError(
                f"events sink '{self.name}': no Kafka broker answers at {servers}: {exc}"
            ) from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            self.producer = None
            why = topic.error if topic is not None and topic.error is not None else "no partitions"
            raise SinkError(
                f"events sink '{self.name}': the topic '{self.topic}' does not exist at "
                f"{servers} ({why}); create it (songlake does not create topics)"
            )

    def _discard(self) -> None:
        """Drop the producer without waiting for what it still queues (sent again anyway)."""
        producer, self.producer = self.producer, None
        purge = getattr(producer, "purge", None)
        if purge is not None:
            try:
                purge()
                producer.flush(0)  # delivery reports of the purged records, to nobody
            except Exception:  # noqa: BLE001 - a client that is going away
                pass

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(min(self.flush_timeout, 5.0))
            self.producer = None

    def deliver(self, records: Sequence[Record], ctx: Delivery) -> int:
        start, failures = 0, 0
        while start < len(records):
            if ctx.stopping():
                return start
            if self._fatal:  # the client cannot go on (a fatal error, or stuck): a new producer
                self._discard()
                self.producer = self.factory(kafka_config(self.spec.options))  # type: ignore[misc]
                self._fatal = False
            failed, error = self._produce(records[start:])
            if failed is None:
                return len(records)
            start += failed
            failures = failures + 1 if failed == 0 else 1
            ctx.failed(records[start], error, failures)
            if self.policy.gives_up(failures):
                ctx.dead_letter(records[start], error, failures)
                start, failures = start + 1, 0
            elif not ctx.sleep(self.policy.delay(failures)):
                return start
        return len(records)

    def _produce(self, records: Sequence[Record]) -> tuple[int | None, str]:
        """Produce and flush; (index of the first record not delivered, why) or (None, "")."""
        errors: dict[int, str] = {}
        acked: set[int] = set()

        def report(i: int, err: Any, _msg: Any) -> None:
            if err is None:
                acked.add(i)
            else:
                errors[i] = f"kafka: {err}"
                if getattr(err, "fatal", lambda: False)():
                    self._fatal = True

        left: int | str = len(records)
        try:
            for i, r in enumerate(records):
                while True:
                    try:
                        self.producer.produce(
                            self.topic,
                            value=r.body,
                            key=r.key.encode(),
                            headers=[("songlake-event-id", r.event_id.encode())],
                            on_delivery=lambda err, msg, i=i: report(i, err, msg),
                        )
                        break
                    except BufferError:  # the client's queue is full: let it drain
                        self.producer.poll(0.5)
            left = self.producer.flush(self.flush_timeout)
        except Exception as exc:  # KafkaException after a fatal error (or worse): a new producer
            left = f"kafka: {type(exc).__name__}: {exc}"
        for i in range(len(records)):
            if i not in acked and i not in errors:
                errors[i] = (
                    left
                    if isinstance(left, str)
                    else f"kafka: not acknowledged within {self.flush_timeout}s ({left} queued)"
                )
                # the records are still queued in this client, whose idempotent session may be
                # stuck for good (a broker that restarted without its state does not know it):
                # the records go again on a new producer, not a second time on this one
                self._fatal = True
        if not errors:
            return None, ""
        first = min(errors)
        return first, errors[first]
