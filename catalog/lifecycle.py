"""The analysis lifecycle: which transitions are allowed, and what each appends to history.

    UNPUBLISHED --publish--> PUBLISHED --unpublish--> UNPUBLISHED
    any state   --suppress-> SUPPRESSED

Unpublish from SUPPRESSED is refused as Song refuses it, and, unlike Song's bug #638, so is publish
from SUPPRESSED: a suppressed analysis stays withdrawn. Re-publishing and no-op transitions are
allowed and recorded, as in Song.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import Internal, NotFound, StateTransitionRefused, StorageCheckFailed
from .store.base import ObjectStore
from .store.layout import ObjectSpec, is_object_id

ACTIONS = {"publish": "PUBLISHED", "unpublish": "UNPUBLISHED", "suppress": "SUPPRESSED"}

MESSAGES = {
    "publish": "AnalysisId {id} successfully published",
    "unpublish": "AnalysisId {id} successfully unpublished",
    "suppress": "AnalysisId {id} was suppressed",
}


@dataclass(frozen=True)
class Transition:
    """One requested state change."""

    study_id: str
    analysis_id: str
    action: str
    actor: str | None = None
    reason: str | None = None
    ignore_undefined_md5: bool = False


def target_state(action: str) -> str:
    try:
        return ACTIONS[action]
    except KeyError:
        raise ValueError(f"unknown lifecycle action {action!r}") from None


def check_allowed(analysis_id: str, current: str, action: str) -> str:
    """The state after `action`, or StateTransitionRefused."""
    target = target_state(action)
    if current == "SUPPRESSED" and action in ("publish", "unpublish"):
        raise StateTransitionRefused(
            f"Cannot change the analysis state for analysisId '{analysis_id}' from "
            f"'{current}' to '{target}'",
            error_id="suppressed.state.transition",
            analysis_id=analysis_id,
        )
    return target


def history_row(t: Transition, initial: str, updated: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "analysis_id": t.analysis_id,
        "study_id": t.study_id,
        "initial_state": initial,
        "updated_state": updated,
        "updated_at": at,
        "actor": t.actor,
        "reason": t.reason,
    }


def message(action: str, analysis_id: str) -> str:
    return MESSAGES[action].format(id=analysis_id)


# -- Song's publish-time storage check (song-api.md §5, steps 3-7) -----------------------------

_SONG_OBJECT_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9\-_]{1,34}[a-zA-Z0-9]")


_MD5_RE = re.compile(r"[a-fA-F0-9]{32}")


def _validate_download_response(raw: Mapping[str, Any]) -> list[str]:
    errors = []
    oid = raw.get("objectId")
    if oid is None:
        errors.append("#: required key [objectId] not found")
    elif not isinstance(oid, str) or not _SONG_OBJECT_ID_RE.fullmatch(oid):
        errors.append(f"#/objectId: string [{oid}] does not match the objectId pattern")
    size = raw.get("objectSize")
    if size is None:
        errors.append("#: required key [objectSize] not found")
    elif not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        errors.append(f"#/objectSize: {size} is not an integer greater than 0")
    md5 = raw.get("objectMd5")
    if md5 is not None and (not isinstance(md5, str) or not _MD5_RE.fullmatch(md5)):
        errors.append(f"#/objectMd5: [{md5}] is neither null nor a 32-character hex string")
    return errors


def verify_for_publish(
    store: ObjectStore,
    analysis_id: str,
    files: Sequence[Mapping[str, Any]],
    *,
    ignore_undefined_md5: bool = False,
) -> None:
    """Song's storage checks before publishing, in Song's order; the first failure raises."""
    if not files:
        raise Internal(
            f"The analysis with analysisId '{analysis_id}' is missing files and is therefore "
            "corrupted. It should contain at least 1 file",
            error_id="analysis.missing.files",
            analysis_id=analysis_id,
            object_ids=[],
        )
    ids = [str(f.get("objectId")) for f in files]

    missing = [oid for oid in ids if not (is_object_id(oid) and store.exists(oid))]
    if missing:
        raise StorageCheckFailed(
            "The following storage objectIds must be uploaded to the storage server before the "
            f"analysisId {analysis_id} can be published: {','.join(missing)}",
            error_id="missing.storage.objects",
            analysis_id=analysis_id,
            object_ids=missing,
        )

    stored: list[tuple[int, str | None]] = []  # (objectSize, objectMd5) per file
    specs: dict[str, ObjectSpec] = {}
    for oid in ids:
        raw = store.read_meta(oid)
        if raw is None:
            raise NotFound(
                f"The object with objectId '{oid}' does not exist in the storage server",
                error_id="storage.object.not.found",
                analysis_id=analysis_id,
                object_ids=[oid],
            )
        problems = _validate_download_response(raw)
        if problems:
            raise Internal(
                f"The validation of the storage download response for objectId '{oid}' failed "
                f"with the following errors: {'; '.join(problems)}",
                error_id="invalid.storage.download.response",
                analysis_id=analysis_id,
                object_ids=[oid],
            )
        stored.append((raw["objectSize"], raw.get("objectMd5")))
        try:
            specs[oid] = ObjectSpec.from_json(raw)
        except (KeyError, TypeError, ValueError):  # Song ignores parts; so does the blob check
            specs[oid] = ObjectSpec(oid, raw["objectSize"], raw.get("objectMd5"))

    bad_sizes = [
        oid
        for oid, f, (size, _) in zip(ids, files, stored, strict=True)
        if f.get("fileSize") != size
    ]
    if bad_sizes:
        raise StorageCheckFailed(
            "The following file objectIds have mismatching object sizes in the storage server: "
            f"[{' , '.join(bad_sizes)}]. The analysisId '{analysis_id}' cannot be published "
            "until they all match.",
            error_id="mismatching.storage.object.sizes",
            analysis_id=analysis_id,
            object_ids=bad_sizes,
        )

    undefined = [oid for oid, (_, md5) in zip(ids, stored, strict=True) if not md5]
    bad_md5 = [
        oid
        for oid, f, (_, md5) in zip(ids, files, stored, strict=True)
        if md5 and f.get("fileMd5sum") != md5
    ]
    if bad_md5 or (undefined and not ignore_undefined_md5):
        msg = ""
        if ignore_undefined_md5:
            msg = "[WARNING]: Ignoring objectIds with an undefined MD5 checksum. "
        msg += "Found files with a mismatching md5 checksum in the storage server. "
        if undefined:
            msg += "IGNORED objectIds " if ignore_undefined_md5 else "ObjectIds "
            msg += f"with an undefined md5 checksum({len(undefined)}): [{' , '.join(undefined)}]. "
        if bad_md5:
            msg += (
                f"ObjectIds with a defined and mismatching md5 checksum({len(bad_md5)}): "
                f"[{' , '.join(bad_md5)}]. "
            )
        msg += (
            f"The analysisId '{analysis_id}' cannot be published until all files with an "
            "undefined checksum are ignored and ones with a defined checksum are matching"
        )
        offending = bad_md5 + ([] if ignore_undefined_md5 else undefined)
        raise StorageCheckFailed(
            msg,
            error_id="mismatching.storage.object.checksums",
            analysis_id=analysis_id,
            object_ids=offending,
            undefined_md5_object_ids=undefined,
            mismatching_md5_object_ids=bad_md5,
        )

    # Beyond Song, which trusts the .meta alone: the blob must be there and agree with it (size;
    # on S3 also md5chksum and ETag), so an object damaged or replaced after upload is refused.
    for oid in ids:
        found = store.blob_problem(oid, specs[oid])
        if found is not None:
            error_id, reason = found
            raise StorageCheckFailed(
                f"The storage object '{oid}' does not match its object specification: {reason}. "
                f"The analysisId '{analysis_id}' cannot be published until it is uploaded again",
                error_id=error_id,
                analysis_id=analysis_id,
                object_ids=[oid],
            )

