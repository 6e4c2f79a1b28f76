"""Shared helpers for the benchmarks: payloads, timing, RSS, machine description, results.

The payload generator is deterministic: ``payload(study_id, k)`` is always the same document, so
the bulk loader of ``bench/readmodel.py`` and the registration benchmark describe the same data.
Layout (reference/limits.md B7): every donor has a tumour and a normal specimen with one sample
each; analysis ``k`` of a study is a variantCall on donor ``k // ANALYSES_PER_DONOR``'s two samples,
with a ``.vcf.gz`` and its ``.tbi`` index (unique md5s).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DATA_DIR = BENCH_DIR / "data"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ANALYSES_PER_DONOR = 5
TYPE_NAME = "variantCall"

_TOOLS = ("sanger-wgs", "broad-mutect2", "caveman-pindel")
_GENDERS = ("Female", "Male")
_PLATFORMS = ("ILLUMINA", "ILLUMINA", "BGI")


# --- submitter ids ---------------------------------------------------------------------------


def donor_submitter(d: int) -> str:
    """Donor d's submitterDonorId: 'D' + 7 digits, so 'D00012' matches exactly 100 donors."""
    return f"D{d:07d}"


def specimen_submitter(d: int, tumour: bool) -> str:
    return f"SP{d:07d}-{'T' if tumour else 'N'}"


def sample_submitter(d: int, tumour: bool) -> str:
    return f"SA{d:07d}-{'T' if tumour else 'N'}"


# --- payload pieces (shared by the payload and the bulk loader) ------------------------------


def donor_obj(d: int) -> dict[str, Any]:
    return {"submitterDonorId": donor_submitter(d), "gender": _GENDERS[d % 2]}


def specimen_obj(d: int, tumour: bool) -> dict[str, Any]:
    if tumour:
        return {
            "submitterSpecimenId": specimen_submitter(d, True),
            "specimenType": "Primary tumour",
            "specimenTissueSource": "Solid tissue",
            "tumourNormalDesignation": "Tumour",
        }
    return {
        "submitterSpecimenId": specimen_submitter(d, False),
        "specimenType": "Normal",
        "specimenTissueSource": "Blood derived",
        "tumourNormalDesignation": "Normal",
    }


def sample_obj(d: int, tumour: bool) -> dict[str, Any]:
    return {
        "submitterSampleId": sample_submitter(d, tumour),
        "sampleType": "Total DNA",
        "matchedNormalSubmitterSampleId": sample_submitter(d, False) if tumour else None,
    }


def md5_of(study_id: str, k: int, j: int, salt: str = "") -> str:
    return hashlib.md5(f"{salt}{study_id}/{k}/{j}".encode()).hexdigest()


def file_objs(study_id: str, k: int, salt: str = "") -> list[dict[str, Any]]:
    base = f"{study_id}.run{k:07d}.wgs.snv"
    size = 40_000_000 + (k * 2_654_435_761) % 900_000_000
    return [
        {
            "dataType": "Raw SNV Calls",
            "fileName": f"{base}.vcf.gz",
            "fileSize": size,
            "fileMd5sum": md5_of(study_id, k, 0, salt),
            "fileAccess": "controlled",
            "fileType": "VCF",
            "info": {"dataCategory": "Simple Nucleotide Variation"},
        },
        {
            "dataType": "VCF Index",
            "fileName": f"{base}.vcf.gz.tbi",
            "fileSize": size // 1000 + 17,
            "fileMd5sum": md5_of(study_id, k, 1, salt),
            "fileAccess": "controlled",
            "fileType": "TBI",
            "info": {"dataCategory": "Simple Nucleotide Variation"},
        },
    ]


def dynamic_part(study_id: str, k: int) -> dict[str, Any]:
    """Everything but studyId, analysisType, samples and files (what lands in analyses.data)."""
    d = k // ANALYSES_PER_DONOR
    return {
        "experiment": {
            "variantCallingTool": _TOOLS[k % 3],
            "matchedNormalSampleSubmitterId": sample_submitter(d, False),
            "platform": _PLATFORMS[k % 3],
            "experimentalStrategy": "WGS",
        },
        "workflow": {
            "workflowName": "variant-calling",
            "workflowVersion": f"2.{k % 4}.0",
            "runId": f"wf-{study_id}-{k:07d}",
            "genomeBuild": "GRCh38_hla_decoy_ebv",
        },
    }


def payload(study_id: str, k: int, salt: str = "") -> dict[str, Any]:
    """Analysis k of a study: a ~1.1 KB variantCall payload, 2 samples, 2 files."""
    d = k // ANALYSES_PER_DONOR
    samples = []
    for tumour in (True, False):
        s = sample_obj(d, tumour)
        s["specimen"] = specimen_obj(d, tumour)
        s["donor"] = donor_obj(d)
        samples.append(s)
    return {
        "studyId": study_id,
        "analysisType": {"name": TYPE_NAME},
        **dynamic_part(study_id, k),
        "samples": samples,
        "files": file_objs(study_id, k, salt),
    }


def payload_bytes(study_id: str, k: int, salt: str = "") -> bytes:
    return json.dumps(payload(study_id, k, salt), separators=(",", ":")).encode()


# --- timing ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank-interpolated percentile (q in 0..100)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
    }


def time_calls(fn: Callable[[int], Any], reps: int, warmup: int = 1) -> tuple[list[float], Any]:
    """Call fn(i) warmup + reps times; returns the timings of the reps and the last result."""
    result = None
    for i in range(warmup):
        result = fn(-1 - i)
    out = []
    for i in range(reps):
        t0 = time.perf_counter()
        result = fn(i)
        out.append(time.perf_counter() - t0)
    return out, result


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0


# --- memory ----------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB (10^6 bytes); ru_maxrss is KiB on Linux."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return float("nan")


# --- machine and results ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) * 1024 / 2**30, 1)
    except OSError:
        pass
    versions = {}
    for mod in ("deltalake", "pyarrow", "sortedcontainers", "jsonschema", "fastjsonschema"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing package is just not reported
            versions[mod] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "affinity_cores": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        ),
        "mem_gib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "loadavg_1_5_15": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def fmt_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(out)
