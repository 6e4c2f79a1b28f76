"""Read-side performance at 1,000,000 analyses (issue 2; data set of reference/limits.md B7).

1. Builds a catalog FAST: ``Catalog.init`` and ``create_study`` through the API, then the bulk rows
   written straight into the Delta tables with deltalake (no validation: the point is the read
   side), with the exact ids and row shapes ``Catalog.submit_batch`` produces (``--verify`` checks
   that against the API on a small catalog). 5 studies (one with 60 % of the analyses), 1 donor
   per 5 analyses, 2 specimens and 2 samples per donor, 2 samples and 2 files per analysis, and 0.8
   state history rows per analysis (77 % published, 1 % of those unpublished and 1 % suppressed
   again, 1 % suppressed from UNPUBLISHED).
2. In a fresh subprocess (clean RSS): opens ``Catalog`` (the read-model load), then times GET of
   an analysis, id search by submitterDonorId (500 hits), count by state and deep pages.

    .venv/bin/python bench/readmodel.py [--analyses 1000000] [--reuse DIR] [--verify]

The generated catalog is kept in --reuse DIR (default bench/data/readmodel-<N>/) and reused when it
was built with the same --analyses and generator version; --rebuild forces a new one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402
from deltalake import write_deltalake  # noqa: E402
from deltalake.transaction import CommitProperties  # noqa: E402

from bench.common import (  # noqa: E402
    ANALYSES_PER_DONOR,
    DATA_DIR,
    TYPE_NAME,
    Timer,
    current_rss_mb,
    donor_obj,
    dynamic_part,
    file_objs,
    fmt_table,
    machine,
    payload,
    peak_rss_mb,
    sample_obj,
    specimen_obj,
    summarize_ms,
    write_result,
)

GENERATOR_VERSION = 1
BIG = "BIGSTUDY"
STUDY_SHARES = [(BIG, 0.6), ("STUDY2", 0.1), ("STUDY3", 0.1), ("STUDY4", 0.1), ("STUDY5", 0.1)]
CHUNK = 200_000  # analyses per Delta append
DAY_US = 86_400 * 1_000_000
BASE_US = int(time.mktime((2024, 1, 1, 0, 0, 0, 0, 0, 0))) * 1_000_000
# history kinds per analysis: 0 none, 1 publish, 2 publish+unpublish, 3 publish+suppress, 4 suppress
KIND_SHARES = {1: 0.75, 2: 0.01, 3: 0.01, 4: 0.01}
ALL_STATES = ["PUBLISHED", "UNPUBLISHED", "SUPPRESSED"]
TARGETS_MS = {"get_analysis": 2.0, "search_ids": 25.0, "count": 10.0, "page": 50.0}

_NS = uuid.NAMESPACE_OID.bytes


def uuid5_fast(name: str) -> str:
    """uuid.uuid5(NAMESPACE_OID, name) as a string, without building UUID objects (3x faster)."""
    h = bytearray(hashlib.sha1(_NS + name.encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


# --- building the catalog ---------------------------------------------------------------------


def layout(n: int) -> list[tuple[str, int]]:
    counts = [(sid, int(n * share)) for sid, share in STUDY_SHARES]
    counts[0] = (BIG, n - sum(c for _, c in counts[1:]))
    return counts


class Columns:
    """Column lists for one table, turned into an Arrow table of its exact schema."""

    def __init__(self, name: str) -> None:
        from catalog.tables import SCHEMAS

        self.name = name
        self.schema = SCHEMAS[name]
        self.cols: dict[str, list] = {f.name: [] for f in self.schema}

    def table(self) -> pa.Table:
        arrays = []
        rows = max(len(v) for v in self.cols.values())
        for f in self.schema:
            values = self.cols[f.name]
            if len(values) != rows:  # a column added to the schema that the generator lacks
                if values:
                    raise ValueError(f"{self.name}.{f.name}: {len(values)} values, not {rows}")
                _warn_once(f"{self.name}.{f.name} is not generated: written as nulls")
                values = [None] * rows
            if pa.types.is_timestamp(f.type):  # microseconds since the epoch
                arrays.append(pa.array(values, type=pa.int64()).cast(f.type))
            else:
                arrays.append(pa.array(values, type=f.type))
        return pa.Table.from_arrays(arrays, schema=self.schema).combine_chunks()

    def __len__(self) -> int:
        return max(len(v) for v in self.cols.values())


_WARNED: set[str] = set()


def _warn_once(text: str) -> None:
    if text not in _WARNED:
        _WARNED.add(text)
        print(f"WARNING: {text}; run --verify", file=sys.stderr)


def study_rows(
    study_id: str,
    ks: range,
    aids: list[str],
    created_us: list[int],
    kinds: bytearray,
    rng: random.Random,
    actor: str | None,
) -> dict[str, Columns]:
    """The rows analyses ks of a study add, shaped as validation.Planner.plan shapes them."""
    from catalog.model import FILE_FIELDS, dumps, split_entity

    t = {
        name: Columns(name)
        for name in (
            "donors",
            "specimens",
            "samples",
            "files",
            "analysis_samples",
            "analyses",
            "analysis_state_history",
        )
    }
    dn, sp, sa, fi, asm, an, hi = (t[n].cols for n in t)
    file_info_cache: dict[str, str | None] = {}
    for i, k in enumerate(ks):
        aid = aids[i]
        created = created_us[i]
        d = k // ANALYSES_PER_DONOR
        sample_ids = []
        donor = donor_obj(d)
        donor_id = uuid5_fast(f"{study_id}:{donor['submitterDonorId']}")
        first_use = k % ANALYSES_PER_DONOR == 0  # the analysis that creates the donor
        if first_use:
            for col, v in (
                ("donor_id", donor_id),
                ("study_id", study_id),
                ("submitter_donor_id", donor["submitterDonorId"]),
                ("gender", donor["gender"]),
                ("info", None),
                ("analysis_id", aid),
                ("created_at", created),
            ):
                dn[col].append(v)
        for tumour in (True, False):
            spec = specimen_obj(d, tumour)
            samp = sample_obj(d, tumour)
            spec_id = uuid5_fast(f"{study_id}:{spec['submitterSpecimenId']}")
            samp_id = uuid5_fast(f"{study_id}:{samp['submitterSampleId']}")
            sample_ids.append(samp_id)
            if first_use:
                for col, v in (
                    ("specimen_id", spec_id),
                    ("donor_id", donor_id),
                    ("study_id", study_id),
                    ("submitter_specimen_id", spec["submitterSpecimenId"]),
                    ("tumour_normal_designation", spec["tumourNormalDesignation"]),
                    ("specimen_tissue_source", spec["specimenTissueSource"]),
                    ("specimen_type", spec["specimenType"]),
                    ("info", None),
                    ("analysis_id", aid),
                    ("created_at", created),
                ):
                    sp[col].append(v)
                for col, v in (
                    ("sample_id", samp_id),
                    ("specimen_id", spec_id),
                    ("study_id", study_id),
                    ("submitter_sample_id", samp["submitterSampleId"]),
                    ("sample_type", samp["sampleType"]),
                    ("matched_normal_submitter_sample_id", samp["matchedNormalSubmitterSampleId"]),
                    ("info", None),
                    ("analysis_id", aid),
                    ("created_at", created),
                ):
                    sa[col].append(v)
        for sid in sample_ids:
            asm["analysis_id"].append(aid)
            asm["sample_id"].append(sid)
            asm["study_id"].append(study_id)
            asm["created_at"].append(created)
        for f in file_objs(study_id, k):
            cols, info = split_entity(f, "file", FILE_FIELDS)
            key = repr(sorted(info.items()))
            if key not in file_info_cache:
                file_info_cache[key] = dumps(info) if info else None
            row = {
                "object_id": uuid5_fast(f"{aid}:{cols['file_name']}"),
                "analysis_id": aid,
                "study_id": study_id,
                "version": 1,
                **cols,
                "info": file_info_cache[key],
                "source_path": None,
                "created_at": created,
            }
            for col, v in row.items():
                fi[col].append(v)
        for col, v in (
            ("analysis_id", aid),
            ("study_id", study_id),
            ("version", 1),
            ("analysis_type_name", TYPE_NAME),
            ("analysis_type_version", 1),
            ("data", dumps(dynamic_part(study_id, k))),
            ("created_at", created),
            ("actor", actor),
            ("reason", "submit"),
        ):
            an[col].append(v)
        kind = int(kinds[i])
        if kind:
            events = {
                1: [("UNPUBLISHED", "PUBLISHED")],
                2: [("UNPUBLISHED", "PUBLISHED"), ("PUBLISHED", "UNPUBLISHED")],
                3: [("UNPUBLISHED", "PUBLISHED"), ("PUBLISHED", "SUPPRESSED")],
                4: [("UNPUBLISHED", "SUPPRESSED")],
            }[kind]
            for j, (before, after) in enumerate(events):
                for col, v in (
                    ("event_id", str(uuid.UUID(int=rng.getrandbits(128), version=4))),
                    ("analysis_id", aid),
                    ("study_id", study_id),
                    ("initial_state", before),
                    ("updated_state", after),
                    ("updated_at", created + (j + 1) * DAY_US),
                    ("actor", "bench-loader"),
                    ("reason", None),
                ):
                    hi[col].append(v)
    return t


def build(root: Path, n: int, seed: int = 42) -> dict[str, Any]:
    """Create a catalog at root holding n analyses; returns counts and timings."""
    from catalog.catalog import Catalog
    from catalog.model import now
    from catalog.settings import load_settings
    from catalog.tables import DATA_TABLES, to_arrow

    if root.exists():
        shutil.rmtree(root)
    t_start = time.perf_counter()
    settings = load_settings(root)
    cat = Catalog.init(settings)
    if cat.registry.latest_version(TYPE_NAME) != 1:
        raise SystemExit(f"expected {TYPE_NAME} version 1 in a fresh catalog")
    for sid, _ in layout(n):
        cat.create_study({"studyId": sid, "name": f"benchmark study {sid}"})
    tables_dir = Path(settings.tables_dir.url)  # the bench builds a local root
    del cat

    rng = random.Random(seed)
    kinds_all = bytearray(n)
    perm = list(range(n))
    rng.shuffle(perm)
    pos = 0
    for kind, share in KIND_SHARES.items():
        m = int(round(n * share))
        for j in perm[pos : pos + m]:
            kinds_all[j] = kind
        pos += m
    del perm

    counts: dict[str, int] = {}
    gen_s = write_s = 0.0
    g = 0  # global analysis index
    for sid, count in layout(n):
        for start in range(0, count, CHUNK):
            ks = range(start, min(count, start + CHUNK))
            aids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in ks]
            created = [BASE_US + (g + i) * 1000 for i in range(len(ks))]
            t0 = time.perf_counter()
            cols = study_rows(sid, ks, aids, created, kinds_all[g : g + len(ks)], rng, None)
            t1 = time.perf_counter()
            gen_s += t1 - t0
            for name in (
                "donors",
                "specimens",
                "samples",
                "files",
                "analysis_samples",
                "analyses",
                "analysis_state_history",
            ):
                table = cols[name].table()
                if table.num_rows:
                    write_deltalake(str(tables_dir / name), table, mode="append")
                    counts[name] = counts.get(name, 0) + table.num_rows
            write_s += time.perf_counter() - t1
            g += len(ks)
            print(
                f"  {sid}: analyses {ks.start:,}-{ks.stop:,} ({g:,}/{n:,}) "
                f"gen {gen_s:.0f} s, write {write_s:.0f} s",
                flush=True,
            )

    # one commits row recording the bulk load, exactly as TableStore._log_commit does
    from deltalake import DeltaTable

    current = {name: DeltaTable(str(tables_dir / name)).version() for name in DATA_TABLES}
    record = {
        "committed_at": now(),
        "operation": "bench_bulk_load",
        "actor": "bench-loader",
        "rows": sum(counts.values()),
        "table_versions": json.dumps(current, sort_keys=True),
    }
    write_deltalake(
        str(tables_dir / "commits"),
        to_arrow("commits", [record]),
        mode="append",
        commit_properties=CommitProperties(
            custom_metadata={"songlake.table_versions": record["table_versions"]}
        ),
    )
    meta = {
        "generator_version": GENERATOR_VERSION,
        "analyses": n,
        "seed": seed,
        "layout": layout(n),
        "rows": counts,
        "generate_s": gen_s,
        "write_s": write_s,
        "build_s": time.perf_counter() - t_start,
        "disk_mb": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6,
    }
    (root / "bench_meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def verify(n: int = 60) -> None:
    """The bulk rows must equal what Catalog.submit_batch writes for the same payloads and ids."""
    from catalog import Catalog, SubmitItem
    from catalog.settings import load_settings
    from catalog.tables import SCHEMAS

    tmp = Path(tempfile.mkdtemp(prefix="songlake-bench-verify-"))
    try:
        bulk = tmp / "bulk"
        build(bulk, n)
        api = Catalog.init(load_settings(tmp / "api"))
        bulk_cat = Catalog(load_settings(bulk))
        for sid, count in layout(n):
            api.create_study({"studyId": sid, "name": f"benchmark study {sid}"})
            aids = [
                r[0]
                for r in sorted(
                    (
                        (a, rec.created_at)
                        for a, rec in bulk_cat.model.analyses.items()
                        if rec.study_id == sid
                    ),
                    key=lambda x: x[1],
                )
            ]
            items = [SubmitItem(payload(sid, k), sid, analysis_id=aids[k]) for k in range(count)]
            res = api.submit_batch(items)
            bad = [r.error for r in res if not r.ok]
            assert not bad, bad[:3]
        skip = {"created_at", "committed_at"}
        for name in ("donors", "specimens", "samples", "files", "analysis_samples", "analyses"):
            cols = [f.name for f in SCHEMAS[name] if f.name not in skip]
            a = sorted(tuple(r[c] for c in cols) for r in api.tables.read(name).to_pylist())
            b = sorted(tuple(r[c] for c in cols) for r in bulk_cat.tables.read(name).to_pylist())
            assert a == b, f"table {name} differs: {set(a) ^ set(b)}"
            print(f"  verify: {name}: {len(a)} rows identical (ignoring created_at)")
        volatile = {
            "createdAt",
            "updatedAt",
            "firstPublishedAt",
            "publishedAt",
            "analysisStateHistory",
            "analysisState",
        }
        for aid, rec in bulk_cat.model.analyses.items():
            da = {k: v for k, v in api.get_analysis(rec.study_id, aid).items() if k not in volatile}
            db = {
                k: v
                for k, v in bulk_cat.get_analysis(rec.study_id, aid).items()
                if k not in volatile
            }
            assert da == db, (aid, da, db)
        print(
            f"  verify: {len(bulk_cat.model.analyses)} documents identical (ignoring times, "
            "state and history)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- measuring (runs in a fresh subprocess) ---------------------------------------------------


def measure(root: Path, reps_point: int, reps_other: int, seed: int = 7) -> dict[str, Any]:
    """Open the catalog and time the read figures; wall and CPU (thread) time for each call.

    The machine may be shared: CPU time is what the call itself cost, wall time what a caller saw.
    """
    rss_start = current_rss_mb()
    from catalog.catalog import Catalog
    from catalog.settings import load_settings

    rss_imports = current_rss_mb()
    settings = load_settings(root)
    cpu0 = time.process_time()
    with Timer() as t_open:
        cat = Catalog(settings)
    out: dict[str, Any] = {
        "open_s": t_open.seconds,
        "open_cpu_s": time.process_time() - cpu0,
        "loadavg_after_open": os.getloadavg(),
        "rss_mb": {
            "start": rss_start,
            "after_imports": rss_imports,
            "after_open": current_rss_mb(),
            "peak_after_open": peak_rss_mb(),
        },
    }
    m = cat.model
    rng = random.Random(seed)
    out["counts"] = {
        "analyses": len(m.analyses),
        "donors": len(m.donors),
        "specimens": len(m.specimens),
        "samples": len(m.samples),
        "files": len(m.files),
        "read_model_file": str(m.path),
        "by_state": {s: cat.count_analyses(BIG, [s]) for s in ALL_STATES},
    }
    print(
        f"opened in {t_open.seconds:.1f} s (CPU {out['open_cpu_s']:.1f} s): {out['counts']}",
        flush=True,
    )
    results: dict[str, Any] = {}

    def timed(label: str, calls: list, **extra: Any) -> Any:
        """Run each zero-argument call, timing wall and thread CPU; returns the last result."""
        wall, cpu = [], []
        result = None
        for call in calls:
            c0 = time.thread_time()
            t0 = time.perf_counter()
            result = call()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
        stats = summarize_ms(wall)
        cpu_stats = summarize_ms(cpu)
        results[label] = {
            **stats,
            "cpu_p50_ms": cpu_stats["p50_ms"],
            "cpu_p99_ms": cpu_stats["p99_ms"],
            **extra,
        }
        return result

    # GET one analysis by id (random ids over all studies)
    ids = rng.sample(list(m.analyses), min(reps_point, len(m.analyses)))
    doc = cat.get_analysis(m.analyses[ids[0]].study_id, ids[0])
    out["doc_bytes"] = len(json.dumps(doc, separators=(",", ":")))
    timed(
        "get_analysis",
        [(lambda a=a, s=m.analyses[a].study_id: cat.get_analysis(s, a)) for a in ids],
    )

    # id search by submitterDonorId: a 5-digit prefix 'Dnnnnn' = 100 donors = 500 analyses
    big_donors = sum(1 for d in m.donors.values() if d[1] == BIG)
    groups = max(1, big_donors // 100)
    with Timer() as t_first:
        first = cat.search_ids(BIG, submitterDonorId=f"D{0:05d}")
    results["search_first_call_ms"] = t_first.seconds * 1000
    patterns = [f"D{rng.randrange(groups):05d}" for _ in range(reps_other)]
    hits: list[int] = []
    timed(
        "search_ids",
        [(lambda p=p: hits.append(len(cat.search_ids(BIG, submitterDonorId=p)))) for p in patterns],
    )
    results["search_ids"].update(hits_mean=sum(hits) / len(hits), first_hits=len(first))
    timed(
        "search_ids_plus_docs",
        [
            (
                lambda p=p: [
                    cat.get_analysis(BIG, a) for a in cat.search_ids(BIG, submitterDonorId=p)
                ]
            )
            for p in patterns
        ],
    )

    # counts
    reps_count = max(reps_other, 200)
    value = timed("count_published", [lambda: cat.count_analyses(BIG, ["PUBLISHED"])] * reps_count)
    results["count_published"]["value"] = value
    value = timed("count_all_states", [lambda: cat.count_analyses(BIG, ALL_STATES)] * reps_count)
    results["count_all_states"]["value"] = value

    # deep pages (offset 500,000, or the last page when fewer analyses are in those states)
    for label, states in (
        ("page_3_states", ALL_STATES),
        ("page_1_state", ["PUBLISHED"]),
        ("page_2_states", ["PUBLISHED", "UNPUBLISHED"]),
    ):
        total = cat.count_analyses(BIG, states)
        offset = min(500_000, max(0, total - 100))
        page = timed(
            label,
            [(lambda st=states, o=offset: cat.page_analyses(BIG, st, limit=100, offset=o))]
            * reps_other,
            offset=offset,
            total=total,
        )
        results[label]["returned"] = page["currentTotalAnalyses"]
        timed(
            label + "_ids_only",
            [(lambda st=states, o=offset: m.page_ids(BIG, st, o, 100))] * reps_other,
        )
        results[label]["ids_only_p50_ms"] = results.pop(label + "_ids_only")["p50_ms"]

    out["results"] = results
    out["rss_mb"]["peak_end"] = peak_rss_mb()
    out["rss_mb"]["end"] = current_rss_mb()
    out["loadavg_end"] = os.getloadavg()
    return out


# --- driver -----------------------------------------------------------------------------------


def report(meta: dict[str, Any], res: dict[str, Any]) -> str:
    r = res["results"]

    def row(label: str, key: str, target: float | None, extra: str = "") -> list[str]:
        p50, p99 = r[key]["p50_ms"], r[key]["p99_ms"]
        ok = "" if target is None else ("yes" if p50 <= target else "NO")
        return [
            label,
            f"{p50:.3f}",
            f"{p99:.3f}",
            f"{r[key]['cpu_p50_ms']:.3f}",
            f"<= {target:g}" if target else "",
            ok,
            f"n={r[key]['n']} {extra}".strip(),
        ]

    rows = [
        row(
            "GET analysis by id",
            "get_analysis",
            TARGETS_MS["get_analysis"],
            f"doc {res['doc_bytes']} B",
        ),
        row(
            "search submitterDonorId (ids)",
            "search_ids",
            TARGETS_MS["search_ids"],
            f"{r['search_ids']['hits_mean']:.0f} hits; first call "
            f"{r['search_first_call_ms']:.0f} ms",
        ),
        row("search + build the documents", "search_ids_plus_docs", None),
        row(
            "count PUBLISHED in big study",
            "count_published",
            TARGETS_MS["count"],
            f"= {r['count_published']['value']:,}",
        ),
        row("count all states in big study", "count_all_states", TARGETS_MS["count"]),
    ]
    for key, label in (
        ("page_3_states", "page 100, 3 states"),
        ("page_1_state", "page 100, PUBLISHED"),
        ("page_2_states", "page 100, PUBL+UNPUBL"),
    ):
        rows.append(
            row(
                f"{label} @ {r[key]['offset']:,}",
                key,
                TARGETS_MS["page"],
                f"of {r[key]['total']:,}; ids only {r[key]['ids_only_p50_ms']:.3f} ms",
            )
        )
    table = fmt_table(rows, ["figure", "p50 ms", "p99 ms", "cpu p50", "target", "ok", "notes"])
    rss = res["rss_mb"]
    return (
        f"{table}\n\nopen (read-model load): {res['open_s']:.1f} s (CPU "
        f"{res['open_cpu_s']:.1f} s); RSS after open "
        f"{rss['after_open']:,.0f} MB (imports alone {rss['after_imports']:,.0f} MB); peak RSS "
        f"{rss['peak_end']:,.0f} MB\ncatalog: {meta['analyses']:,} analyses, rows "
        f"{meta['rows']}, {meta['disk_mb']:,.0f} MB on disk\nload average (1 min) after "
        f"open {res['loadavg_after_open'][0]:.2f}, at the end {res['loadavg_end'][0]:.2f} "
        f"on {os.cpu_count()} cores"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--analyses", type=int, default=1_000_000)
    ap.add_argument("--reuse", type=Path, help="catalog dir to build once and keep")
    ap.add_argument("--rebuild", action="store_true", help="rebuild even if --reuse DIR matches")
    ap.add_argument("--reps-point", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=50, help="repetitions of search/count/page")
    ap.add_argument(
        "--verify",
        action="store_true",
        help="check the bulk rows against Catalog.submit_batch on a small catalog",
    )
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--measure-only", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--name", help="results file name (default readmodel-<N>)")
    args = ap.parse_args(argv)

    if args.measure_only:
        res = measure(args.measure_only, args.reps_point, args.reps)
        print("RESULT " + json.dumps(res, default=str))
        return 0
    if args.verify:
        verify()
        return 0

    root = args.reuse or DATA_DIR / f"readmodel-{args.analyses}"
    meta_path = root / "bench_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if (
        args.rebuild
        or meta is None
        or meta.get("analyses") != args.analyses
        or meta.get("generator_version") != GENERATOR_VERSION
    ):
        print(f"building a catalog of {args.analyses:,} analyses in {root}", flush=True)
        meta = build(root, args.analyses)
        print(
            f"built in {meta['build_s']:.0f} s (rows {meta['rows']}), {meta['disk_mb']:,.0f} MB",
            flush=True,
        )
    else:
        print(f"reusing {root} ({meta['analyses']:,} analyses)", flush=True)
    if args.build_only:
        return 0

    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--measure-only",
        str(root),
        "--reps-point",
        str(args.reps_point),
        "--reps",
        str(args.reps),
    ]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    lines = proc.stdout.splitlines()
    for line in lines:
        if not line.startswith("RESULT "):
            print(line)
    found = [line for line in lines if line.startswith("RESULT ")]
    if proc.returncode != 0 or not found:
        print(f"measurement subprocess failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    res = json.loads(found[-1][len("RESULT ") :])
    text = report(meta, res)
    print()
    print(text)
    path = write_result(
        args.name or f"readmodel-{args.analyses}",
        {
            "benchmark": "readmodel",
            "machine": machine(),
            "catalog": meta,
            "targets_ms": TARGETS_MS,
            **res,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
