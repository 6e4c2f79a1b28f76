"""Several writer processes on one root: Song's rules hold across processes (issue 12).

Each race starts real processes that open the catalog, then write at the same instant; whichever
commits first wins and the other is refused with Song's error id, re-validated against the
winner's commit. A writer killed or stopped while it holds the lease loses nothing acknowledged and
shows nothing half-written.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from catalog import Catalog, load_settings, sql
from catalog.store.lease import LocalLease
from tests.catalog.write.conftest import (
    clean_env,
    free_port,
    kill_9,
    race,
    result,
    songlake,
    start_first,
    wait_ready,
    writer,
)
from tests.conftest import STUDY, Payloads


def fresh(root: Path) -> Catalog:
    """The catalog as a new process reads it: from the tables only."""
    return Catalog(load_settings(root))


def one(catalog_root: Path, query: str) -> Any:
    _, rows = sql.run(fresh(catalog_root).tables, query)
    return rows[0][0]


def donor_payload(p: Payloads, donor: str, gender: str, tag: str) -> dict[str, Any]:
    return p.variant_call(
        samples=[p.sample(f"sa-{tag}", f"sp-{tag}", donor, gender=gender)],
        files=[p.file(f"{tag}.vcf.gz")],
    )


def outcome(answers: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """(accepted, refused) across the racers' single-item results."""
    items = [a["ok"][0] if isinstance(a.get("ok"), list) else a.get("ok", a) for a in answers]
    accepted = [i for i in items if isinstance(i, str | int) and not isinstance(i, bool)]
    refused = [i for i in items if isinstance(i, dict)]
    return accepted, refused


@pytest.mark.parametrize("round_", range(2))
def test_same_donor_with_two_genders_one_record(catalog, payloads, tmp_path, round_) -> None:
    root = catalog.settings.root
    donor = f"race-donor-{round_}"
    answers = race(
        root,
        tmp_path / "race",
        [
            ("submit", {"study": STUDY, "payloads": [donor_payload(payloads, donor, g, g)]})
            for g in ("Male", "Female")
        ],
    )
    accepted, refused = outcome(answers)
    assert len(accepted) == 1 and len(refused) == 1, answers
    assert refused[0]["error"] == "mismatching.donor.data"
    rows = one(root, f"SELECT count(*) FROM _donors WHERE submitter_donor_id = '{donor}'")
    assert rows == 1  # the loser wrote nothing that anyone reads as a donor
    cat = fresh(root)
    doc = cat.get_analysis(STUDY, accepted[0])
    genders = {s["donor"]["gender"] for s in doc["samples"]}
    _, view = sql.run(cat.tables, f"SELECT gender FROM donors WHERE submitter_donor_id = '{donor}'")
    assert [r[0] for r in view] == list(genders)


def test_same_md5_twice_one_accepted(catalog, payloads, tmp_path) -> None:
    root = catalog.settings.root
    content = b"the same bytes, twice\n"
    bodies = [
        payloads.variant_call(
            samples=[payloads.sample(f"sa-m{i}", f"sp-m{i}", f"do-m{i}")],
            files=[payloads.file(f"m{i}.vcf.gz", content)],
        )
        for i in range(2)
    ]
    answers = race(
        root, tmp_path / "race", [("submit", {"study": STUDY, "payloads": [b]}) for b in bodies]
    )
    accepted, refused = outcome(answers)
    assert len(accepted) == 1 and [r["error"] for r in refused] == ["info.already.exists"]
    md5 = bodies[0]["files"][0]["fileMd5sum"]
    assert one(root, f"SELECT count(*) FROM files WHERE file_md5sum = '{md5}'") == 1


def test_type_registered_twice_gets_versions_1_and_2(catalog, tmp_path) -> None:
    root = catalog.settings.root
    name = "raceType"
    bodies = [
        {
            "name": name,
            "schema": {
                "type": "object",
                "required": ["experiment"],
                "properties": {"experiment": {"type": "object"}, f"field{i}": {"type": "string"}},
            },
        }
        for i in range(2)
    ]
    answers = race(root, tmp_path / "race", [("type", b) for b in bodies])
    assert sorted(a["ok"] for a in answers) == [1, 2], answers
    cat = fresh(root)
    for body, answer in zip(bodies, answers, strict=True):
        atype = cat.registry.get(name, answer["ok"])
        assert atype.version == answer["ok"]
        assert atype.schema["properties"] == body["schema"]["properties"]
    assert cat.registry.latest_version(name) == 2


def test_study_created_twice_one_row(catalog, tmp_path) -> None:
    root = catalog.settings.root
    answers = race(
        root, tmp_path / "race", [("study", {"studyId": "RACE1", "name": n}) for n in "AB"]
    )
    accepted, refused = outcome(answers)
    assert accepted == ["RACE1"] and [r["error"] for r in refused] == ["study.already.exists"]
    assert one(root, "SELECT count(*) FROM studies WHERE study_id = 'RACE1'") == 1


def test_two_cli_processes_started_at_once(catalog, payloads, tmp_path) -> None:
    """`songlake submit` and `songlake study create` twice, from two shells at the same instant."""
    root = catalog.settings.root
    files = []
    for g in ("Male", "Female"):
        path = tmp_path / f"{g}.json"
        path.write_text(json.dumps(donor_payload(payloads, "cli-donor", g, f"cli{g}")))
        files.append(path)
    env = clean_env()
    runs = [
        subprocess.Popen(
            songlake("--root", str(root), *args),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in (
            ("submit", str(files[0])),
            ("submit", str(files[1])),
            ("study", "create", "CLI1"),
            ("study", "create", "CLI1"),
        )
    ]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in runs]
    submits, studies = outs[:2], outs[2:]
    assert sorted(code for code, _, _ in submits) == [0, 1], outs
    assert "mismatching.donor.data" in next(err for code, _, err in submits if code == 1)
    assert sorted(code for code, _, _ in studies) == [0, 1], outs
    assert "study.already.exists" in next(err for code, _, err in studies if code == 1)
    assert one(root, "SELECT count(*) FROM _donors WHERE submitter_donor_id = 'cli-donor'") == 1
    assert one(root, "SELECT count(*) FROM studies WHERE study_id = 'CLI1'") == 1


class Serve:
    """`songlake serve --no-watch` on a free port, with the root's admin token."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            songlake("--root", str(root), "serve", "--no-watch", "--port", str(self.port)),
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.root = root

    def _request(self, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(
                method, path, body=None if body is None else json.dumps(body), headers=headers
            )
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def wait(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, self.proc.communicate()[1]
            try:
                if self._request("GET", "/isAlive", None, {})[0] == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)

    def call(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        token = (self.root / "state" / "admin-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return self._request(method, path, body, headers)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stderr is not None
        self.proc.stderr.close()


def eventually(call: Any, seconds: float = 10.0) -> Any:
    """The body of the first 200 answer of ``call()``, asked again until ``seconds`` pass (a
    replica sees another replica's write once it refreshes, within ``refresh_interval``)."""
    deadline = time.monotonic() + seconds
    while True:
        code, body = call()
        if code == 200 or time.monotonic() > deadline:
            assert code == 200, body
            return body
        time.sleep(0.05)


def at_once(calls: list[Any]) -> list[Any]:
    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def go(i: int) -> None:
        barrier.wait()
        out[i] = calls[i]()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_two_serve_processes_on_one_root(catalog, payloads, tmp_path) -> None:
    root = catalog.settings.root
    servers = [Serve(root) for _ in range(2)]
    try:
        for s in servers:
            s.wait()
        a, b = servers
        # the same donor with two genders, one request to each server at the same instant
        bodies = [donor_payload(payloads, "http-donor", g, f"h{g}") for g in ("Male", "Female")]
        answers = at_once(
            [
                lambda s=s, body=body: s.call("POST", f"/submit/{STUDY}", body)
                for s, body in zip(servers, bodies, strict=True)
            ]
        )
        assert sorted(code for code, _ in answers) == [200, 409], answers
        refused = next(body for code, body in answers if code == 409)
        assert refused["errorId"] == "mismatching.donor.data"
        accepted = next(body for code, body in answers if code == 200)["analysisId"]
        # the same study twice
        studies = at_once(
            [lambda s=s: s.call("POST", "/studies/HTTP1/", {"studyId": "HTTP1"}) for s in servers]
        )
        assert sorted(code for code, _ in studies) == [200, 409], studies
        assert next(b for c, b in studies if c == 409)["errorId"] == "study.already.exists"
        # the write accepted by one replica is read by the other, with one truth for the donor
        doc = eventually(lambda: b.call("GET", f"/studies/{STUDY}/analysis/{accepted}", None))
        _, other = a.call("GET", f"/studies/{STUDY}/analysis/{accepted}", None)
        assert doc["samples"][0]["donor"] == other["samples"][0]["donor"]
        # the same md5 twice, and the same type name twice, one to each server at one instant
        content = b"http bytes, twice\n"
        twins = [
            payloads.variant_call(
                samples=[payloads.sample(f"hm-sa{i}", f"hm-sp{i}", f"hm-do{i}")],
                files=[payloads.file(f"hm{i}.vcf.gz", content)],
            )
            for i in range(2)
        ]
        md5s = at_once(
            [
                lambda s=s, body=body: s.call("POST", f"/submit/{STUDY}", body)
                for s, body in zip(servers, twins, strict=True)
            ]
        )
        assert sorted(code for code, _ in md5s) == [200, 409], md5s
        assert next(b for c, b in md5s if c == 409)["errorId"] == "info.already.exists"

        def schema(i: int) -> dict[str, Any]:
            fields = {"experiment": {"type": "object"}, f"field{i}": {"type": "string"}}
            return {"type": "object", "required": ["experiment"], "properties": fields}

        types = at_once(
            [
                lambda s=s, i=i: s.call(
                    "POST",
                    "/schemas",
                    {"name": "httpRace", "schema": schema(i)},
                )
                for i, s in enumerate(servers)
            ]
        )
        assert [code for code, _ in types] == [200, 200], types
        assert sorted(body["version"] for _, body in types) == [1, 2], types
        assert types[0][1]["schema"] != types[1][1]["schema"]  # two schemas, each its own version
        for _, body in types:  # each replica answers each version (once it has refreshed)
            for server in servers:
                path = f"/schemas/httpRace?version={body['version']}"
                got = eventually(lambda server=server, path=path: server.call("GET", path, None))
                assert got["version"] == body["version"] and got["schema"] == body["schema"]
        # lifecycle changes made on both replicas: one history, in one order, on both
        winner = bodies[[code for code, _ in answers].index(200)]
        catalog.refresh()
        catalog.upload(accepted, payloads.write_files(winner))
        steps = [(a, "publish"), (b, "unpublish"), (a, "publish"), (b, "suppress")]
        for server, action in steps:
            code, body = server.call("PUT", f"/studies/{STUDY}/analysis/{action}/{accepted}", None)
            assert code == 200, body
        histories = []
        for server in servers:
            deadline = time.monotonic() + 10
            while True:
                _, doc = server.call("GET", f"/studies/{STUDY}/analysis/{accepted}", None)
                if doc["analysisState"] == "SUPPRESSED" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            histories.append([h["updatedState"] for h in doc["analysisStateHistory"]])
        assert (
            histories[0] == histories[1] == ["PUBLISHED", "UNPUBLISHED", "PUBLISHED", "SUPPRESSED"]
        )
    finally:
        for s in servers:
            s.stop()
    assert one(root, "SELECT count(*) FROM _donors WHERE submitter_donor_id = 'http-donor'") == 1


def big_batch(p: Payloads, n: int, tag: str, *, clash: str | None = None) -> list[dict[str, Any]]:
    out = [donor_payload(p, f"{tag}-d{i}", "Female", f"{tag}{i}") for i in range(n)]
    if clash:
        out.append(donor_payload(p, clash, "Female", f"{tag}-clash"))
    return out


def held_by(lease: LocalLease, pid: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        info = lease.info()
        if info["held"] and str(info.get("holder", "")).endswith(f":{pid}"):
            return
        assert time.monotonic() < deadline, info
        time.sleep(0.005)


def test_kill_9_while_holding_the_lease_loses_nothing(catalog, payloads, tmp_path) -> None:
    root = catalog.settings.root
    folder = tmp_path / "kill"
    folder.mkdir()
    ids = [str(uuid.uuid4()) for _ in range(3000)]
    batch = big_batch(payloads, 3000, "k")
    body = {"study": STUDY, "payloads": batch, "ids": ids}
    a = writer(root, folder, "a", "submit", body)
    b = writer(
        root,
        folder,
        "b",
        "submit",
        {"study": STUDY, "payloads": [donor_payload(payloads, "survivor", "Male", "surv")]},
    )
    wait_ready(folder, ["a", "b"], [a, b])
    (folder / "go").touch()
    held_by(LocalLease(root / "state" / "writer.lock"), a.pid)
    kill_9(a)  # inside its checks against the committed state, or its appends
    survivor = result(b)  # the other writer goes on once the kernel freed the lock
    assert isinstance(survivor["ok"][0], str)
    cat = fresh(root)
    assert survivor["ok"][0] in cat.model.analyses
    # nothing of the killed batch is visible: not its analyses, not its donors
    assert one(root, "SELECT count(*) FROM donors WHERE submitter_donor_id LIKE 'k-d%'") == 0
    assert not [i for i in ids if i in cat.model.analyses]
    # the retry (the watcher's, from its ledger) re-uses the ids it chose the first time
    from catalog import SubmitItem

    results = cat.submit_batch(
        [SubmitItem(p, STUDY, analysis_id=i) for p, i in zip(batch, ids, strict=True)]
    )
    assert [r.analysis_id for r in results] == ids
    assert one(root, "SELECT count(*) FROM donors WHERE submitter_donor_id LIKE 'k-d%'") == 3000


def test_a_stopped_local_writer_keeps_the_lease_and_others_wait(
    catalog, payloads, tmp_path
) -> None:
    """flock has no TTL: a SIGSTOPped holder keeps the lease; the other writer waits, then
    re-validates against the holder's commit once it is continued."""
    root = catalog.settings.root
    folder = tmp_path / "stop"
    a = start_first(
        root,
        folder,
        {"study": STUDY, "payloads": big_batch(payloads, 3000, "s", clash="stop-donor")},
    )
    held_by(LocalLease(root / "state" / "writer.lock"), a.pid)
    a.send_signal(signal.SIGSTOP)
    try:
        b = writer(
            root,
            folder,
            "b",
            "submit",
            {"study": STUDY, "payloads": [donor_payload(payloads, "stop-donor", "Male", "stopm")]},
        )
        wait_ready(folder, ["b"], [b])
        time.sleep(1.5)
        assert b.poll() is None  # waiting for the lease, not committing around it
    finally:
        a.send_signal(signal.SIGCONT)
    first, second = result(a), result(b)
    assert all(isinstance(x, str) for x in first["ok"])  # A committed every payload
    assert second["ok"][0]["error"] == "mismatching.donor.data"  # B saw A's donor
    assert second["status"]["process"]["waits"] >= 1


def test_compact_takes_the_lease(catalog, tmp_path) -> None:
    """`songlake compact` rewrites files: it waits for a writer holding the lease."""
    root = catalog.settings.root
    lease = LocalLease(root / "state" / "writer.lock")
    with lease.hold():
        proc = subprocess.Popen(
            songlake("--root", str(root), "compact"),
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2.0)
        assert proc.poll() is None
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


def test_status_names_the_lease_holder(catalog, tmp_path) -> None:
    root = catalog.settings.root
    catalog.create_study({"studyId": "STAT1"})
    out = subprocess.run(
        songlake("--root", str(root), "status", "--json"),
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    writer_info = json.loads(out.stdout)["writer"]
    assert writer_info["lease"]["held"] is False
    assert writer_info["lease"]["holder"].endswith(f":{os.getpid()}")
    assert writer_info["last_commit"]["operation"] == "create_study"
    assert writer_info["last_commit"]["writer"].endswith(f":{os.getpid()}")
