"""Object storage (issue 4): upload throughput, and `storage verify` over 100,000 objects.

1. One 2 GiB file of random bytes, warm in the page cache, measured in the same run:
   raw md5 (hashlib, 1 MiB reads, as md5_file), `md5sum`, `cp` to the same disk, then
   LocalObjectStore.put_file and S3ObjectStore.put_file into moto on loopback (a separate
   process: bench/motos3.py), plus boto3's own `upload_file` to the same moto as its ceiling.
   Each round runs every contender once, each after an os.sync() (nothing dirty left to write
   back by the contender before it); the best of the rounds counts. Target: each store
   >= 70 % of the slower of raw md5 and cp.
2. A catalog with 100,000 registered files (50,000 analyses x 2 small files, through
   Catalog.submit_batch) whose objects are seeded into moto (blob with md5chksum + the .meta
   songlake writes, straight into moto's backend); then 10 objects are damaged over real S3
   calls (5 .meta deleted, 5 blobs overwritten) and `storage verify` (no rehash) runs: the library
   call in this process and the CLI in a subprocess. Target <= 60 s; it must find exactly the 10.

    .venv/bin/python bench/storage.py [--size-mib 2048] [--rounds 2] [--objects 100000]
                                      [--skip-upload] [--skip-verify]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    REPO,
    RESULTS_DIR,
    Timer,
    fmt_table,
    machine,
    payload,
    write_result,
)

MIB = 1024 * 1024
BUCKET = "score.data"
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
UPLOAD_TARGET = 0.70
VERIFY_TARGET_S = 60.0


class Moto:
    """bench/motos3.py in a subprocess on a free port."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "motos3.py"), "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("ready"):
            raise RuntimeError(f"moto did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                max_pool_connections=16,
            ),
        )

    def seed(self, items: list[dict[str, Any]]) -> int:
        import urllib.request

        body = "\n".join(json.dumps(i) for i in items).encode()
        req = urllib.request.Request(f"{self.url}/_seed", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=600) as response:
            return json.loads(response.read())["seeded"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def s3_store(url: str) -> Any:
    from catalog.store.s3 import S3ObjectStore

    return S3ObjectStore(bucket=BUCKET, endpoint_url=url, region="us-east-1")


# --- 1. upload throughput ----------------------------------------------------------------------


def make_file(path: Path, size: int) -> str:
    rng = random.Random(4)
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = rng.randbytes(min(64 * MIB, left))
            h.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def mib_s(size: int, seconds: float) -> float:
    return round(size / MIB / seconds, 1)


def bench_upload(work: Path, size_mib: int, rounds: int, moto: Moto | None) -> dict[str, Any]:
    from catalog.store import LocalObjectStore
    from catalog.store.hashing import md5_file

    src = work / "big.bin"
    size = size_mib * MIB
    print(f"writing {size_mib} MiB of random bytes ...", flush=True)
    md5 = make_file(src, size)
    md5_file(src)  # warm the page cache
    client = moto.client() if moto is not None else None
    if client is not None:
        client.create_bucket(Bucket=BUCKET)
    runs: dict[str, list[float]] = {}

    def settle() -> None:
        """Each contender starts with nothing dirty: the source just written and the copies of
        earlier contenders would otherwise be written back while it runs."""
        os.sync()

    def record(name: str, seconds: float) -> None:
        runs.setdefault(name, []).append(mib_s(size, seconds))
        print(f"  {name:<22} {mib_s(size, seconds):>8.1f} MiB/s", flush=True)

    for r in range(rounds):
        print(f"round {r + 1}", flush=True)
        settle()
        with Timer() as t:
            assert md5_file(src)[0] == md5
        record("raw md5 (hashlib)", t.seconds)
        settle()
        with Timer() as t:
            subprocess.run(["md5sum", str(src)], check=True, capture_output=True)
        record("md5sum", t.seconds)
        dst = work / "copy.bin"
        settle()
        with Timer() as t:
            subprocess.run(["cp", str(src), str(dst)], check=True)
        record("cp", t.seconds)
        dst.unlink()
        settle()
        with Timer() as t:  # durable, as the store is: cp, then fsync of the copy
            subprocess.run(["cp", str(src), str(dst)], check=True)
            subprocess.run(["sync", str(dst)], check=True)
        record("cp + sync", t.seconds)
        dst.unlink()
        for name, part_md5 in (("local put_file", False), ("local put_file, part md5", True)):
            local = LocalObjectStore(work / f"objects-{r}", part_md5=part_md5)
            settle()
            with Timer() as t:
                local.put_file(str(uuid.uuid4()), src, expected_md5=md5, expected_size=size)
            record(name, t.seconds)
            shutil.rmtree(work / f"objects-{r}")
        if moto is None:
            continue
        assert client is not None
        store = s3_store(moto.url)
        oid = str(uuid.uuid4())
        settle()
        with Timer() as t:
            store.put_file(oid, src, expected_md5=md5, expected_size=size)
        record("s3 put_file (moto)", t.seconds)
        store.delete(oid)
        from boto3.s3.transfer import TransferConfig

        settle()
        with Timer() as t:
            client.upload_file(
                str(src),
                BUCKET,
                f"raw/{oid}",
                Config=TransferConfig(multipart_chunksize=20 * MIB, max_concurrency=4),
            )
        record("boto3 upload_file", t.seconds)
        client.delete_object(Bucket=BUCKET, Key=f"raw/{oid}")
    best = {name: max(values) for name, values in runs.items()}
    slower = min(best["raw md5 (hashlib)"], best["cp"])
    src.unlink()
    return {
        "size_mib": size_mib,
        "rounds": runs,
        "best_mib_s": best,
        "baseline_mib_s": slower,
        "local_ratio": round(best["local put_file"] / slower, 3),
        "local_ratio_vs_cp_sync": round(best["local put_file"] / best["cp + sync"], 3),
        "s3_ratio": round(best["s3 put_file (moto)"] / slower, 3) if moto else None,
        "s3_vs_boto3_upload_file": (
            round(best["s3 put_file (moto)"] / best["boto3 upload_file"], 3) if moto else None
        ),
        "target_ratio": UPLOAD_TARGET,
    }


# --- 2. verify over N objects --------------------------------------------------------------------


def content(k: int, j: int) -> bytes:
    return f"songlake bench object {k}/{j}\n".encode() * (3 + (k * 7 + j) % 40)


def build_catalog(root: Path, n_objects: int) -> None:
    from catalog import Catalog, SubmitItem
    from catalog.settings import load_settings

    root.mkdir(parents=True)
    settings = load_settings(root)  # the local store here; the S3 settings come before verify
    catalog = Catalog.init(settings)
    catalog.create_study({"studyId": "BENCH"})
    analyses = n_objects // 2
    for start in range(0, analyses, 1000):
        items = []
        for k in range(start, min(start + 1000, analyses)):
            doc = payload("BENCH", k)
            for j, f in enumerate(doc["files"]):
                data = content(k, j)
                f["fileSize"] = len(data)
                f["fileMd5sum"] = hashlib.md5(data, usedforsecurity=False).hexdigest()
            items.append(SubmitItem(doc, "BENCH"))
        results = catalog.submit_batch(items)
        bad = [r.error for r in results if not r.ok]
        if bad:
            raise RuntimeError(f"registration failed: {bad[0]}")
        print(f"  registered {min(start + 1000, analyses)} analyses", end="\r", flush=True)
    print()


def bench_files(catalog: Any) -> list[dict[str, Any]]:
    files = []
    for rec in catalog.model.analyses.values():
        k = int(json.loads(rec.data)["workflow"]["runId"].rsplit("-", 1)[1])
        for oid in rec.object_ids:
            j = 1 if catalog.model.files[oid][4].endswith(".tbi") else 0  # file order of payload()
            files.append({"oid": oid, "data": content(k, j)})
    return files


def seed(moto: Moto, store: Any, files: list[dict[str, Any]]) -> None:
    from catalog.store import ObjectSpec, part_plan

    batch: list[dict[str, Any]] = []
    for f in files:
        data = f["data"]
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        b64 = base64.b64encode(bytes.fromhex(md5)).decode()
        parts = tuple(
            p.__class__(p.part_number, p.part_size, p.offset, md5) for p in part_plan(len(data))
        )
        meta = store._meta_bytes(ObjectSpec(f["oid"], len(data), md5, parts))
        batch.append(
            {
                "bucket": BUCKET,
                "key": f"data/{f['oid']}",
                "data": base64.b64encode(data).decode(),
                "metadata": {"md5chksum": b64},
            }
        )
        batch.append(
            {
                "bucket": BUCKET,
                "key": f"data/{f['oid']}.meta",
                "data": base64.b64encode(meta).decode(),
            }
        )
        if len(batch) >= 20_000:
            moto.seed(batch)
            batch = []
    if batch:
        moto.seed(batch)


def bench_verify(work: Path, n_objects: int, moto: Moto) -> dict[str, Any]:
    from catalog.catalog import Catalog
    from catalog.settings import load_settings

    client = moto.client()
    client.create_bucket(Bucket=BUCKET)
    root = REPO / "bench" / "data" / f"storage-catalog-{n_objects}"
    if not (root / "tables").exists():  # kept between runs: registering is not what is measured
        shutil.rmtree(root, ignore_errors=True)
        print(f"registering {n_objects} files ...", flush=True)
        with Timer() as t_reg:
            build_catalog(root, n_objects)
    else:
        t_reg = Timer()
        t_reg.seconds = 0.0
    (root / "songlake.toml").write_text(
        f'object_store = "s3"\ns3_bucket = "{BUCKET}"\ns3_endpoint_url = "{moto.url}"\n'
        's3_region = "us-east-1"\n'
    )
    catalog = Catalog(load_settings(root))
    files = bench_files(catalog)
    print(f"seeding {len(files)} objects into moto ...", flush=True)
    with Timer() as t_seed:
        seed(moto, catalog.store, files)
    damaged = sorted(f["oid"] for f in files[:10])
    for oid in damaged[:5]:
        client.delete_object(Bucket=BUCKET, Key=f"data/{oid}.meta")
    for oid in damaged[5:]:
        client.put_object(Bucket=BUCKET, Key=f"data/{oid}", Body=b"damaged" * 3)
    print("verifying (library) ...", flush=True)
    with Timer() as t_open:
        catalog = Catalog(load_settings(root))
    with Timer() as t_lib:
        report = catalog.verify_storage()
    found = sorted({f.object_id for f in report.findings})
    print(f"  {t_lib.seconds:.1f} s, {report.meta_read} .meta read, findings {report.counts()}")
    print("verifying (CLI) ...", flush=True)
    env = dict(os.environ, **CREDS)
    with Timer() as t_cli:
        cli = subprocess.run(
            [
                str(Path(sys.executable).parent / "songlake"),
                "--root",
                str(root),
                "storage",
                "verify",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            env=env,
        )
    print(f"  {t_cli.seconds:.1f} s, exit {cli.returncode}: {cli.stdout.splitlines()[:1]}")
    return {
        "objects": len(files),
        "keys_in_bucket": 2 * len(files) + 1,
        "register_s": round(t_reg.seconds, 1),
        "seed_s": round(t_seed.seconds, 1),
        "catalog_open_s": round(t_open.seconds, 2),
        "verify_library_s": round(t_lib.seconds, 2),
        "verify_cli_s": round(t_cli.seconds, 2),
        "cli_exit": cli.returncode,
        "cli_output_head": cli.stdout.splitlines()[:8],
        "meta_read": report.meta_read,
        "findings": report.counts(),
        "found_exactly_the_damaged": found == damaged,
        "target_s": VERIFY_TARGET_S,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--skip-upload", action="store_true")
    ap.add_argument("--skip-verify", action="store_true")
    ap.add_argument("--skip-s3", action="store_true", help="upload: the local store only")
    ap.add_argument("--workdir", help="scratch folder (default: a temporary one under bench/data)")
    args = ap.parse_args()
    os.environ.update(CREDS)
    base = Path(args.workdir) if args.workdir else REPO / "bench" / "data"
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="storage-", dir=base))
    result: dict[str, Any] = {"machine": machine()}
    try:
        if not args.skip_upload:
            moto = None if args.skip_s3 else Moto()
            try:
                result["upload"] = bench_upload(work, args.size_mib, args.rounds, moto)
            finally:
                if moto is not None:
                    moto.stop()
        if not args.skip_verify:
            moto = Moto()
            try:
                result["verify"] = bench_verify(work, args.objects, moto)
            finally:
                moto.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    if "upload" in result:
        u = result["upload"]
        for name, value in u["best_mib_s"].items():
            rows.append([f"{u['size_mib']} MiB: {name}", f"{value} MiB/s", ""])
        rows.append(["local / min(md5, cp)", f"{u['local_ratio']:.0%}", ">= 70 %"])
        rows.append(["local / (cp + sync)", f"{u['local_ratio_vs_cp_sync']:.0%}", ""])
        if u["s3_ratio"] is not None:
            rows.append(["s3 (moto) / min(md5, cp)", f"{u['s3_ratio']:.0%}", ">= 70 %"])
            rows.append(
                ["s3 put_file / boto3 upload_file", f"{u['s3_vs_boto3_upload_file']:.0%}", ""]
            )
    if "verify" in result:
        v = result["verify"]
        rows.append(
            [f"verify {v['objects']} objects (library)", f"{v['verify_library_s']} s", "<= 60 s"]
        )
        rows.append([f"verify {v['objects']} objects (CLI)", f"{v['verify_cli_s']} s", "<= 60 s"])
        rows.append(["found exactly the 10 damaged", str(v["found_exactly_the_damaged"]), ""])
    print(fmt_table(rows, ["figure", "measured", "target"]))
    name = "storage" if (args.size_mib, args.objects) == (2048, 100_000) else "storage-small"
    previous = RESULTS_DIR / f"{name}.json"
    if previous.exists():  # a run of one part keeps the other part's last figures
        kept = json.loads(previous.read_text())
        result = {**{k: v for k, v in kept.items() if k in ("upload", "verify")}, **result}
    print(f"wrote {write_result(name, result)}")


if __name__ == "__main__":
    main()
