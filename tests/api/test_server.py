"""Against a real waitress server on 127.0.0.1: concurrent lifecycle requests share commits and
keep one consistent history, and publish keeps the server answering while it checks storage."""

from __future__ import annotations

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from api.analyses import COMMITTER
from api.auth import ensure_admin_token
from api.server import ApiServer
from catalog.catalog import Catalog
from catalog.store import LocalObjectStore
from tests.api.conftest import running
from tests.conftest import STUDY


class Http:
    """One keep-alive connection, as a Song client holds it."""

    def __init__(self, server: ApiServer, token: str | None) -> None:
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        self.conn.request(method, path, body=data, headers=self.headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)

    def close(self) -> None:
        self.conn.close()


def _token(catalog: Catalog) -> str:
    return ensure_admin_token(catalog.settings)[0].read_text().strip()


def test_concurrent_publish_and_suppress_keep_one_history(
    catalog, payloads, upload, no_leaked_threads
):
    token = _token(catalog)
    rounds = []
    for _ in range(3):
        payload = payloads.variant_call(samples=[payloads.sample(f"s{len(rounds)}")])
        analysis_id = catalog.submit(payload, STUDY)
        upload(analysis_id, payload)
        rounds.append(analysis_id)
    with running(catalog) as (server, _):
        for analysis_id in rounds:
            actions = ["publish", "suppress", "publish", "unpublish", "publish", "suppress"] * 2
            barrier = threading.Barrier(len(actions))

            def act(
                action: str, aid: str = analysis_id, barrier: threading.Barrier = barrier
            ) -> int:
                client = Http(server, token)
                try:
                    barrier.wait()
                    status, _ = client("PUT", f"/studies/{STUDY}/analysis/{action}/{aid}")
                    return status
                finally:
                    client.close()

            with ThreadPoolExecutor(len(actions)) as pool:
                statuses = list(pool.map(act, actions))
            assert set(statuses) <= {200, 400}
            assert 200 in statuses
            doc = catalog.get_analysis(STUDY, analysis_id)
            history = doc["analysisStateHistory"]
            assert len(history) == statuses.count(200)
            assert history[0]["initialState"] == "UNPUBLISHED"
            for before, after in zip(history, history[1:], strict=False):
                assert after["initialState"] == before["updatedState"]
                assert after["updatedAt"] > before["updatedAt"]
            assert doc["analysisState"] == history[-1]["updatedState"]
            assert "SUPPRESSED" in [h["updatedState"] for h in history]
            first = next(i for i, h in enumerate(history) if h["updatedState"] == "SUPPRESSED")
            assert all(h["updatedState"] == "SUPPRESSED" for h in history[first:])
            # another process reading the tables sees the same history
            fresh = Catalog(catalog.settings).get_analysis(STUDY, analysis_id)
            assert fresh["analysisStateHistory"] == history
            assert fresh["analysisState"] == doc["analysisState"]


def test_concurrent_publishes_share_commits(catalog, payloads, upload, no_leaked_threads):
    token = _token(catalog)
    ids = []
    for n in range(24):
        payload = payloads.variant_call(samples=[payloads.sample(f"s{n}")])
        analysis_id = catalog.submit(payload, STUDY)
        upload(analysis_id, payload)
        ids.append(analysis_id)
    history_version = catalog.tables.version("analysis_state_history")
    with running(catalog, threads=24) as (server, app):
        barrier = threading.Barrier(len(ids))

        def publish(aid: str) -> tuple[int, Any]:
            client = Http(server, token)
            try:
                barrier.wait()
                return client("PUT", f"/studies/{STUDY}/analysis/publish/{aid}")
            finally:
                client.close()

        with ThreadPoolExecutor(len(ids)) as pool:
            answers = list(pool.map(publish, ids))
        committer = app.extensions[COMMITTER]
    assert [a[0] for a in answers] == [200] * len(ids)
    assert [a[1]["message"] for a in answers] == [
        f"AnalysisId {aid} successfully published" for aid in ids
    ]
    assert committer.largest_batch > 1
    commits = catalog.tables.version("analysis_state_history") - history_version
    assert commits == committer.batches < len(ids)
    assert catalog.count_analyses(STUDY, ["PUBLISHED"]) == len(ids)


class SlowStore(LocalObjectStore):
    """A local store whose existence checks wait for a go-ahead, like a slow S3 endpoint."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.go = threading.Event()

    def exists(self, object_id: str) -> bool:
        self.entered.set()
        assert self.go.wait(30), "the test never let the storage check finish"
        return super().exists(object_id)


def test_publish_keeps_the_server_answering(catalog, payloads, upload, no_leaked_threads):
    token = _token(catalog)
    payload = payloads.variant_call()
    analysis_id = catalog.submit(payload, STUDY)
    upload(analysis_id, payload)
    store = SlowStore(catalog.settings.objects_dir)
    slow = Catalog(catalog.settings, store=store)
    object_id = slow.analysis_files(STUDY, analysis_id)[0]["objectId"]
    with running(slow, threads=4) as (server, _):
        result: dict[str, Any] = {}

        def publish() -> None:
            client = Http(server, token)
            try:
                result["answer"] = client("PUT", f"/studies/{STUDY}/analysis/publish/{analysis_id}")
            finally:
                client.close()

        publisher = threading.Thread(target=publish)
        publisher.start()
        try:
            assert store.entered.wait(10)
            client = Http(server, None)
            try:
                # Score's callbacks while Song waits on Score, and any other read
                assert client("GET", f"/entities/{object_id}")[1]["gnosId"] == analysis_id
                status, doc = client("GET", f"/studies/{STUDY}/analysis/{analysis_id}")
                assert status == 200 and doc["analysisState"] == "UNPUBLISHED"
                assert client("GET", "/isAlive") == (200, True)
            finally:
                client.close()
            assert publisher.is_alive()  # still checking storage
        finally:
            store.go.set()
            publisher.join(timeout=30)
    assert result["answer"][0] == 200, result
    assert slow.get_analysis(STUDY, analysis_id)["analysisState"] == "PUBLISHED"
