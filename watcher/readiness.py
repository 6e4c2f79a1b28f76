"""Is a sidecar ready? It is when it parses and every file it lists is present with the declared
``fileSize`` and ``fileMd5sum``.

``check`` runs in the hashing pool and returns a ``Verdict``:

    ready      parsed, every file verified: register it
    stage      verified except files of at least ``stage_min_bytes``, which are verified while
               they are copied into object storage (each byte read once, limits.md B1)
    pending    some files are missing or still short: wait for their events (or the timeout)
    rejected   a problem the writer must fix: errors file (every problem at once)
    unsettled  looks incomplete and was written moments ago without a close event: look again
    unchanged  this exact content is already registered: make sure upload and receipt are done
    noop       already registered, uploaded, receipt present
    gone       no such regular file (deleted, moved away, a directory)

A problem is *transient* (unsettled, not rejected) only when the file involved was modified less
than ``settle`` seconds ago and the trigger was not that file's own close or rename: writers that
pre-allocate or write in several passes then get their close event before any verdict sticks.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from catalog.errors import (
    FileNotFound,
    PayloadParsing,
    StudyIdMismatch,
    StudyIdMissing,
    problem,
)
from catalog.model import parse_payload
from catalog.settings import Settings

from .hashcache import HashCache
from .layout import (
    Folder,
    data_file_path,
    fingerprint,
    folder_link_problem,
    is_regular,
    receipt_path,
    symlink_problem,
)
from .ledger import Known
from .scanner import stat_key


@dataclass(frozen=True)
class Rules:
    """The readiness settings, taken once from ``Settings``."""

    max_bytes: int
    max_depth: int
    settle: float
    pending_timeout: float
    stage_min_bytes: int

    @classmethod
    def from_settings(cls, s: Settings) -> Rules:
        return cls(
            max_bytes=s.max_payload_bytes,
            max_depth=s.max_payload_depth,
            settle=s.watch_settle,
            pending_timeout=s.watch_pending_timeout,
            stage_min_bytes=s.watch_stage_min_bytes,
        )


@dataclass(frozen=True)
class Trigger:
    """Why a sidecar is looked at: ``reason`` and the file whose event caused it."""

    reason: str  # closed | created | scan | timer | ingest | retry | study
    path: str | None = None

    @property
    def force(self) -> bool:
        return self.reason == "ingest"

    def final_for(self, path: str) -> bool:
        """True when the writer is known to be done with ``path`` (close / rename / ingest)."""
        return self.reason == "ingest" or (self.reason == "closed" and self.path == path)


@dataclass
class FileCheck:
    index: int
    name: str
    path: str
    size: int
    md5: str
    status: str  # ok | stage | missing | incomplete | transient | bad
    stat: tuple[int, int, int] | None = None
    problem: dict[str, Any] | None = None
    mtime: float = 0.0


@dataclass
class Verdict:
    path: str
    folder: Folder
    trigger: Trigger
    kind: str
    row: Known | None
    fingerprint: tuple[int, int, int] | None = None
    sha256: str | None = None
    raw: bytes | None = None
    payload: dict[str, Any] | None = None
    study_id: str | None = None
    files: list[FileCheck] = field(default_factory=list)
    error_id: str | None = None
    message: str | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)
    since: float | None = None
    recheck_at: float | None = None
    analysis_id: str | None = None
    file_dependent: bool = False
    staged: list[str] = field(default_factory=list)  # objectIds copied in before registering
    files_checked: bool = True  # False: an update of the path's analysis (files are immutable)

    def marked(self, status: str, *, analysis_id: str | None, **more: Any) -> dict[str, Any]:
        """The ledger columns that put this sidecar in ``status``: its folder, study, content
        hash and stat (a stat not taken leaves the row's as it was), its analysis, then ``more``."""
        cols: dict[str, Any] = {
            "folder": self.folder.path,
            "study_id": self.study_id,
            "status": status,
            "sha256": self.sha256,
            "analysis_id": analysis_id,
        }
        if self.fingerprint is not None:
            cols["size"], cols["mtime_ns"], cols["inode"] = self.fingerprint
        cols.update(more)
        return cols

    def reject(self, error_id: str, message: str, problems: list[dict[str, Any]]) -> Verdict:
        self.kind = "rejected"
        self.error_id = error_id
        self.message = message
        self.problems = problems
        return self

    @property
    def waits_on(self) -> dict[str, tuple[int, int, int] | None]:
        """Data files whose change should trigger another look, with the stat seen."""
        return {f.path: f.stat for f in self.files if f.path and f.status != "ok"}


def _p(error_id: str, pointer: str, rule: str, message: str) -> dict[str, Any]:
    return {"errorId": error_id, **problem(pointer, rule, message)}


def check(
    path: str,
    folder: Folder,
    trigger: Trigger,
    row: Known | None,
    rules: Rules,
    cache: HashCache,
) -> Verdict:
    """Look at one sidecar and its files (never raises for a bad sidecar: returns a verdict)."""
    now = time.time()
    v = Verdict(path, folder, trigger, "gone", row)
    st = _stat_sidecar(v)
    if st is None:
        return v  # gone, or a symbolic link leaving the folder (rejected)
    raw = _read_sidecar(v, st, rules)
    if raw is None:
        return v  # over the size limit (rejected)
    if _content_registered(v):
        return v  # noop or unchanged
    payload = _parse_sidecar(v, raw, st, rules, now)
    if payload is None:
        return v  # unsettled or rejected
    problems = _study_problems(v, payload)
    if _updates_its_analysis(v, problems):
        return v  # ready, or rejected for its study
    v.files = _check_files(v, payload, rules, cache, now)
    return _classify(v, problems, rules, now)


def _stat_sidecar(v: Verdict) -> os.stat_result | None:
    """The sidecar's stat (through a symbolic link that stays in the folder), its fingerprint and
    study folder noted; None when it is no regular file (gone) or a link leaving the folder."""
    try:
        lst = os.lstat(v.path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    st = lst
    if stat.S_ISLNK(lst.st_mode):
        bad = symlink_problem(v.folder, v.path, "", "The sidecar")
        if bad is not None:
            v.reject(
                "file.symlink.outside", bad["message"], [{"errorId": "file.symlink.outside", **bad}]
            )
            return None
        try:
            st = os.stat(v.path)
        except FileNotFoundError:
            return None
        except OSError as exc:  # a link loop
            _not_a_file(v, lst, f"The sidecar cannot be read: {exc.strerror}")
            return None
    if stat.S_ISDIR(st.st_mode):
        return None
    if not is_regular(st):  # a FIFO would block the reader, a socket cannot be read
        _not_a_file(v, lst, "The sidecar is not a regular file")
        return None
    v.fingerprint = fingerprint(st)
    if v.folder.study_from_folder:
        v.study_id = v.folder.study_of(v.path)
    return st


def _not_a_file(v: Verdict, lst: os.stat_result, message: str) -> None:
    v.fingerprint = fingerprint(lst)
    if v.folder.study_from_folder:
        v.study_id = v.folder.study_of(v.path)
    error_id = PayloadParsing.error_id
    v.reject(error_id, message, [_p(error_id, "", "regularFile", message)])


def _read_sidecar(v: Verdict, st: os.stat_result, rules: Rules) -> bytes | None:
    """The sidecar's bytes, hashed; None (rejected) when it is over the size limit."""
    if st.st_size > rules.max_bytes:
        msg = (
            f"Unable to read the input payload: it is {st.st_size:,} bytes, over the limit of "
            f"{rules.max_bytes:,} bytes"
        )
        error_id = PayloadParsing.error_id
        v.reject(error_id, msg, [_p(error_id, "", "maxBytes", msg)])
        return None
    with open(v.path, "rb") as f:  # as large as stat said (not a max_bytes buffer), then the rest
        raw = f.read(st.st_size + 1)
        if len(raw) > st.st_size:  # it grew since
            raw += f.read(rules.max_bytes + 1 - len(raw))
    v.raw = raw
    v.sha256 = hashlib.sha256(raw).hexdigest()
    return raw


def _content_registered(v: Verdict) -> bool:
    """True (noop or unchanged) when this very content is registered at this path."""
    row = v.row
    if row is None or row.status != "registered" or row.sha256 != v.sha256:
        return False
    receipt = os.path.exists(receipt_path(v.path))
    v.kind = "noop" if (receipt and row.uploaded and not v.trigger.force) else "unchanged"
    v.study_id = row.study_id
    v.analysis_id = row.analysis_id
    return True


def _parse_sidecar(
    v: Verdict, raw: bytes, st: os.stat_result, rules: Rules, now: float
) -> dict[str, Any] | None:
    """The payload; None when it does not parse: unsettled while the sidecar may still be being
    written, else rejected."""
    try:
        payload = parse_payload(raw, max_bytes=rules.max_bytes, max_depth=rules.max_depth)
    except PayloadParsing as exc:
        young = now - st.st_mtime_ns / 1e9 < rules.settle
        if young and not v.trigger.final_for(v.path):
            v.kind = "unsettled"
            v.recheck_at = st.st_mtime_ns / 1e9 + rules.settle
            return None
        v.reject(exc.error_id, exc.message, [{"errorId": exc.error_id, **p} for p in exc.problems])
        return None
    v.payload = payload
    return payload


def _study_problems(v: Verdict, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The sidecar's study: its study folder's, which the payload must name, or (outside study
    folders) the payload's own; the problems with it."""
    problems: list[dict[str, Any]] = []
    declared = payload.get("studyId")
    if v.folder.study_from_folder:
        if v.study_id is None:
            problems.append(
                _p(
                    StudyIdMismatch.error_id,
                    "/studyId",
                    "studyFolder",
                    "A sidecar must sit in a study folder: "
                    + os.path.join(v.folder.path, "<studyId>", "…"),
                )
            )
        elif declared != v.study_id:
            problems.append(
                _p(
                    StudyIdMismatch.error_id,
                    "/studyId",
                    "studyFolder",
                    f"The sidecar is in the folder of study '{v.study_id}' but its studyId is "
                    f"'{declared}'",
                )
            )
    elif isinstance(declared, str) and declared:
        v.study_id = declared
    else:
        problems.append(
            _p(
                StudyIdMissing.error_id,
                "/studyId",
                "required",
                "The studyId in the payload is missing",
            )
        )
    return problems


def _updates_its_analysis(v: Verdict, problems: list[dict[str, Any]]) -> bool:
    """True (ready, or rejected for ``problems``) when the path has an analysis already.

    A changed sidecar of a registered analysis can only update its dynamic data; its files are
    already in storage (and may have been archived), so they are not looked for."""
    row = v.row
    if (
        row is None
        or not row.analysis_id
        or row.status not in ("registered", "rejected", "pending")
    ):
        return False
    v.files_checked = False
    v.analysis_id = row.analysis_id
    if problems:
        v.reject(problems[0]["errorId"], _summary(problems), problems)
    else:
        v.kind = "ready"
    return True


def _check_files(
    v: Verdict, payload: dict[str, Any], rules: Rules, cache: HashCache, now: float
) -> list[FileCheck]:
    out: list[FileCheck] = []
    files = payload.get("files")
    if not isinstance(files, list):
        return out  # the schema reports it
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("fileName"), str):
            continue
        name, size, md5 = f["fileName"], f.get("fileSize"), f.get("fileMd5sum")
        target, bad = data_file_path(v.folder, v.path, i, name)
        if bad is not None:
            out.append(
                FileCheck(
                    i,
                    name,
                    "",
                    0,
                    "",
                    "bad",
                    problem={"errorId": "file.name.outside.folder", **bad},
                )
            )
            continue
        if not isinstance(size, int) or isinstance(size, bool) or not isinstance(md5, str):
            continue  # the schema reports it; nothing to compare against
        if not 0 <= size < 2**63:
            continue  # no file has that size: the schema check refuses it at once (no waiting)
        fc = FileCheck(i, name, target, size, md5.lower(), "ok")
        out.append(fc)
        _check_one(v, fc, rules, cache, now)
    return out


def _check_one(v: Verdict, fc: FileCheck, rules: Rules, cache: HashCache, now: float) -> None:
    pointer = f"/files/{fc.index}"
    try:
        lst = os.lstat(fc.path)
        st = lst
        bad = folder_link_problem(v.path, fc.path, f"{pointer}/fileName", f"'{fc.name}'")
        if bad is None and stat.S_ISLNK(lst.st_mode):
            bad = symlink_problem(v.folder, fc.path, f"{pointer}/fileName", f"'{fc.name}'")
        if bad is not None:
            # the stat seen is kept, so that only a change of the link looks again (no hot loop)
            fc.stat = stat_key(fc.path)
            fc.status, fc.problem = "bad", {"errorId": "file.symlink.outside", **bad}
            return
        if stat.S_ISLNK(lst.st_mode):
            st = os.stat(fc.path)
    except (FileNotFoundError, NotADirectoryError):
        fc.status = "missing"
        fc.problem = _p(
            FileNotFound.error_id,
            f"{pointer}/fileName",
            "missing",
            f"'{fc.name}' is not in the sidecar's folder",
        )
        return
    except OSError as exc:  # a link loop, a name too long: nothing a wait would fix
        fc.stat = stat_key(fc.path)
        fc.status = "bad"
        fc.problem = _p(
            "file.not.regular",
            f"{pointer}/fileName",
            "regularFile",
            f"'{fc.name}' cannot be read as a file: {exc.strerror}",
        )
        return
    fc.stat = fingerprint(st)
    fc.mtime = st.st_mtime_ns / 1e9
    if not is_regular(st):
        fc.status = "bad"
        fc.problem = _p(
            "file.not.regular",
            f"{pointer}/fileName",
            "regularFile",
            f"'{fc.name}' is not a regular file",
        )
        return
    settling = now - fc.mtime < rules.settle and not v.trigger.final_for(fc.path)
    if st.st_size < fc.size:
        fc.status = "incomplete"
        fc.problem = _p(
            "file.incomplete",
            f"{pointer}/fileSize",
            "incomplete",
            f"'{fc.name}' has {st.st_size:,} of its declared {fc.size:,} bytes",
        )
        return
    if st.st_size > fc.size:
        fc.status = "transient" if settling else "bad"
        fc.problem = _p(
            "mismatching.file.size",
            f"{pointer}/fileSize",
            "fileSize",
            f"'{fc.name}' has {st.st_size:,} bytes but the sidecar declares {fc.size:,}",
        )
        return
    digest = cache.cached(fc.path, st)
    if digest is None and fc.size >= rules.stage_min_bytes:
        fc.status = "stage"
        return
    if digest is None:
        digest = cache.md5(fc.path, st)
    if digest is None:  # changed while it was read: still being written
        fc.status = "incomplete"
        fc.problem = _p(
            "file.incomplete", f"{pointer}/fileSize", "incomplete", f"'{fc.name}' is still changing"
        )
        return
    if digest != fc.md5:
        fc.status = "transient" if settling else "bad"
        fc.problem = _p(
            "mismatching.file.md5sum",
            f"{pointer}/fileMd5sum",
            "fileMd5sum",
            f"'{fc.name}' has md5 {digest} but the sidecar declares {fc.md5}",
        )


def _classify(v: Verdict, problems: list[dict[str, Any]], rules: Rules, now: float) -> Verdict:
    by_status: dict[str, list[FileCheck]] = {}
    for fc in v.files:
        by_status.setdefault(fc.status, []).append(fc)
    waiting = by_status.get("missing", []) + by_status.get("incomplete", [])
    bad = [fc.problem for fc in by_status.get("bad", []) if fc.problem]
    v.file_dependent = bool(waiting or by_status.get("bad") or by_status.get("transient"))
    if problems or bad:
        found = problems + bad + [fc.problem for fc in waiting if fc.problem]
        return v.reject(found[0]["errorId"], _summary(found), found)
    if by_status.get("transient"):
        v.kind = "unsettled"
        v.recheck_at = max(fc.mtime for fc in by_status["transient"]) + rules.settle
        return v
    if waiting:
        row = v.row
        same = row is not None and row.status == "pending" and row.sha256 == v.sha256
        v.since = row.since if same and row is not None and row.since else now
        v.problems = [fc.problem for fc in waiting if fc.problem]
        if now - v.since >= rules.pending_timeout:
            hours = rules.pending_timeout / 3600
            names = ", ".join(f"'{fc.name}' ({fc.status})" for fc in waiting)
            return v.reject(
                v.problems[0]["errorId"],
                f"Gave up waiting after {hours:g} h for {names}",
                v.problems,
            )
        v.kind = "pending"
        return v
    v.kind = "stage" if by_status.get("stage") else "ready"
    return v


def _summary(found: list[dict[str, Any]]) -> str:
    first = found[0]["message"]
    return first if len(found) == 1 else f"{first} (and {len(found) - 1} more problems)"
