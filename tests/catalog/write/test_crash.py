"""Crash safety: a batch is invisible until its analyses commit, a retry re-uses its IDs, and a
kill -9 at any point leaves a consistent catalog (DESIGN invariant 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalog import Catalog, SubmitItem, sql
from catalog.model import now
from catalog.settings import load_settings
from catalog.write.registration import ORDER
from catalog.write.validation import Planner
from tests.conftest import REPO


def payload(i: int, study: str = "ABC123") -> dict:
    md5 = f"{i:032x}"
    return {
        "studyId": study,
        "analysisType": {"name": "variantCall"},
        "experiment": {"variantCallingTool": "t", "matchedNormalSampleSubmitterId": "n"},
        "samples": [
            {
                "submitterSampleId": f"SA{i}",
                "sampleType": "Total DNA",
                "matchedNormalSubmitterSampleId": None,
                "specimen": {
                    "submitterSpecimenId": f"SP{i}",
                    "specimenType": "Normal",
                    "specimenTissueSource": "Blood derived",
                    "tumourNormalDesignation": "Normal",
                },
                "donor": {"submitterDonorId": f"DO{i // 2}", "gender": "Female"},
            }
        ],
        "files": [
            {
                "fileName": f"f{i}.bam",
                "fileSize": 10 + i,
                "fileMd5sum": md5,
                "fileAccess": "open",
                "fileType": "BAM",
                "dataType": "reads",
            }
        ],
    }


def counts(catalog: Catalog) -> dict[str, int]:
    q = (
        "SELECT (SELECT count(*) FROM analyses), (SELECT count(*) FROM files), "
        "(SELECT count(*) FROM samples), (SELECT count(*) FROM donors)"
    )
    _, rows = sql.run(catalog.tables, q)
    return dict(zip(["analyses", "files", "samples", "donors"], rows[0], strict=True))


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    cat = Catalog.init(load_settings(tmp_path / "root"))
    cat.create_study({"studyId": "ABC123"})
    return cat


def test_children_without_their_analysis_are_invisible_and_a_retry_reuses_ids(
    catalog: Catalog,
) -> None:
    aid = "0b3f5a5e-8a43-4d6b-9a55-4a4f2a9d8f10"
    plan = Planner(catalog.model, catalog.registry).plan(
        payload(1), "ABC123", aid, created_at=now()
    )
    # the crash: every child table committed, the analyses commit never happened
    for name in ORDER[:-1]:
        catalog.tables.append(name, plan.rows[name])

    reopened = Catalog(catalog.settings)
    assert aid not in reopened.model.analyses
    assert reopened.model.donors == {} and reopened.model.files == {}
    assert counts(reopened) == {"analyses": 0, "files": 0, "samples": 0, "donors": 0}
    assert reopened.orphans(min_age_seconds=0) == {name: [aid] for name in ORDER[:-1]}

    result = reopened.submit_batch([SubmitItem(payload(1), "ABC123", analysis_id=aid)])[0]
    assert result.ok, result.error
    doc = reopened.get_analysis("ABC123", aid)
    assert doc["files"][0]["objectId"] == plan.rows["files"][0]["object_id"]
    assert doc["samples"][0]["sampleId"] == plan.rows["samples"][0]["sample_id"]
    assert counts(reopened) == {"analyses": 1, "files": 1, "samples": 1, "donors": 1}


def test_repair_removes_orphans_but_not_committed_rows(catalog: Catalog) -> None:
    kept = catalog.submit(payload(1), "ABC123")
    plan = Planner(catalog.model, catalog.registry).plan(
        payload(2), "ABC123", "9e4b7a1c-7f2e-4c1d-8b0a-2f6e5d4c3b2a", created_at=now()
    )
    for name in ORDER[:-1]:
        catalog.tables.append(name, plan.rows[name])
    assert catalog.orphans(min_age_seconds=3600) == {}  # too young: may still be committing
    deleted = catalog.repair(min_age_seconds=0)
    assert deleted == {"donors": 1, "specimens": 1, "samples": 1, "files": 1, "analysis_samples": 1}
    assert catalog.orphans(min_age_seconds=0) == {}
    assert catalog.tables.read("files").num_rows == 1
    assert Catalog(catalog.settings).get_analysis("ABC123", kept)["files"]


WRITER = """
import sys
from catalog import Catalog, SubmitItem
from catalog.settings import load_settings
from tests.catalog.write.test_crash import payload
cat = Catalog(load_settings({root!r}))
start = int(sys.argv[1])
for b in range(1000):
    base = start + b * 25
    cat.submit_batch([SubmitItem(payload(base + i), "ABC123") for i in range(25)])
    print(base, flush=True)
"""


@pytest.mark.parametrize("kill_after", [0.15, 0.6, 1.3])
def test_kill_9_mid_batch_leaves_a_consistent_catalog(
    catalog: Catalog, tmp_path: Path, kill_after: float
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(catalog.settings.root)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), "0"], stdout=subprocess.PIPE, env=env, cwd=REPO
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # the catalog is open and one batch is in
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()

    after = Catalog(catalog.settings)
    n = len(after.model.analyses)
    assert n > 0 and n % 25 == 0  # whole batches only
    c = counts(after)
    assert c["analyses"] == n and c["files"] == n and c["samples"] == n
    for aid, rec in after.model.analyses.items():
        doc = after.get_analysis(rec.study_id, aid)
        assert len(doc["files"]) == 1 and len(doc["samples"]) == 1
    # the catalog keeps working: the next batch registers, ids continue cleanly
    again = after.submit_batch([SubmitItem(payload(10_000_000 + i), "ABC123") for i in range(5)])
    assert all(r.ok for r in again)
    after.repair(min_age_seconds=0)
    assert after.orphans(min_age_seconds=0) == {}
    assert counts(Catalog(catalog.settings))["analyses"] == n + 5
