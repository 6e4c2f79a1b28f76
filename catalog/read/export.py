"""Export of resubmittable payloads (song-api.md §9.3) and Score-client manifests (§8)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _clean(obj: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """Drop null and empty values, except the keys in `keep`."""
    return {k: v for k, v in obj.items() if k in keep or (v is not None and v != {} and v != "")}


def payload_from_analysis(doc: dict[str, Any]) -> dict[str, Any]:
    """A payload that resubmits this analysis: no server ids, empty fields dropped."""
    reserved = {
        "analysisId",
        "studyId",
        "analysisState",
        "analysisType",
        "createdAt",
        "updatedAt",
        "firstPublishedAt",
        "publishedAt",
        "analysisStateHistory",
        "samples",
        "files",
    }
    out: dict[str, Any] = {"analysisType": dict(doc["analysisType"]), "studyId": doc["studyId"]}
    out.update({k: v for k, v in doc.items() if k not in reserved})
    samples = []
    for s in doc["samples"]:
        spec = s["specimen"]
        donor = s["donor"]
        samples.append(
            _clean(
                {
                    "submitterSampleId": s["submitterSampleId"],
                    "sampleType": s["sampleType"],
                    "matchedNormalSubmitterSampleId": s["matchedNormalSubmitterSampleId"],
                    "info": s.get("info"),
                    "specimen": _clean(
                        {
                            "submitterSpecimenId": spec["submitterSpecimenId"],
                            "tumourNormalDesignation": spec["tumourNormalDesignation"],
                            "specimenTissueSource": spec["specimenTissueSource"],
                            "specimenType": spec["specimenType"],
                            "info": spec.get("info"),
                        }
                    ),
                    "donor": _clean(
                        {
                            "submitterDonorId": donor["submitterDonorId"],
                            "gender": donor["gender"],
                            "info": donor.get("info"),
                        }
                    ),
                },
                keep=("matchedNormalSubmitterSampleId",),
            )
        )
    out["samples"] = samples
    out["files"] = [
        _clean(
            {
                "fileName": f["fileName"],
                "dataType": f["dataType"],
                "fileSize": f["fileSize"],
                "fileMd5sum": f["fileMd5sum"],
                "fileAccess": f["fileAccess"],
                "fileType": f["fileType"],
                "info": f.get("info"),
            }
        )
        for f in doc["files"]
    ]
    return out


def group_by_study(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Song's export shape: [{studyId, payloads: [...]}, ...] grouped by study."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        groups.setdefault(doc["studyId"], []).append(payload_from_analysis(doc))
    return [{"studyId": study, "payloads": payloads} for study, payloads in groups.items()]


def write_export(
    groups: list[dict[str, Any]], docs: list[dict[str, Any]], out_dir: Path
) -> list[Path]:
    """Write <out>/<studyId>/<analysisId>.json for each exported analysis, as song-client does."""
    written = []
    ids = {doc["analysisId"]: doc["studyId"] for doc in docs}
    by_study: dict[str, list[str]] = {}
    for aid, study in ids.items():
        by_study.setdefault(study, []).append(aid)
    for group in groups:
        folder = out_dir / group["studyId"]
        folder.mkdir(parents=True, exist_ok=True)
        for aid, payload in zip(by_study[group["studyId"]], group["payloads"], strict=True):
            path = folder / f"{aid}.json"
            path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", "utf-8")
            written.append(path)
    return written


def manifest_text(analysis_id: str, files: list[dict[str, Any]], input_dir: Path) -> str:
    """score-client's upload manifest: a header with two tabs, then objectId, path, md5 per file."""
    lines = [f"{analysis_id}\t\t"]
    base = Path(os.path.abspath(input_dir))
    for f in files:
        lines.append(
            f"{f['objectId']}\t{os.path.normpath(base / f['fileName'])}\t{f['fileMd5sum']}"
        )
    return "\n".join(lines) + "\n"
