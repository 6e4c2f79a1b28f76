"""Portal search's paging: early pages select their rows instead of sorting every row, and give
the same order as a full sort, ties on the numeric key broken by the full id."""

from __future__ import annotations

from catalog.catalog import SubmitItem
from catalog.read.search import Filters
from tests.conftest import STUDY


def test_early_pages_match_the_full_order_with_ties_on_every_key(catalog, payloads):
    # 64 ids sharing their first 8 bytes in groups, registered in one batch (one createdAt)
    ids = [f"abcdefg{g}-0000-4000-8000-{n:012d}" for g in "hij" for n in range(21, 0, -1)]
    ids += ["abcdefga-0000-4000-8000-000000000000"]
    items = [
        SubmitItem(payloads.variant_call(samples=[payloads.sample(f"s{i}")]), STUDY, analysis_id=a)
        for i, a in enumerate(ids)
    ]
    assert all(r.ok for r in catalog.submit_batch(items))
    index = catalog.search_index()
    every = Filters(states=("UNPUBLISHED",))
    for sort in ("analysisId", "createdAt"):
        for descending in (False, True):
            whole = index.analyses(every, sort=sort, descending=descending, limit=1000).ids
            assert whole == sorted(ids, reverse=descending)  # createdAt ties: by the id
            for offset in range(8):  # (offset + limit) * 8 < 64: the selecting path
                page = index.analyses(
                    every, sort=sort, descending=descending, limit=3, offset=offset
                )
                assert page.ids == whole[offset : offset + 3] and page.total == len(ids)
    assert index.analyses(Filters(), limit=2).ids == sorted(ids)[:2]  # no filter at all
