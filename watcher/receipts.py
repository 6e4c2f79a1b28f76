"""The outcome files next to a sidecar, always written whole or not at all (newfiles.write_file).

    <name>.song.receipt.json   analysisId, studyId, state, analysis type and version, analysis
                               version, objectId and upload status per file, times
    <name>.song.errors.json    every problem: errorId, JSON pointer, rule, plain message, schema

A new outcome file is a nameless file hard-linked into place. Replacing one needs a temporary
name: it is made in ``<root>/state/tmp`` when that is on the same file system as the sidecar (so
the inbox sees a single rename, not three events), else beside the sidecar under a hidden name no
watcher takes for a sidecar. Outcome files are derived data: the ledger and the catalog are the
truth, and a restart or ``songlake ingest`` rewrites them, so they are not fsynced.
"""

from __future__ import annotations

import json
import os
from typing import Any

from catalog.errors import SonglakeError, problem
from catalog.model import now_iso, utc_iso
from catalog.store.newfiles import write_file

from .layout import TMP_PREFIX, errors_path, receipt_path


class OutcomeWriter:
    """Writes receipts and errors files; ``tmp_dir`` is preferred for temporary files."""

    def __init__(self, tmp_dir: str | os.PathLike[str] | None = None) -> None:
        self.tmp_dir = os.fspath(tmp_dir) if tmp_dir is not None else None
        if self.tmp_dir is not None:
            os.makedirs(self.tmp_dir, exist_ok=True)

    def write_json(self, target: str, doc: dict[str, Any]) -> None:
        """Write ``target`` whole or not at all. A new file is hard-linked into place, so the
        inbox sees one create event; a rename would be a move event, and watchdog matches every
        move against its whole queue of pending events (quadratic in a burst of receipts)."""
        # a name that is not UTF-8 is written as the escape JSON reads back
        data = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode(
            "utf-8", "backslashreplace"
        )
        write_file(
            target,
            data,
            durable=False,  # derived data: rewritten on restart, not worth an fsync each
            staging_dir=self.tmp_dir or os.path.dirname(target),
            tmp_prefix=TMP_PREFIX,
        )

    def write_receipt(self, sidecar: str, doc: dict[str, Any]) -> None:
        """Write the receipt, then remove a stale errors file (success wins)."""
        self.write_json(receipt_path(sidecar), doc)
        try:
            os.unlink(errors_path(sidecar))
        except FileNotFoundError:
            pass

    def write_errors(self, sidecar: str, doc: dict[str, Any]) -> None:
        self.write_json(errors_path(sidecar), doc)


def problems_of(err: SonglakeError) -> list[dict[str, Any]]:
    """Every problem of an error, each tagged with the error id; at least one."""
    found = err.problems or [problem("", err.error_id, err.message)]
    return [{"errorId": p.get("errorId", err.error_id), **p} for p in found]


def tagged(error_id: str, problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"errorId": p.get("errorId", error_id), **p} for p in problems]


def errors_doc(
    *,
    sidecar: str,
    sha256: str | None,
    study_id: str | None,
    error_id: str,
    message: str,
    problems: list[dict[str, Any]],
    analysis_id: str | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "sidecar": os.path.basename(sidecar),
        "sidecarSha256": sha256,
        "status": "rejected",
        "studyId": study_id,
        "errorId": error_id,
        "message": message,
        "problems": problems,
        "writtenAt": now_iso(),
    }
    if analysis_id is not None:
        doc["analysisId"] = analysis_id
        doc["note"] = (
            f"The sidecar stays registered as analysis {analysis_id} (see the receipt); only "
            "this change was refused."
        )
    return doc


def receipt_doc(
    *,
    sidecar: str,
    sha256: str | None,
    analysis: dict[str, Any],
    uploads: dict[str, Any],
) -> dict[str, Any]:
    """The receipt from an analysis summary (``analysis_summary``) and per-objectId uploads."""
    files = []
    for f in analysis["files"]:
        entry = dict(f)
        entry["upload"] = uploads.get(f["objectId"], {"status": "pending"})
        files.append(entry)
    return {
        "sidecar": os.path.basename(sidecar),
        "sidecarSha256": sha256,
        "analysisId": analysis["analysisId"],
        "studyId": analysis["studyId"],
        "state": analysis["state"],
        "analysisType": analysis["analysisType"],
        "analysisVersion": analysis["analysisVersion"],
        "createdAt": analysis["createdAt"],
        "updatedAt": analysis["updatedAt"],
        "files": files,
        "receiptWrittenAt": now_iso(),
    }


def analysis_summary(model: Any, analysis_id: str) -> dict[str, Any]:
    """What a receipt says about an analysis, from the catalog's read model (no table scan)."""
    rec = model.analyses[analysis_id]
    files = []
    for oid in list(rec.object_ids):
        f = model.files[oid]
        files.append({"fileName": f[4], "objectId": f[0], "fileSize": f[5], "fileMd5sum": f[7]})
    return {
        "analysisId": rec.analysis_id,
        "studyId": rec.study_id,
        "state": rec.state,
        "analysisType": {"name": rec.type_name, "version": rec.type_version},
        "analysisVersion": rec.version,
        "createdAt": utc_iso(rec.created_at),
        "updatedAt": utc_iso(rec.updated_at),
        "files": files,
    }
