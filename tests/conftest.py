"""Shared fixtures: a real catalog root in tmp_path, payload builders and an uploader."""

from __future__ import annotations

import copy
import hashlib
import itertools
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from catalog.catalog import Catalog
from catalog.settings import Settings, load_settings

STUDY = "ABC123"
REPO = Path(__file__).resolve().parents[1]
#: real-world Song payloads and types beside the repository (tests skip when absent);
#: REALWORLD_FIXTURES points elsewhere (the suite's own test of the skip uses it)
FIXTURES = Path(
    os.environ.get("REALWORLD_FIXTURES") or REPO.parent / "shared" / "fixtures" / "real-world"
)
#: the one-line skip reason: what is missing and how to get it
FIXTURES_MISSING = (
    f"real-world Song fixtures not found at {FIXTURES}: they are AGPL material kept out of this "
    "repository; place the project's shared folder beside your clone (../shared) to run these"
)


def fixtures_present() -> bool:
    """Whether the real-world fixtures are there. CI always has them: with CI=true their
    absence fails the run instead of skipping these tests."""
    present = (FIXTURES / "MANIFEST.json").is_file()
    if not present and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {FIXTURES_MISSING}", pytrace=False)
    return present


@contextmanager
def threads_settle(timeout: float = 10.0) -> Iterator[None]:
    """Fail if threads started inside are still alive `timeout` seconds after it ends."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + timeout
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        leaked[0].join(0.1)
    assert not leaked, [t.name for t in leaked]


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads behind (servers, dispatchers and watchdog observers must
    be stopped and joined)."""
    with threads_settle():
        yield


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Each test sees no SONGLAKE_* variables from outside and leaves os.environ as it found it."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("SONGLAKE_")]:
        del os.environ[key]
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(tmp_path / "root")


@pytest.fixture(scope="session")
def _template_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root made once by init + create study; each test copies it (init costs ~0.3 s)."""
    root = tmp_path_factory.mktemp("template") / "root"
    Catalog.init(Settings(root=root)).create_study({"studyId": STUDY, "name": "test study"})
    return root


@pytest.fixture
def catalog(settings: Settings, _template_root: Path) -> Catalog:
    """A catalog root of this test's own, initialised, with study ABC123."""
    shutil.copytree(_template_root, settings.root)
    return Catalog(settings)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Payloads:
    """Builds valid variantCall payloads whose files have distinct contents (so distinct md5s)
    and remembers every file's bytes, so the files can be written to disk and uploaded."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.contents: dict[str, bytes] = {}  # md5 -> bytes
        self._counter = itertools.count(1)

    def file(self, name: str = "a.vcf.gz", content: bytes | None = None, **extra: Any) -> dict:
        """One file entry; without content the bytes are unique to this call."""
        if content is None:
            content = f"{name} #{next(self._counter)} {uuid.uuid4()}\n".encode()
        digest = md5(content)
        self.contents[digest] = content
        entry = {
            "dataType": "Variant Calling Data",
            "fileName": name,
            "fileSize": len(content),
            "fileMd5sum": digest,
            "fileAccess": "open",
            "fileType": "VCF",
        }
        entry.update(extra)
        return entry

    def sample(
        self,
        sample: str = "s1",
        specimen: str = "sp1",
        donor: str = "d1",
        *,
        gender: str = "Female",
        tumour: bool = True,
        **extra: Any,
    ) -> dict:
        out: dict[str, Any] = {
            "submitterSampleId": sample,
            "sampleType": "Total DNA",
            "matchedNormalSubmitterSampleId": "sample-x24-11a" if tumour else None,
            "specimen": {
                "submitterSpecimenId": specimen,
                "specimenType": "Primary tumour" if tumour else "Normal",
                "specimenTissueSource": "Solid tissue",
                "tumourNormalDesignation": "Tumour" if tumour else "Normal",
            },
            "donor": {"submitterDonorId": donor, "gender": gender},
        }
        out.update(extra)
        return out

    def variant_call(
        self,
        study_id: str = STUDY,
        *,
        samples: list[dict] | None = None,
        files: list[dict] | None = None,
        version: int | None = None,
        **extra: Any,
    ) -> dict:
        atype: dict[str, Any] = {"name": "variantCall"}
        if version is not None:
            atype["version"] = version
        payload: dict[str, Any] = {
            "studyId": study_id,
            "analysisType": atype,
            "experiment": {
                "variantCallingTool": "silver bullet",
                "matchedNormalSampleSubmitterId": "sample-x24-11a",
            },
            "samples": samples if samples is not None else [self.sample()],
            "files": files if files is not None else [self.file()],
        }
        payload.update(extra)
        return copy.deepcopy(payload)

    def write_files(self, payload: dict, folder: Path | None = None) -> Path:
        """Write every file the payload lists into a folder (a fresh one by default)."""
        folder = folder or self.data_dir / uuid.uuid4().hex
        folder.mkdir(parents=True, exist_ok=True)
        for f in payload["files"]:
            (folder / f["fileName"]).write_bytes(self.contents[f["fileMd5sum"]])
        return folder


@pytest.fixture
def payloads(tmp_path: Path) -> Payloads:
    return Payloads(tmp_path / "data")


@pytest.fixture
def upload(catalog: Catalog, payloads: Payloads) -> Callable[[str, dict], list[dict]]:
    """Write an analysis' files to disk and upload them into the catalog's object store."""

    def _upload(analysis_id: str, payload: dict) -> list[dict]:
        return catalog.upload(analysis_id, payloads.write_files(payload))

    return _upload


@pytest.fixture
def submitted(catalog: Catalog, payloads: Payloads) -> tuple[str, dict]:
    """One registered (unpublished) variantCall analysis and the payload it came from."""
    payload = payloads.variant_call()
    return catalog.submit(payload, STUDY), payload
