"""The attacks that got through, each refused now with Song's error id and nothing written: lone
surrogates, study ids and names that broke the server, duplicate file names, impossible sizes,
SQL without memory or byte limits, bodies over the limit, and secrets in the error log."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest

from api.app import create_app
from api.errors import redacted_url
from tests.api.conftest import assert_song_error, running, snapshot
from tests.conftest import STUDY

LONE = '"\\ud800"'  # a JSON escape of a lone surrogate: valid JSON, not text


def _with_lone_surrogate(doc: dict, key: str) -> str:
    text = json.dumps({**doc, key: "LONE"})
    return text.replace('"LONE"', LONE)


def test_a_lone_surrogate_is_refused_everywhere_before_anything_is_written(
    catalog, client, payloads, submitted
) -> None:
    aid, payload = submitted
    (f,) = catalog.analysis_files(STUDY, aid)
    before = snapshot(catalog)
    variant = {"analysisType": {"name": "variantCall"}, "experiment": payload["experiment"]}
    cases = [
        ("post", f"/submit/{STUDY}", _with_lone_surrogate(payloads.variant_call(), "x")),
        ("post", "/studies/NEW1/", _with_lone_surrogate({}, "name")),
        ("put", f"/studies/{STUDY}/analysis/{aid}", _with_lone_surrogate(variant, "x")),
        ("patch", f"/studies/{STUDY}/analysis/{aid}", _with_lone_surrogate({}, "x")),
        ("put", f"/studies/{STUDY}/files/{f['objectId']}", _with_lone_surrogate({}, "info")),
        ("post", "/sql", json.dumps({"query": "SELECT 'LONE'"}).replace("'LONE'", LONE[1:-1])),
    ]
    for method, url, body in cases:
        response = getattr(client, method)(url, data=body, content_type="application/json")
        assert_song_error(response, 422, "payload.parsing")
    assert snapshot(catalog) == before
    assert "NEW1" not in catalog.model.studies


@pytest.mark.parametrize(
    "study_id", ["all", "x\u0085y", "x\u2028", "x\x9fy", ".."], ids=["all", "nel", "ls", "c1", "up"]
)
def test_study_ids_no_study_can_have_are_refused(catalog, client, study_id) -> None:
    before = snapshot(catalog)
    response = client.post("/studies/P/", json={"studyId": study_id})
    assert_song_error(response, 409, "study.id.mismatch")  # the body's id is not the path's
    with pytest.raises(Exception) as caught:
        catalog.create_study({"studyId": study_id})
    assert getattr(caught.value, "error_id", None) == "malformed.parameter"
    response = client.post(f"/studies/{study_id}/", json={})
    assert response.status_code in (400, 404, 405)  # refused by the path or by the rule
    assert response.get_json()["errorId"] in ("malformed.parameter", "not.found")
    assert snapshot(catalog) == before


def test_an_empty_study_id_is_refused(catalog) -> None:
    with pytest.raises(Exception) as caught:
        catalog.create_study({"studyId": ""})
    assert getattr(caught.value, "error_id", None) == "malformed.parameter"


def test_a_study_name_with_a_line_separator_leaves_later_writes_working(
    catalog, client, payloads
) -> None:
    """The read model split Delta log lines at U+2028 and failed every later refresh."""
    assert client.post("/studies/S2/", json={"name": "\u2028x\u0085"}).status_code == 200
    catalog.refresh()
    assert client.post("/studies/S3/", json={"name": "ok"}).status_code == 200
    body = payloads.variant_call()
    assert client.post(f"/submit/{STUDY}", json=body).status_code == 200
    assert client.get("/studies/S2").get_json()["name"] == "\u2028x\u0085"


@pytest.mark.parametrize(
    ("change", "pointer", "rule"),
    [
        ("twice", "/files/1/fileName", "uniqueFileName"),
        ({"fileSize": -1}, "/files/0/fileSize", "minimum"),
        ({"fileSize": 2**63}, "/files/0/fileSize", "maximum"),
    ],
)
def test_impossible_files_are_refused(catalog, client, payloads, change, pointer, rule) -> None:
    if change == "twice":
        files = [payloads.file("same.vcf.gz"), payloads.file("same.vcf.gz")]
    else:
        files = [payloads.file(**change)]
    before = snapshot(catalog)
    response = client.post(f"/submit/{STUDY}", json=payloads.variant_call(files=files))
    body = assert_song_error(response, 400, "schema.violation")
    assert (pointer, rule) in {(p["pointer"], p["rule"]) for p in body["problems"]}
    assert snapshot(catalog) == before


def test_a_number_that_underflows_to_zero_is_refused(catalog, client, payloads) -> None:
    text = json.dumps(payloads.variant_call()).replace('"fileSize": ', '"fileSize": 1e-400, "x": ')
    before = snapshot(catalog)
    response = client.post(f"/submit/{STUDY}", data=text, content_type="application/json")
    assert_song_error(response, 422, "payload.parsing")
    assert snapshot(catalog) == before


def test_sql_answers_are_bounded_in_bytes_and_memory(catalog, client) -> None:
    small = replace(
        catalog.settings, sql_max_bytes=1_000_000, sql_memory_limit="64MB", sql_timeout=3
    )
    app = create_app(catalog, settings=small)
    c = app.test_client()
    c.environ_base.update(client.environ_base)
    query = "SELECT repeat('x', 100000) FROM range(300)"
    assert_song_error(c.post("/sql", json={"query": query}), 413, "payload.too.large")
    # 2.8 GB without a limit: now refused for its memory, or spilled and stopped in time
    heavy = c.post("/sql", json={"query": "SELECT count(DISTINCT range) FROM range(100000000)"})
    assert heavy.status_code in (413, 504)
    assert heavy.get_json()["errorId"] in ("payload.too.large", "gateway.timed.out")
    ok = c.post("/sql", json={"query": "SELECT 1 AS one"}).get_json()
    assert ok["rows"] == [[1]]


def test_the_error_log_keeps_no_query_values(client) -> None:
    """An unexpected error's log line names the path and the query's keys, never their values."""
    app = client.application
    with app.test_request_context("/objects/data/x?X-Songlake-Signature=secret&token=t0k"):
        line = redacted_url()
    assert "secret" not in line and "t0k" not in line
    assert line == "/objects/data/x?X-Songlake-Signature=…&token=…"


def _raw(server, data: bytes, read: int = 65536) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(read)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _json_of(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head.lower(), head
    return status, json.loads(body)


def test_the_servers_own_answers_are_song_errors(catalog, no_leaked_threads) -> None:
    with running(catalog) as (server, _):
        long_path = b"/" + b"a" * (256 * 1024)
        status, body = _json_of(_raw(server, b"GET " + long_path + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert status == 431 and body["errorId"] == "request.header.fields.too.large"
        # a body over the limit is refused from its Content-Length, before it is read (and
        # before the token is checked): the client gets its answer without sending a byte more
        size = server.max_body + 1  # the server's cap: a Score part's size and more
        request = f"POST /submit/{STUDY} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
        status, body = _json_of(_raw(server, request.encode() + b"Content-Type: x\r\n\r\n{"))
        assert status == 413 and body["errorId"] == "payload.too.large"


def test_health_says_down_while_the_catalog_cannot_refresh(catalog, client) -> None:
    """A refresh that fails (here a Delta log entry that is not JSON) left /health UP while
    every write failed."""
    assert client.get("/health").status_code == 200
    log = Path(catalog.tables.uri("studies")) / "_delta_log"
    latest = max(int(p.name.split(".")[0]) for p in log.glob("*.json"))
    broken = log / f"{latest + 1:020d}.json"
    broken.write_text("not json\n")
    time.sleep(catalog.settings.refresh_interval + 0.1)  # the next request refreshes
    response = client.get("/health")
    body = assert_song_error(response, 503, "service.unavailable")
    # whichever check meets the broken log first says so: the tables, or the refresh
    assert "tables unreadable" in body["message"] or "refresh failing" in body["message"]
    broken.unlink()
