"""Where analysis messages go: a JSONL log, webhooks, Kafka; and how ``songlake.toml`` names them.

    [events]                      dispatcher options (see EventsConfig)
    [[events.sinks]]              one table per sink: name, type = "jsonl" | "webhook" | "kafka",
                                  start = "beginning" | "now", enabled, and the type's options

Each sink gets a batch of records (Song's message as JSON bytes, keyed by analysisId, in order)
and answers how many of them, from the first, are delivered; it retries by its own policy and
hands a record it gives up on to the dead-letter file. A sink whose table is wrong is reported by
name in ``EventsConfig.problems`` and left out, so the others still run.

Kafka is a thin layer over confluent-kafka, imported only when a Kafka sink opens; a producer
factory can be passed in instead (tests do: no broker can run on these machines).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from .errors import BadRequest

DEFAULT_SINK = "song-analysis"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REQUIRED = object()

_COMMON: dict[str, tuple[type, Any]] = {
    "name": (str, _REQUIRED),
    "type": (str, _REQUIRED),
    "enabled": (bool, True),
    "start": (str, "beginning"),
}
_RETRY: dict[str, tuple[type, Any]] = {
    "max_attempts": (int, 10),
    "backoff_initial": (float, 0.5),
    "backoff_max": (float, 60.0),
    "dead_letter_path": (str, None),
}
OPTIONS: dict[str, dict[str, tuple[type, Any]]] = {
    "jsonl": {"path": (str, None), "max_bytes": (int, 256 * 1024 * 1024), "fsync": (bool, True)},
    "webhook": {
        "url": (str, _REQUIRED),
        "secret": (str, None),
        "secret_env": (str, None),
        "timeout": (float, 10.0),
        "concurrency": (int, 4),
        "headers": (dict, {}),
        **_RETRY,
    },
    "kafka": {
        "bootstrap_servers": (str, "localhost:9092"),
        "topic": (str, "song-analysis"),
        "security_protocol": (str, None),
        "sasl_mechanism": (str, None),
        "sasl_username": (str, None),
        "sasl_password": (str, None),
        "sasl_password_env": (str, None),
        "ssl_ca_location": (str, None),
        "ssl_certificate_location": (str, None),
        "ssl_key_location": (str, None),
        "ssl_key_password": (str, None),
        "config": (dict, {}),
        "flush_timeout": (float, 30.0),
        **_RETRY,
    },
}


class SinkError(BadRequest):
    """A sink that cannot be configured or opened; the message names it."""


@dataclass(frozen=True)
class SinkSpec:
    """One configured sink: its name, type, where a new cursor starts, and its options."""

    name: str
    type: str
    start: str = "beginning"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventsConfig:
    """The ``[events]`` table of songlake.toml, parsed."""

    enabled: bool = True  # the dispatcher runs inside `serve`
    update_action: str = "UPDATE"  # or "PUBLISH", Song's own message for metadata updates
    poll_interval: float = 0.05  # seconds between looks at the Delta logs
    batch_commits: int = 256  # commits per batch at most
    chunk_events: int = 500  # events delivered between two cursor saves at most
    jsonl: bool = True  # the default JSONL sink when none is configured
    sse_max_clients: int = 4
    sse_max_seconds: float = 300.0  # then the stream ends; EventSource reconnects by itself
    sse_heartbeat: float = 15.0
    sinks: tuple[SinkSpec, ...] = ()
    problems: tuple[tuple[str, str], ...] = ()  # (sink name, what is wrong) of sinks left out


_TOP: dict[str, tuple[type, Any]] = {
    "enabled": (bool, True),
    "update_action": (str, "UPDATE"),
    "poll_interval": (float, 0.05),
    "batch_commits": (int, 256),
    "chunk_events": (int, 500),
    "jsonl": (bool, True),
    "sse_max_clients": (int, 4),
    "sse_max_seconds": (float, 300.0),
    "sse_heartbeat": (float, 15.0),
}


def _check(kind: type, value: Any) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def parse_events(table: Mapping[str, Any] | None) -> EventsConfig:
    """Parse ``[events]``; a bad dispatcher option raises, a bad sink lands in ``problems``."""
    table = dict(table or {})
    sink_tables = table.pop("sinks", [])
    top: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _TOP:
            raise BadRequest(f"Unknown setting events.{key} (known: {', '.join(_TOP)})")
        kind = _TOP[key][0]
        if not _check(kind, value):
            raise BadRequest(f"Setting events.{key} must be a {kind.__name__}, not {value!r}")
        top[key] = float(value) if kind is float else value
    if top.get("update_action", "UPDATE") not in ("UPDATE", "PUBLISH"):
        raise BadRequest('Setting events.update_action must be "UPDATE" or "PUBLISH"')
    if not isinstance(sink_tables, list):
        raise BadRequest("events.sinks must be an array of tables ([[events.sinks]])")
    specs: list[SinkSpec] = []
    problems: list[tuple[str, str]] = []
    for i, raw in enumerate(sink_tables):
        name = raw.get("name") if isinstance(raw, dict) else None
        label = name if isinstance(name, str) and name else f"#{i + 1}"
        try:
            spec = parse_sink(raw)
            if any(s.name == spec.name for s in specs):
                raise SinkError(f"events sink '{spec.name}': the name is used twice")
            if raw.get("enabled", True):
                specs.append(spec)
        except SinkError as exc:
            problems.append((label, exc.message))
    if top.get("jsonl", True) and not any(
        t.get("type") == "jsonl" for t in sink_tables if isinstance(t, dict)
    ):
        specs.insert(0, SinkSpec(DEFAULT_SINK, "jsonl", "beginning", _defaults("jsonl")))
    return EventsConfig(**top, sinks=tuple(specs), problems=tuple(problems))


def events_config(settings: Any) -> EventsConfig:
    """The ``[events]`` table of a Settings, parsed."""
    return parse_events(getattr(settings, "events", None))


def _defaults(kind: str) -> dict[str, Any]:
    return {k: v for k, (_, v) in OPTIONS[kind].items() if v is not _REQUIRED}


def parse_sink(raw: Any) -> SinkSpec:
    """One ``[[events.sinks]]`` table, checked; SinkError names the sink and the problem."""
    if not isinstance(raw, dict):
        raise SinkError(f"events sink {raw!r} is not a table")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SinkError(
            f"events sink {name!r}: a name of letters, digits, '.', '_' or '-' is required"
        )
    where = f"events sink '{name}'"
    kind = raw.get("type")
    if kind not in OPTIONS:
        raise SinkError(f"{where}: type must be one of {', '.join(OPTIONS)}, not {kind!r}")
    known = {**_COMMON, **OPTIONS[kind]}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SinkError(f"{where}: unknown option(s) {', '.join(unknown)} for a {kind} sink")
    options = _defaults(kind)
    for key, (expected, default) in known.items():
        if key not in raw:
            if default is _REQUIRED:
                raise SinkError(f"{where}: '{key}' is required")
            continue
        if not _check(expected, raw[key]):
            raise SinkError(f"{where}: '{key}' must be a {expected.__name__}, not {raw[key]!r}")
        if key in OPTIONS[kind]:
            options[key] = float(raw[key]) if expected is float else raw[key]
    if raw.get("start", "beginning") not in ("beginning", "now"):
        raise SinkError(f'{where}: start must be "beginning" or "now"')
    for key in ("max_attempts", "concurrency", "max_bytes"):
        if key in options and options[key] < (0 if key == "max_attempts" else 1):
            raise SinkError(f"{where}: '{key}' is out of range: {options[key]}")
    if kind == "webhook":
        url = urlsplit(options["url"])
        if url.scheme not in ("http", "https") or not url.hostname:
            raise SinkError(
                f"{where}: url must be an http:// or https:// URL, not {options['url']!r}"
            )
    for key in ("secret_env", "sasl_password_env"):
        var = options.get(key)
        if var and var not in os.environ:
            raise SinkError(f"{where}: the environment variable {var} ({key}) is not set")
    return SinkSpec(name, kind, raw.get("start", "beginning"), options)


# -- records and delivery -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One message ready to send: Song's JSON value and its key (the analysisId)."""

    event_id: str
    key: str
    action: str
    body: bytes


class Delivery(Protocol):
    """What a sink may ask of the worker driving it."""

    def stopping(self) -> bool: ...

    def sleep(self, seconds: float) -> bool:
        """Wait; False when the dispatcher is stopping meanwhile."""
        ...

    def failed(self, record: Record, error: str, attempt: int) -> None: ...

    def dead_letter(self, record: Record, error: str, attempts: int) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff; after max_attempts failures a record goes to the dead letters."""

    max_attempts: int = 10  # 0: never give up
    initial: float = 0.5
    maximum: float = 60.0
    multiplier: float = 2.0

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> RetryPolicy:
        return cls(options["max_attempts"], options["backoff_initial"], options["backoff_max"])

    def delay(self, failures: int) -> float:
        return min(self.maximum, self.initial * self.multiplier ** max(failures - 1, 0))

    def gives_up(self, failures: int) -> bool:
        return bool(self.max_attempts) and failures >= self.max_attempts


class DeliveryFailed(Exception):
    """One attempt failed; the message says how."""


class Sink:
    """Base of every sink."""

    type = "?"

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.name = spec.name

    def open(self, state: Mapping[str, Any]) -> None:
        """Prepare to deliver; `state` is what ``state()`` returned before the last save."""

    def state(self) -> dict[str, Any]:
        return {}

    def deliver(self, records: Sequence[Record], ctx: Delivery) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and threads."""


def send_with_retries(
    policy: RetryPolicy, record: Record, ctx: Delivery, send: Callable[[], None]
) -> bool:
    """Send one record until it succeeds or is dead-lettered; False if stopped first."""
    failures = 0
    while not ctx.stopping():
        try:
            send()
            return True
        except DeliveryFailed as exc:
            failures += 1
            ctx.failed(record, str(exc), failures)
            if policy.gives_up(failures):
                ctx.dead_letter(record, str(exc), failures)
                return True
            if not ctx.sleep(policy.delay(failures)):
                return False
    return False


# -- JSONL ----------------------------------------------------------------------------------------


class JsonlSink(Sink):
    """Appends one message a line to ``<root>/events/<name>.jsonl``.

    The file's length is saved with the cursor, and a restart cuts off whatever was written after
    the last save, then writes it again: the log holds each message once, even after kill -9.
    Past ``max_bytes`` the file is renamed ``<name>.<n>.jsonl`` before the next write.
    """

    type = "jsonl"

    def __init__(self, spec: SinkSpec, root: Path) -> None:
        super().__init__(spec)
        path = Path(spec.options.get("path") or f"events/{spec.name}.jsonl")
        self.path = path if path.is_absolute() else root / path
        self.max_bytes = int(spec.options.get("max_bytes", 256 * 1024 * 1024))
        self.fsync = bool(spec.options.get("fsync", True))
        self.offset = 0

    def open(self, state: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        saved = int(state.get("offset", 0))
        size = self.path.stat().st_size if self.path.exists() else 0
        if size > saved:
            with self.path.open("r+b") as fh:  # written after the last cursor save: again later
                fh.truncate(saved)
            size = saved
        self.offset = size

    def state(self) -> dict[str, Any]:
        return {"offset": self.offset}

    def deliver(self, records: Sequence[Record], ctx: Delivery) -> int:
        data = b"".join(r.body + b"\n" for r in records)
        failures = 0
        while not ctx.stopping():
            try:
                if self.offset >= self.max_bytes:
                    self._rotate()
                with self.path.open("ab") as fh:
                    fh.write(data)
                    fh.flush()
                    if self.fsync:
                        os.fsync(fh.fileno())
                self.offset += len(data)
                return len(records)
            except OSError as exc:  # a full or read-only disk: keep trying, never drop
                failures += 1
                ctx.failed(records[0], f"{type(exc).__name__}: {exc}", failures)
                if not ctx.sleep(min(30.0, 0.5 * 2 ** (failures - 1))):
                    break
        return 0

    def _rotate(self) -> None:
        n = 1
        while (target := self.path.with_name(f"{self.path.stem}.{n}{self.path.suffix}")).exists():
            n += 1
        os.replace(self.path, target)
        self.offset = 0


# -- Kafka ----------------------------------------------------------------------------------------


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
    again (at-least-once, order per key kept), on a new producer if the error was fatal; after
    max_attempts the failed record goes to the dead letters.
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

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(min(self.flush_timeout, 5.0))
            self.producer = None

    def deliver(self, records: Sequence[Record], ctx: Delivery) -> int:
        start, failures = 0, 0
        while start < len(records):
            if ctx.stopping():
                return start
            if self._fatal:  # the client cannot go on after a fatal error: a new producer
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
        for i in range(len(records)):
            if i not in acked and i not in errors:
                errors[i] = f"kafka: not acknowledged within {self.flush_timeout}s ({left} queued)"
        if not errors:
            return None, ""
        first = min(errors)
        return first, errors[first]


def open_sink(spec: SinkSpec, root: Path, *, producer_factory: Any = None) -> Sink:
    """The sink a spec describes (not opened yet)."""
    if spec.type == "jsonl":
        return JsonlSink(spec, root)
    if spec.type == "webhook":
        from .webhooks import WebhookSink

        return WebhookSink(spec)
    if spec.type == "kafka":
        return KafkaSink(spec, factory=producer_factory)
    raise SinkError(f"events sink '{spec.name}': unknown type {spec.type!r}")
