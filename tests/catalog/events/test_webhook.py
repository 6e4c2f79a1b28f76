"""Webhooks against a real endpoint on 127.0.0.1 that goes down, answers slowly or fails, and a
dispatcher killed with -9 in the middle of delivering: nothing is lost, order per analysis holds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog.catalog import Catalog
from catalog.events import Dispatcher, status
from catalog.events.config import parse_events
from catalog.events.webhook import Connection
from tests.catalog.events.conftest import (
    FAST,
    Receiver,
    first_seen_order,
    idle,
    lifecycle,
    log_lines,
)
from tests.conftest import REPO, threads_settle

SECRET = "s3cret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with threads_settle():
        r = Receiver(SECRET).up()
        yield r
        r.down()


def hook(receiver: Receiver, **options) -> dict:
    return {
        "name": "hook",
        "type": "webhook",
        "url": receiver.url,
        "secret": SECRET,
        "timeout": 0.3,
        "backoff_initial": 0.02,
        "backoff_max": 0.1,
        **options,
    }


def assert_all_in_order(receiver: Receiver, expected: dict[str, list[str]]) -> None:
    order = first_seen_order(receiver.hits)
    assert {k: [a for _, a in v] for k, v in order.items()} == expected
    assert all(h.signed for h in receiver.hits), "a request without a valid HMAC signature"


def test_an_endpoint_down_then_failing_then_slow_gets_every_event_in_order(
    catalog, payloads, receiver
):
    expected = lifecycle(catalog, payloads, 8)
    receiver.down()  # nothing listening: connection refused
    d = Dispatcher(
        catalog,
        config=parse_events(
            {**FAST, "jsonl": False, "sinks": [hook(receiver, max_attempts=30, concurrency=4)]}
        ),
    )
    d.start(standby=False)
    try:
        worker = d.workers[0]
        deadline = time.monotonic() + 20
        while worker.stats["failures"] < 3:
            assert time.monotonic() < deadline, "no failed attempt while the endpoint was down"
            d.stop_event.wait(0.02)
        receiver.fail_next = 5  # back, but answering 500 for a while
        receiver.slow_next, receiver.slow_seconds = 3, 1.0  # then slower than the 0.3 s timeout
        receiver.up()
        receiver.wait_for(lambda r: len(r.distinct()) == 24)
        idle(d)
    finally:
        d.stop()

    assert_all_in_order(receiver, expected)
    counts = Counter(h.event_id for h in receiver.delivered())
    # a duplicate only where an answer came after the sender gave up waiting (at most 3 here)
    assert sum(c - 1 for c in counts.values()) <= 3
    assert max(counts.values()) <= 30  # never more than the retry policy's attempts
    assert sum(h.status == 500 for h in receiver.hits) == 5
    stats = worker.stats
    assert stats["delivered"] == 24 and stats["dead_letters"] == 0
    assert stats["failures"] >= 3 + 5 + 3
    row = next(r for r in status_rows(catalog, d.config) if r["sink"] == "hook")
    assert row["lag"] == 0 and row["failures"] == stats["failures"]


def status_rows(catalog: Catalog, config) -> list[dict]:
    import dataclasses

    sinks = [
        {"name": s.name, "type": s.type, **{k: v for k, v in s.options.items() if v is not None}}
        for s in config.sinks
    ]
    events = {"jsonl": False, "sinks": sinks}
    return status(dataclasses.replace(catalog.settings, events=events))[1]


def test_an_event_that_keeps_failing_goes_to_the_dead_letters_and_the_rest_flows(
    catalog, payloads, receiver
):
    expected = lifecycle(catalog, payloads, 3)
    bad = sorted(expected)[0]
    receiver.fail_keys = {bad}
    d = Dispatcher(
        catalog,
        config=parse_events({**FAST, "jsonl": False, "sinks": [hook(receiver, max_attempts=3)]}),
    )
    d.start(standby=False)
    try:
        idle(d)
    finally:
        d.stop()

    dead_file = catalog.settings.root / "events" / "dead-letters" / "hook.jsonl"
    dead = [json.loads(line) for line in dead_file.read_text().splitlines()]
    assert [(x["key"], x["action"], x["attempts"]) for x in dead] == [
        (bad, "CREATE", 3),
        (bad, "UNPUBLISH", 3),
        (bad, "SUPPRESS", 3),
    ]
    assert all(x["error"].startswith("HTTP 500") for x in dead)
    assert [x["message"]["action"] for x in dead] == ["CREATE", "UNPUBLISH", "SUPPRESS"]
    assert sum(h.key == bad for h in receiver.hits) == 9  # three attempts each, no more
    del expected[bad]
    assert_all_in_order(receiver, expected)
    stats = d.workers[0].stats
    assert (stats["delivered"], stats["dead_letters"], stats["failures"]) == (6, 3, 9)
    row = next(r for r in status_rows(catalog, d.config) if r["sink"] == "hook")
    assert (row["lag"], row["dead_letters"], row["failures"]) == (0, 3, 9)
    assert row["last_error"].startswith("HTTP 500")


def test_a_sink_that_cannot_open_is_named_and_the_webhook_still_delivers(
    catalog, submitted, receiver
):
    d = Dispatcher(
        catalog,
        config=parse_events(
            {
                **FAST,
                "jsonl": False,
                "sinks": [
                    {"name": "kafka", "type": "kafka", "config": {"no.such.property": 1}},
                    hook(receiver),
                ],
            }
        ),
    )
    d.start(standby=False)
    try:
        receiver.wait_for(lambda r: len(r.distinct()) == 1)
        idle(d)
        kafka = next(w for w in d.workers if w.name == "kafka")
        assert kafka.error is not None and kafka.error.startswith("events sink 'kafka': ")
    finally:
        d.stop()
    assert_all_in_order(receiver, {submitted[0]: ["CREATE"]})


# -- kill -9 ---------------------------------------------------------------------------------------


def start_dispatcher(root: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "songlake", "--root", str(root), "events", "run"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_kill_9_in_the_middle_of_delivering_loses_nothing(catalog, payloads, receiver, tmp_path):
    root = catalog.settings.root
    (root / "songlake.toml").write_text(
        "[events]\npoll_interval = 0.02\nchunk_events = 20\n"
        f'[[events.sinks]]\nname = "hook"\ntype = "webhook"\nurl = "{receiver.url}"\n'
        f'secret = "{SECRET}"\nconcurrency = 2\ntimeout = 5.0\nbackoff_initial = 0.05\n'
    )
    expected = lifecycle(catalog, payloads, 60)  # 180 events
    receiver.delay = 0.01  # a busy endpoint: delivering everything takes ~1 s
    log = tmp_path / "dispatcher.log"
    proc = start_dispatcher(root, log)
    try:
        receiver.wait_for(lambda r: len(r.distinct()) >= 40, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        got = len(receiver.distinct())
        assert got < 180, "everything was delivered before the kill: nothing was tested"
        more = lifecycle(catalog, payloads, 5)  # committed while no dispatcher runs
        expected.update(more)
        proc = start_dispatcher(root, log)
        receiver.wait_for(lambda r: len(r.distinct()) == 195, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert_all_in_order(receiver, expected)
    lines = log_lines(catalog)  # the JSONL log, cut back and rewritten: each message once
    assert sorted(Counter((m["analysisId"], m["action"]) for m in lines).values()) == [1] * 195
    for aid, acts in expected.items():
        assert [m["action"] for m in lines if m["analysisId"] == aid] == acts


# -- the HTTP client underneath ----------------------------------------------------------------


class Canned:
    """A raw TCP server on 127.0.0.1 answering each request with the next canned bytes."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, name="test-canned")
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            conn, _ = self.server.accept()
            with conn, conn.makefile("rb") as reader:
                while self.answers:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = reader.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    self.requests.append(head + reader.read(length))
                    answer = self.answers.pop(0)
                    conn.sendall(answer)
                    if b"Connection: close" in answer or answer.startswith(b"HTTP/1.0"):
                        break
        self.server.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 202 Accepted\r\nConnection: close\r\n\r\nbye",
        b"HTTP/1.0 200 OK\r\n\r\nold",
    ],
)
def test_the_client_reads_every_answer_shape_and_reuses_the_connection(answer, no_leaked_threads):
    canned = Canned([answer, b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"])
    conn = Connection("127.0.0.1", canned.port, https=False, timeout=5)
    try:
        assert conn.post(b"/hook?x=1", b"X-A: 1\r\n", b"{}")[0] in (200, 202, 204)
        assert conn.post(b"/hook?x=1", b"", b"[1]") == (503, "Busy")
    finally:
        conn.close()
        canned.thread.join(10)
    first = canned.requests[0]
    assert first.startswith(b"POST /hook?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"X-A: 1\r\n" in first and first.endswith(b"Content-Length: 2\r\n\r\n{}")
