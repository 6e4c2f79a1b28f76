"""What a dispatcher pays before its first message: reading, from version 0, which rows each
commit of analyses, state history and files added (catalog/events/asof.py's Timeline).

Builds a catalog of --analyses analyses (2 files each, batches of 1,000) and one state change
each, then times ``Timeline.advance()`` from scratch in this process and reports the growth of
the peak RSS (the outbox's own caches included).

    .venv/bin/python bench/timeline.py [--analyses 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, payload_bytes, peak_rss_mb, write_result  # noqa: E402
from catalog import Catalog, SubmitItem  # noqa: E402
from catalog.events.asof import Timeline  # noqa: E402
from catalog.events.outbox import Outbox  # noqa: E402
from catalog.settings import load_settings  # noqa: E402
from catalog.write.lifecycle import Transition  # noqa: E402

STUDY = "BENCHTL"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--analyses", type=int, default=100_000)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="songlake-bench-timeline-"))
    try:
        root = tmp / "catalog"
        cat = Catalog.init(load_settings(root))
        cat.create_study({"studyId": STUDY})
        t0 = time.perf_counter()
        for start in range(0, args.analyses, 1000):
            end = min(start + 1000, args.analyses)
            cat.submit_batch(
                [SubmitItem(payload_bytes(STUDY, k), STUDY) for k in range(start, end)]
            )
        ids = sorted(cat.model.analyses)
        for start in range(0, len(ids), 1000):
            cat.change_states(
                [Transition(STUDY, a, "unpublish") for a in ids[start : start + 1000]]
            )
        built = time.perf_counter() - t0
        before = peak_rss_mb()
        tables = root / "tables"
        timeline = Timeline(Outbox(tables))
        t0 = time.perf_counter()
        timeline.advance()
        seconds = time.perf_counter() - t0
        result = {
            "benchmark": "timeline",
            "machine": machine(),
            "analyses": args.analyses,
            "commits": {
                name: Outbox(tables).latest(name)
                for name in ("analyses", "analysis_state_history", "files")
            },
            "catalog_built_s": round(built, 1),
            "advance_s": round(seconds, 2),
            "peak_rss_before_mb": round(before),
            "peak_rss_after_mb": round(peak_rss_mb()),
            "load_average": os.getloadavg()[0],
        }
        path = write_result(f"timeline-{args.analyses}", result)
        print(
            f"{args.analyses:,} analyses: timeline from version 0 in {seconds:.2f} s, peak RSS "
            f"{before:.0f} -> {peak_rss_mb():.0f} MB (load {result['load_average']:.1f}); {path}"
        )
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
