"""Server time of the web console's pages (issue 17: ≤ 200 ms at a million analyses).

Opens a catalog root (the 1M catalog that ``bench/readmodel.py --reuse DIR`` builds, or a small
one made here with ``--small N``), makes the app as ``songlake serve`` does (the inbox reader
included) and times each page through the WSGI app in-process: the server's own time, without the
network. Wall and CPU time per request; the machine may be shared, so the load is printed too.

    .venv/bin/python bench/console.py --root DIR [--reps 20]
    .venv/bin/python bench/console.py --small 2000

Opening the 1M catalog takes ~25 s and ~6 GB RAM; the first search builds its columnar index
(a few seconds, reported as "first overview"). Writes ``console`` into bench/results/. The root
gets the console's session key file in its state folder (nothing else is written).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fmt_table, machine, summarize_ms, write_result  # noqa: E402

LIMIT_MS = 200.0


def small_root(n: int) -> Path:
    """A catalog of `n` registered analyses (through submit_batch), for a quick look."""
    from bench.common import payload
    from catalog.catalog import Catalog, SubmitItem
    from catalog.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="songlake-console-bench-")) / "root"
    cat = Catalog.init(Settings(root=root))
    cat.create_study({"studyId": "BENCH", "name": "bench"})
    for start in range(0, n, 500):
        items = [
            SubmitItem(payload("BENCH", k), "BENCH") for k in range(start, min(n, start + 500))
        ]
        cat.submit_batch(items)
    return root


def measure(root: Path, reps: int) -> dict[str, Any]:
    from catalog.catalog import Catalog
    from catalog.settings import load_settings
    from songlake.serve import make_app

    settings = load_settings(root)
    t0 = time.perf_counter()
    cat = Catalog(settings)
    opened = time.perf_counter() - t0
    client = make_app(cat, settings).test_client()
    t0 = time.perf_counter()
    assert client.get("/ui/").status_code == 200
    first = time.perf_counter() - t0
    rng = random.Random(7)
    ids = list(cat.model.analyses)
    studies = sorted(cat.model.studies)
    donors = [d.submitter_donor_id for d in list(cat.model.donors.values())[:1000]]
    pages = {
        "overview": lambda: "/ui/",
        "analyses (all states, 100 rows)": lambda: "/ui/analyses",
        "analyses by submitterDonorId": lambda: (
            f"/ui/analyses?submitterDonorId={rng.choice(donors)}"
        ),
        "analyses of a study, updatedAt desc, deep page": lambda: (
            f"/ui/analyses?studyId={rng.choice(studies)}&analysisStates=PUBLISHED"
            "&sort=updatedAt&order=desc&offset=50000&limit=100"
        ),
        "analysis": lambda: f"/ui/analyses/{rng.choice(ids)}",
        "inbox (signed out: the redirect)": lambda: "/ui/inbox",
        "versions of a never-updated analysis": lambda: f"/ui/analyses/{rng.choice(ids)}/versions",
    }
    out: dict[str, Any] = {
        "analyses": len(ids),
        "open_s": opened,
        "first_overview_s": first,
        "pages": {},
    }
    for name, path in pages.items():
        wall, cpu = [], []
        page_reps = max(3, reps // 5) if name.startswith("versions") else reps
        for i in range(page_reps + 1):
            url = path()
            w0, c0 = time.perf_counter(), time.thread_time()
            response = client.get(url)
            w, c = time.perf_counter() - w0, time.thread_time() - c0
            assert response.status_code in (200, 303), (url, response.status_code)
            if i:  # the first call of each page warms its template
                wall.append(w)
                cpu.append(c)
        out["pages"][name] = {"wall": summarize_ms(wall), "cpu": summarize_ms(cpu)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, help="a catalog root (e.g. the 1M one)")
    parser.add_argument("--small", type=int, help="build a catalog of N analyses instead")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    root = args.root if args.root else small_root(args.small or 2000)
    try:
        result = measure(root, args.reps)
    finally:
        if not args.root:
            shutil.rmtree(root.parent)
    result["machine"] = machine()
    result["loadavg_after"] = os.getloadavg()
    rows = [
        [
            name,
            f"{r['wall']['p50_ms']:.1f}",
            f"{r['wall']['p90_ms']:.1f}",
            f"{r['cpu']['p50_ms']:.1f}",
            "yes" if r["wall"]["p90_ms"] <= LIMIT_MS else "NO",
        ]
        for name, r in result["pages"].items()
    ]
    print(
        f"{result['analyses']:,} analyses; opened in {result['open_s']:.1f} s; first overview "
        f"{result['first_overview_s']:.2f} s; load {result['machine']['loadavg_1_5_15']}"
    )
    print(fmt_table(rows, ["page", "wall p50 ms", "wall p90 ms", "cpu p50 ms", "<= 200 ms"]))
    print("written to", write_result("console", result))


if __name__ == "__main__":
    main()
