"""GET /events: Song's analysis messages as server-sent events, resumable with Last-Event-ID."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request

from api.app import create_app
from api.server import ApiServer
from catalog.catalog import Catalog
from tests.api.conftest import assert_song_error, bearer
from tests.conftest import STUDY

FAST = {"poll_interval": 0.02, "sse_heartbeat": 0.1}


def app_for(catalog: Catalog, *, public: bool = False, tokens: str = "", **events):
    settings = dataclasses.replace(
        catalog.settings, events={**FAST, **events}, events_public=public
    )
    if tokens:
        (settings.root / "tokens.txt").write_text(tokens)
        settings = dataclasses.replace(settings, auth_token_file="tokens.txt")
    catalog.settings = settings
    return create_app(catalog, settings=settings)


def admin_client(catalog: Catalog, token: str):
    client = app_for(catalog).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def parse(text: str) -> list[dict]:
    """SSE frames as {id, data}; comments and retry lines left out."""
    out = []
    for frame in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in frame.splitlines()
            if line and not line.startswith(":") and ": " in line
        )
        if "data" in fields:
            out.append({"id": fields.get("id"), "data": json.loads(fields["data"])})
    return out


def test_events_stream_from_a_version_and_resume_after_last_event_id(
    catalog, submitted, upload, token
):
    aid, payload = submitted
    upload(aid, payload)
    catalog.publish(STUDY, aid)
    catalog.suppress(STUDY, aid)
    client = admin_client(catalog, token)

    response = client.get("/events?from=0&limit=3")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    events = parse(response.get_data(as_text=True))
    assert [(e["data"]["action"], e["data"]["state"]) for e in events] == [
        ("CREATE", "UNPUBLISHED"),
        ("PUBLISH", "PUBLISHED"),
        ("SUPPRESS", "SUPPRESSED"),
    ]
    assert all(
        list(e["data"]) == ["analysisId", "studyId", "state", "action", "songServerId", "analysis"]
        for e in events
    )
    # each event carries the analysis as of its change: the last one is the analysis now
    assert events[0]["data"]["analysis"]["analysisState"] == "UNPUBLISHED"
    assert events[0]["data"]["analysis"]["analysisStateHistory"] == []
    assert events[2]["data"]["analysis"] == catalog.get_analysis(STUDY, aid)

    resumed = client.get("/events?limit=2", headers={"Last-Event-ID": events[0]["id"]})
    assert [e["data"]["action"] for e in parse(resumed.get_data(as_text=True))] == [
        "PUBLISH",
        "SUPPRESS",
    ]
    again = client.get(f"/events?limit=1&lastEventId={events[1]['id']}")
    assert [e["id"] for e in parse(again.get_data(as_text=True))] == [events[2]["id"]]


def test_a_bad_last_event_id_or_from_is_a_song_error(catalog, token):
    client = admin_client(catalog, token)
    body = assert_song_error(
        client.get("/events", headers={"Last-Event-ID": "x.y"}), 400, "malformed.parameter"
    )
    assert "is not an event id" in body["message"]
    ahead = client.get("/events", headers={"Last-Event-ID": "90.90.91.91.0"})
    assert "ahead of the catalog" in assert_song_error(ahead, 400, "malformed.parameter")["message"]
    assert_song_error(client.get("/events?from=yesterday"), 400, "malformed.parameter")
    assert_song_error(client.get("/events?limit=many"), 400, "malformed.parameter")


def read_event(stream, deadline: float) -> dict:
    """Read lines until one whole event with data, or fail at the deadline."""
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = stream.readline().decode()
        if line == "\n" and any(x.startswith("data: ") for x in lines):
            return parse("".join(lines) + "\n")[0]
        if line == "\n":
            lines = []
        else:
            lines.append(line)
    raise AssertionError("no event before the deadline")


def test_a_live_stream_on_a_real_server_gets_new_commits_and_a_full_server_says_503(
    catalog,
    payloads,
    no_leaked_threads,
):
    # events_public: the stream needs no token (a site that wants it open)
    server = ApiServer(app_for(catalog, public=True, sse_max_clients=1), "127.0.0.1", 0, threads=3)
    thread = threading.Thread(target=server.run, name="songlake-test-server")
    thread.start()
    try:
        with urllib.request.urlopen(server.url + "/events", timeout=10) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            assert stream.readline() == b"retry: 3000\n"
            try:
                urllib.request.urlopen(server.url + "/events", timeout=10)
                raise AssertionError("expected a 503")
            except urllib.error.HTTPError as exc:
                with exc:
                    assert exc.code == 503
                    assert json.load(exc)["errorId"] == "service.unavailable"
            aid = catalog.submit(payloads.variant_call(), STUDY)
            committed = time.monotonic()
            event = read_event(stream, time.monotonic() + 10)
            assert (event["data"]["analysisId"], event["data"]["action"]) == (aid, "CREATE")
            assert time.monotonic() - committed < 5
    finally:
        server.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_stream_needs_a_token_and_a_study_token_sees_only_its_study(catalog, payloads, token):
    catalog.create_study({"studyId": "OTHER", "name": "another study"})
    mine = [catalog.submit(payloads.variant_call(), STUDY) for _ in range(2)]
    theirs = catalog.submit(payloads.variant_call("OTHER"), "OTHER")
    catalog.suppress("OTHER", theirs)
    mine.append(catalog.submit(payloads.variant_call(), STUDY))
    catalog.suppress(STUDY, mine[0])
    client = app_for(
        catalog,
        tokens=(
            "reader   PROGRAMDATA-ABC123.READ\n"
            "writer   PROGRAMDATA-OTHER.WRITE\n"
            "nobody   song.READ PROGRAMDATA-.READ\n"
        ),
    ).test_client()

    denied = assert_song_error(client.get("/events?from=0"), 401, "unauthorized.token")
    assert "Bearer" in denied["message"]
    assert_song_error(
        client.get("/events?from=0", headers=bearer("not-a-token")), 401, "unauthorized.token"
    )
    assert_song_error(
        client.get("/events?from=0", headers=bearer("nobody")), 403, "forbidden.token"
    )

    def seen(who: str, query: str = "from=0", **headers: str) -> list[dict]:
        answer = client.get(f"/events?{query}", headers={**bearer(who), **headers})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return parse(answer.get_data(as_text=True))

    reader = seen("reader", "from=0&limit=4")
    assert [(e["data"]["analysisId"], e["data"]["action"]) for e in reader] == [
        (mine[0], "CREATE"),
        (mine[1], "CREATE"),
        (mine[2], "CREATE"),
        (mine[0], "SUPPRESS"),
    ]
    assert {e["data"]["studyId"] for e in reader} == {STUDY}
    writer = seen("writer", "from=0&limit=2")
    assert [(e["data"]["analysisId"], e["data"]["action"]) for e in writer] == [
        (theirs, "CREATE"),
        (theirs, "SUPPRESS"),
    ]
    # Last-Event-ID resumes right after the event, other studies' events passed over
    resumed = seen("reader", "limit=2", **{"Last-Event-ID": reader[1]["id"]})
    assert [e["id"] for e in resumed] == [reader[2]["id"], reader[3]["id"]]
    everything = seen(token, "from=0&limit=6")
    assert len(everything) == 6
    assert [e["id"] for e in everything if e["data"]["studyId"] == STUDY] == [
        e["id"] for e in reader
    ]
