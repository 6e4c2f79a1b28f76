"""The group committer on its own, and the search index's ordering and following of changes."""

from __future__ import annotations

import threading

import pytest

from api.groupcommit import GroupCommitter
from catalog import SubmitItem
from catalog.read.search import Filters
from catalog.write.lifecycle import Transition
from tests.conftest import STUDY


def test_group_committer_batches_in_order_and_answers_everyone():
    batches: list[list[str]] = []
    lock = threading.Lock()

    def apply(transitions):
        with lock:
            batches.append([t.analysis_id for t in transitions])
        return [
            f"done {t.analysis_id}" if t.action == "publish" else ValueError("no")
            for t in transitions
        ]

    committer = GroupCommitter(apply, window=0.01, max_batch=3)
    results: dict[str, object] = {}
    barrier = threading.Barrier(12)

    def call(n: int) -> None:
        barrier.wait()
        action = "publish" if n % 4 else "suppress"
        try:
            results[str(n)] = committer.run(Transition(STUDY, str(n), action))
        except ValueError as exc:
            results[str(n)] = exc

    threads = [threading.Thread(target=call, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(a for b in batches for a in b) == sorted(str(n) for n in range(12))
    assert all(len(b) <= 3 for b in batches) and committer.batches == len(batches) < 12
    for n in range(12):
        if n % 4:
            assert results[str(n)] == f"done {n}"
        else:
            assert isinstance(results[str(n)], ValueError)
    assert committer.stats()["transitions"] == 12


def test_group_committer_hands_a_crash_to_every_waiter():
    def apply(transitions):
        raise RuntimeError("disk full")

    committer = GroupCommitter(apply, window=0)
    with pytest.raises(RuntimeError, match="disk full"):
        committer.run(Transition(STUDY, "a", "publish"))
    with pytest.raises(RuntimeError, match="disk full"):  # and the next request still runs
        committer.run(Transition(STUDY, "b", "publish"))


def test_search_order_breaks_ties_on_the_full_id(catalog, payloads):
    # ids sharing their first 8 bytes: the numeric sort key ties, the full id decides
    ids = [f"abcdefgh-0000-4000-8000-{n:012d}" for n in (5, 1, 9, 3, 7)] + [
        "abcdefga-0000-4000-8000-000000000000",
        "abcdefgi-0000-4000-8000-000000000000",
    ]
    items = [
        SubmitItem(payloads.variant_call(samples=[payloads.sample(f"s{i}")]), STUDY, analysis_id=a)
        for i, a in enumerate(ids)
    ]
    assert all(r.ok for r in catalog.submit_batch(items))
    every = Filters(states=("UNPUBLISHED",))
    for descending in (False, True):
        expected = sorted(ids, reverse=descending)
        for offset in range(len(ids)):
            page = catalog.search_index().analyses(
                every, limit=2, offset=offset, descending=descending
            )
            assert page.ids == expected[offset : offset + 2]
            assert page.total == len(ids)
    # the index follows later changes: a suppressed analysis leaves UNPUBLISHED
    catalog.suppress(STUDY, ids[0])
    assert catalog.search_index().analyses(Filters(states=("SUPPRESSED",))).ids == [ids[0]]
    assert ids[0] not in catalog.search_index().analyses(every, limit=100).ids
