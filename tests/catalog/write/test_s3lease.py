"""The writer lease in an S3 object (moto's server over HTTP, real boto3 calls), with real writer
processes: a dead holder's lease is taken over after its TTL, and a holder stopped past its TTL
finds, when continued, that its commit is refused and re-validates against the new holder's."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from catalog import Catalog, load_settings, sql
from catalog.errors import WriteConflict
from catalog.store.s3lease import S3Lease
from tests.catalog.store.conftest import CREDENTIALS, MotoS3
from tests.catalog.write.conftest import kill_9, result, start_first, writer
from tests.catalog.write.test_writers import big_batch, donor_payload
from tests.conftest import STUDY

TTL = 2.0


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    server = MotoS3()
    yield server
    server.stop()


@pytest.fixture
def lease_env(moto: MotoS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    bucket = f"lease-{uuid.uuid4().hex[:12]}"
    moto.client().create_bucket(Bucket=bucket)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGLAKE_")}
    env["LEASE_S3"] = f"{moto.url} {bucket} state/writer.lease {TTL}"
    return env


def lease_object(moto: MotoS3, env: dict[str, str]) -> dict[str, Any]:
    _, bucket, key, _ = env["LEASE_S3"].split()
    try:
        body = moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception:  # noqa: BLE001 - not there yet
        return {}
    return dict(json.loads(body))


def held_by(moto: MotoS3, env: dict[str, str], pid: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        record = lease_object(moto, env)
        if str(record.get("holder", "")).endswith(f":{pid}") and not record.get("released"):
            return
        assert time.monotonic() < deadline, record
        time.sleep(0.005)


def test_lease_is_exclusive_and_released(moto, lease_env) -> None:
    _, bucket, key, _ = lease_env["LEASE_S3"].split()
    a = S3Lease(moto.client(), bucket, key, ttl=TTL, holder="a")
    b = S3Lease(moto.client(), bucket, key, ttl=TTL, holder="b", poll=0.01)
    with a.hold() as first:
        assert a.info()["holder"] == "a" and a.info()["held"] is True
        a.check()  # renewing our own lease works
    with b.hold() as second:  # released: taken at once, no TTL wait
        assert second == first + 1
    assert b.stats.takeovers == 0 and b.info()["held"] is False


def test_check_refuses_a_holder_whose_lease_was_taken_over(moto, lease_env) -> None:
    _, bucket, key, _ = lease_env["LEASE_S3"].split()
    a = S3Lease(moto.client(), bucket, key, ttl=0.5, holder="a")
    b = S3Lease(moto.client(), bucket, key, ttl=0.5, holder="b", poll=0.01)
    with a.hold():
        a._renewing.acquire()  # a holder that stops renewing (paused), as SIGSTOP would
        try:
            with b.hold() as epoch:
                assert epoch == 2 and b.stats.takeovers == 1
                a._renewing.release()
                with pytest.raises(WriteConflict):
                    a.check()
        finally:
            if a._renewing.locked():
                a._renewing.release()
    assert a.stats.lost == 1


def test_kill_9_holder_is_taken_over_after_the_ttl(catalog, payloads, tmp_path, moto, lease_env):
    root = catalog.settings.root
    folder = tmp_path / "kill"
    a = start_first(
        root, folder, {"study": STUDY, "payloads": big_batch(payloads, 3000, "k3")}, env=lease_env
    )
    held_by(moto, lease_env, a.pid)
    time.sleep(0.2)
    kill_9(a)  # dies holding the lease: nobody releases it
    b = writer(
        root,
        folder,
        "b",
        "submit",
        {"study": STUDY, "payloads": [donor_payload(payloads, "s3-survivor", "Male", "s3s")]},
        env=lease_env,
    )
    survivor = result(b)
    assert isinstance(survivor["ok"][0], str)
    assert survivor["status"]["process"]["takeovers"] == 1
    cat = Catalog(load_settings(root))
    assert survivor["ok"][0] in cat.model.analyses
    _, rows = sql.run(
        cat.tables, "SELECT count(*) FROM donors WHERE submitter_donor_id LIKE 'k3-%'"
    )
    assert rows[0][0] == 0


def test_stopped_past_its_ttl_the_writer_re_validates(catalog, payloads, tmp_path, moto, lease_env):
    root = catalog.settings.root
    folder = tmp_path / "stop"
    a = start_first(
        root,
        folder,
        {"study": STUDY, "payloads": big_batch(payloads, 3000, "p", clash="paused-donor")},
        env=lease_env,
    )
    held_by(moto, lease_env, a.pid)
    a.send_signal(signal.SIGSTOP)
    try:
        b = writer(
            root,
            folder,
            "b",
            "submit",
            {"study": STUDY, "payloads": [donor_payload(payloads, "paused-donor", "Male", "pm")]},
            env=lease_env,
        )
        second = result(b)  # the new holder commits while A is stopped
    finally:
        a.send_signal(signal.SIGCONT)
    first = result(a)
    assert isinstance(second["ok"][0], str)
    assert second["status"]["process"]["takeovers"] == 1
    # A's commit was refused; re-validated, its clashing payload meets B's donor
    assert first["status"]["process"]["conflicts"] >= 1
    assert first["ok"][-1]["error"] == "mismatching.donor.data"
    assert all(isinstance(x, str) for x in first["ok"][:-1])
    cat = Catalog(load_settings(root))
    _, rows = sql.run(
        cat.tables, "SELECT gender FROM _donors WHERE submitter_donor_id = 'paused-donor'"
    )
    assert rows == [("Male",)]
