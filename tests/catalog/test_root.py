"""A catalog root on S3 (moto's server on 127.0.0.1, real boto3, pyarrow and deltalake calls):
every command on ``s3://bucket/prefix``, ``songlake.toml`` read from the root, the local state
folder, wrong root URLs refused in one line with nothing created, and a lost connection in the
middle of a commit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from catalog import Catalog, current
from catalog.errors import MalformedParameter
from catalog.root import Location
from catalog.settings import load_settings
from catalog.tables import TableStore
from songlake.cli import main
from tests.catalog.store.conftest import CREDENTIALS, MotoProcess, MotoS3, TcpProxy
from tests.catalog.write.conftest import race
from tests.conftest import REPO, Payloads

EXAMPLE = REPO / "examples" / "DEMO"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    server = MotoProcess()  # deltalake and moto in one interpreter can starve each other
    yield server
    server.stop()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto: MotoS3) -> dict[str, str]:
    """The usual AWS environment pointing at moto, for this process and the CLI processes."""
    env = {
        **CREDENTIALS,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto.url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "XDG_STATE_HOME": str(tmp_path / "xdg"),
    }
    for name in [n for n in os.environ if n.startswith(("AWS_", "SONGLAKE_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def bucket(moto: MotoS3, aws: dict[str, str]) -> str:
    name = f"root-{uuid.uuid4().hex[:10]}"
    moto.client().create_bucket(Bucket=name)
    return name


def keys(moto: MotoS3, bucket: str) -> list[str]:
    pages = moto.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def cli(root: str, *args: str) -> Any:
    result = CliRunner().invoke(main, ["--root", root, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def cli_process(env: dict[str, str], *args: str, timeout: float = 120) -> Any:
    """songlake in a process of its own, with exactly the environment given (plus PATH)."""
    return subprocess.run(
        [sys.executable, "-m", "songlake", *args],
        env={"PATH": os.environ.get("PATH", ""), "HOME": env["XDG_STATE_HOME"], **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- the root ------------------------------------------------------------------------------------


def test_a_location_is_a_folder_or_an_s3_prefix(aws: dict[str, str]) -> None:
    s3 = Location.parse("s3://bkt/some/prefix/")
    assert (s3.is_s3, s3.bucket, s3.prefix) == (True, "bkt", "some/prefix")
    assert s3.uri("tables", "files") == "s3://bkt/some/prefix/tables/files"
    assert s3.child("state").key("events", "x.json") == "some/prefix/state/events/x.json"
    options = s3.storage_options or {}
    assert options["conditional_put"] == "etag"
    assert options["AWS_ENDPOINT_URL"] == aws["AWS_ENDPOINT_URL"]
    assert options["AWS_ALLOW_HTTP"] == "true"  # an http:// endpoint (moto, MinIO)
    local = Location.parse("catalog-data")
    assert (local.is_s3, local.uri("tables"), local.storage_options) == (
        False,
        "catalog-data/tables",
        None,
    )
    with pytest.raises(MalformedParameter, match="names no bucket"):
        Location.parse("s3://")


def test_settings_of_an_s3_root_come_from_its_songlake_toml(
    moto: MotoS3, bucket: str, aws: dict[str, str], tmp_path: Path
) -> None:
    body = b'song_server_id = "song.s3"\nbatch_size = 77\n'
    moto.client().put_object(Bucket=bucket, Key="cat/songlake.toml", Body=body)
    settings = load_settings(f"s3://{bucket}/cat")
    assert (settings.song_server_id, settings.batch_size) == ("song.s3", 77)
    assert settings.location.url == f"s3://{bucket}/cat"
    # this machine's things stay local; blobs go to the root's bucket in Score's layout
    assert settings.state_dir == tmp_path / "xdg" / "songlake" / bucket / "cat"
    assert settings.inbox_dir == settings.state_dir / "inbox"
    assert (settings.object_store, settings.s3_bucket, settings.s3_data_dir) == (
        "s3",
        bucket,
        "data",
    )
    mine = load_settings(f"s3://{bucket}/cat", local_state_dir=str(tmp_path / "here"))
    assert mine.state_dir == mine.root == tmp_path / "here"


def test_every_command_works_on_an_s3_root(
    moto: MotoS3, bucket: str, aws: dict[str, str], tmp_path: Path
) -> None:
    root = f"s3://{bucket}/catalogs/one"
    assert "catalog ready at " + root in cli(root, "init")
    cli(root, "study", "create", "DEMO", "--name", "Demo")
    analysis_id = json.loads(cli(root, "submit", str(EXAMPLE / "variant-call.song.json")))[
        "analysisId"
    ]
    assert json.loads(cli(root, "analysis", "show", analysis_id))["analysisState"] == "UNPUBLISHED"
    cli(root, "upload", analysis_id, "--dir", str(EXAMPLE))
    cli(root, "analysis", "publish", analysis_id)
    assert "PUBLISHED" in cli(root, "analysis", "list", "--study", "DEMO")
    history = json.loads(cli(root, "analysis", "history", analysis_id, "--json"))
    assert [h["updatedState"] for h in history] == ["PUBLISHED"]
    rows = json.loads(
        cli(
            root,
            "sql",
            "SELECT analysis_state, count(*) AS n FROM analyses GROUP BY 1",
            "--format",
            "json",
        )
    )
    assert rows == [{"analysis_state": "PUBLISHED", "n": 1}]
    assert "sequencingRead" in cli(root, "schema", "list")
    by_env = CliRunner().invoke(main, ["study", "list"], env={"SONGLAKE_ROOT": root})
    assert by_env.exit_code == 0 and "DEMO" in by_env.output  # SONGLAKE_ROOT=s3://... too
    cli(root, "export", "--study", "DEMO", "-o", str(tmp_path / "export"))
    assert (tmp_path / "export" / "DEMO" / f"{analysis_id}.json").is_file()
    assert "watcher: not running" in cli(root, "status")
    cli(root, "compact")  # and the current_* tables, in the bucket too
    states = current.read(TableStore(load_settings(root).tables_dir), "current_analyses")
    assert states.select(["analysis_id", "analysis_state"]).to_pylist() == [
        {"analysis_id": analysis_id, "analysis_state": "PUBLISHED"}
    ]
    cli(root, "storage", "verify")  # exits 1 when a file is missing or wrong
    # the events dispatcher: its lease and the cursors in the bucket, messages in the local log
    assert "song-analysis" in cli(root, "events", "replay", "--from", "1")
    local_log = load_settings(root).root / "events" / "song-analysis.jsonl"  # this machine's
    actions = [json.loads(line)["action"] for line in local_log.read_text().splitlines()]
    assert actions == ["CREATE", "PUBLISH"]
    assert "song-analysis" in cli(root, "events", "status")
    assert "watcher: not running" in cli(root, "status")

    # everything shared is in the bucket under the prefix; blobs in Score's layout beside it
    stored = keys(moto, bucket)
    assert any(k.startswith("catalogs/one/tables/analyses/_delta_log/") for k in stored)
    assert sum(k.startswith("data/") and k.endswith(".meta") for k in stored) == 2
    assert not any("probe" in k for k in stored)
    assert {
        "catalogs/one/state/events/song-analysis.json",
        "catalogs/one/state/writer.lease",
    } <= set(stored)
    lease = moto.client().get_object(
        Bucket=bucket, Key="catalogs/one/state/events/dispatcher.lease"
    )
    assert json.loads(lease["Body"].read())["released"] is True
    # and another process (here: a fresh Catalog) reads the same truth
    other = Catalog(load_settings(root))
    assert other.get_analysis("DEMO", analysis_id)["analysisState"] == "PUBLISHED"
    assert not (other.settings.state_dir / "tables").exists()


# -- wrong root URLs -------------------------------------------------------------------------------


@pytest.fixture
def no_conditional_put(moto: MotoS3) -> Iterator[TcpProxy]:
    """An endpoint that ignores If-None-Match: moto behind a proxy that renames the header."""
    proxy = TcpProxy(
        moto.port, rewrite=lambda data: data.replace(b"If-None-Match", b"X-Ignored-Hdr")
    )
    yield proxy
    proxy.close()


@pytest.mark.parametrize(
    "case", ["missing bucket", "no credentials", "no conditional put", "no bucket"]
)
def test_a_wrong_root_url_is_refused_in_one_line_and_nothing_is_created(
    case: str,
    moto: MotoS3,
    bucket: str,
    aws: dict[str, str],
    no_conditional_put: TcpProxy,
    tmp_path: Path,
) -> None:
    env = dict(aws)
    root, expected = f"s3://{bucket}/cat", ""
    if case == "missing bucket":
        root = "s3://no-such-bucket-here/cat"
        expected = "error [storage.service.error]: Bucket 'no-such-bucket-here' does not exist"
    elif case == "no credentials":
        for name in CREDENTIALS:
            env.pop(name)
        expected = f"error [storage.service.error]: No AWS credentials for bucket '{bucket}'"
    elif case == "no conditional put":
        env["AWS_ENDPOINT_URL"] = no_conditional_put.url
        expected = (
            f"error [storage.service.error]: The endpoint {no_conditional_put.url} does not "
            f"honour conditional put (If-None-Match) on bucket '{bucket}'"
        )
    else:
        root, expected = "s3://", "error [malformed.parameter]: The root 's3://' names no bucket"
    done = cli_process(env, "--root", root, "init")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), done.stderr
    assert keys(moto, bucket) == []  # the probe object is gone too
    assert not (tmp_path / "xdg").exists()


# -- a lost connection -----------------------------------------------------------------------------


def test_a_connection_lost_in_the_middle_of_a_commit_is_retried_and_the_catalog_stays_whole(
    moto: MotoS3, bucket: str, aws: dict[str, str], tmp_path: Path
) -> None:
    root = f"s3://{bucket}/cat"
    cli(root, "init")
    cli(root, "study", "create", "DEMO", "--name", "Demo")
    payloads = Payloads(tmp_path / "data")
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps(payloads.variant_call("DEMO")))
    second.write_text(json.dumps(payloads.variant_call("DEMO")))
    armed, cut = threading.Event(), threading.Event()

    def cut_at_the_first_put_of_the_files_table(data: bytes) -> bytes:
        # donors, specimens and samples are committed by then; files and analyses are not
        if armed.is_set() and data.startswith(b"PUT ") and b"/tables/files/" in data[:300]:
            armed.clear()
            cut.set()
            proxy.cut()
        return data

    proxy = TcpProxy(moto.port, rewrite=cut_at_the_first_put_of_the_files_table)
    try:
        env = {**aws, "AWS_ENDPOINT_URL": proxy.url}
        done = cli_process(env, "--root", root, "submit", str(first))
        assert done.returncode == 0, done.stderr
        armed.set()

        def restore_a_second_after_the_cut() -> None:
            if cut.wait(60):
                time.sleep(1.0)
            proxy.restore()

        restorer = threading.Thread(target=restore_a_second_after_the_cut)
        restorer.start()
        done = cli_process(env, "--root", root, "submit", str(second))
        restorer.join()
        assert cut.is_set() and proxy.refused > 0  # cut, and retried while it was down
        assert done.returncode == 0, done.stderr
        second_id = json.loads(done.stdout)["analysisId"]
    finally:
        proxy.close()
    # both registrations whole, once each, and readable by any process
    counts = json.loads(
        cli(
            root,
            "sql",
            "SELECT (SELECT count(*) FROM analyses) AS a, (SELECT count(*) FROM analysis_versions)"
            " AS v, (SELECT count(*) FROM files) AS f, (SELECT count(*) FROM donors) AS d",
            "--format",
            "json",
        )
    )
    assert counts == [{"a": 2, "v": 2, "f": 2, "d": 1}]
    catalog = Catalog(load_settings(root))
    assert catalog.get_analysis("DEMO", second_id)["files"][0]["fileName"] == "a.vcf.gz"


# -- the events dispatcher's lock ----------------------------------------------------------------


def test_one_events_dispatcher_runs_per_s3_root_across_processes(
    moto: MotoS3, bucket: str, aws: dict[str, str]
) -> None:
    root = f"s3://{bucket}/cat"
    cli(root, "init")
    env = {**aws, "PATH": os.environ.get("PATH", ""), "HOME": aws["XDG_STATE_HOME"]}
    first = subprocess.Popen(
        [sys.executable, "-m", "songlake", "--root", root, "events", "run"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        key = "cat/state/events/dispatcher.lease"
        deadline = time.monotonic() + 60
        while True:
            try:
                lease = json.loads(moto.client().get_object(Bucket=bucket, Key=key)["Body"].read())
                if not lease["released"]:
                    break
            except Exception:  # noqa: BLE001  (not there yet)
                pass
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        assert lease["holder"].endswith(f":{first.pid}")
        second = cli_process(aws, "--root", root, "events", "run", "--once")
        assert second.returncode == 1
        assert "error [dispatcher.already.running]: Another events dispatcher runs on" in (
            second.stderr
        )
        assert f":{first.pid} since" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    lease = json.loads(moto.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    assert lease["released"] is True  # given back on the way out: the next one starts at once
    third = cli_process(aws, "--root", root, "events", "run", "--once")
    assert third.returncode == 0, third.stderr


# -- the four races, on an S3 root ---------------------------------------------------------------


def test_the_four_races_on_an_s3_root_each_end_with_one_truth(
    moto: MotoS3, bucket: str, aws: dict[str, str], tmp_path: Path
) -> None:
    """Writer processes released at one instant (tests/catalog/write/conftest.py's race), the
    writer lease and the tables in the bucket."""
    root = f"s3://{bucket}/cat"
    cli(root, "init")
    cli(root, "study", "create", "DEMO", "--name", "Demo")
    p = Payloads(tmp_path / "data")

    def racers(*bodies: Any, op: str = "submit") -> list[Any]:
        work = [(op, {"study": "DEMO", "payloads": [b]} if op == "submit" else b) for b in bodies]
        answers = race(root, tmp_path / "race", work)
        return [a["ok"][0] if isinstance(a.get("ok"), list) else a.get("ok", a) for a in answers]

    def one(query: str) -> Any:
        return json.loads(cli(root, "sql", query, "--format", "json"))[0]["n"]

    def donor(gender: str, tag: str) -> dict[str, Any]:
        sample = p.sample(f"sa-{tag}", f"sp-{tag}", "race-donor", gender=gender)
        return p.variant_call("DEMO", samples=[sample], files=[p.file(f"{tag}.vcf.gz")])

    answers = racers(donor("Male", "m"), donor("Female", "f"))
    assert sorted(str(a.get("error")) for a in answers if isinstance(a, dict)) == [
        "mismatching.donor.data"
    ], answers
    assert one("SELECT count(*) AS n FROM _donors WHERE submitter_donor_id = 'race-donor'") == 1

    same = b"the same bytes, twice\n"
    twins = [
        p.variant_call(
            "DEMO",
            samples=[p.sample(f"sa-t{i}", f"sp-t{i}", f"do-t{i}")],
            files=[p.file(f"t{i}.vcf.gz", same)],
        )
        for i in range(2)
    ]
    answers = racers(*twins)
    assert [a["error"] for a in answers if isinstance(a, dict)] == ["info.already.exists"]
    md5 = twins[0]["files"][0]["fileMd5sum"]
    assert one(f"SELECT count(*) AS n FROM files WHERE file_md5sum = '{md5}'") == 1

    schema = {"type": "object", "required": ["experiment"], "properties": {"experiment": {}}}
    answers = racers(*({"name": "raceType", "schema": schema} for _ in range(2)), op="type")
    assert sorted(answers) == [1, 2]

    answers = racers(*({"studyId": "RACE1", "name": n} for n in "AB"), op="study")
    assert [a["error"] for a in answers if isinstance(a, dict)] == ["study.already.exists"]
    assert one("SELECT count(*) AS n FROM studies WHERE study_id = 'RACE1'") == 1
