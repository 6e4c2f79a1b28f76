"""The analysis lifecycle: which transitions are allowed, what each appends to history, and the
storage check a publish must pass first.

    UNPUBLISHED --publish--> PUBLISHED --unpublish--> UNPUBLISHED
    any state   --suppress-> SUPPRESSED

``Lifecycle.change_states`` applies many transitions with one history commit (the API groups
concurrent requests into one); the storage checks of publishes run before the write lock is taken,
since they read object storage.

Unpublish from SUPPRESSED is refused as Song refuses it, and, unlike Song's bug #638, so is publish
from SUPPRESSED: a suppressed analysis stays withdrawn. Re-publishing and no-op transitions are
allowed and recorded, as in Song.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..errors import (
    AnalysisMissingFiles,
    IncorrectTypeVersion,
    InvalidStorageResponse,
    MismatchingObjectChecksum,
    MismatchingObjectSize,
    SonglakeError,
    StateTransitionRefused,
    StorageCheckFailed,
    StorageObjectNotFound,
)
from ..model import now
from ..settings import Settings
from ..store.base import ObjectStore
from ..store.layout import ObjectSpec, is_object_id
from .commit import Committer

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


class Lifecycle:
    """Publish, unpublish and suppress, one at a time or many with one commit."""

    def __init__(self, settings: Settings, committer: Committer, store: ObjectStore) -> None:
        self.settings = settings
        self.committer = committer
        self.model = committer.model
        self.store = store

    def change(self, t: Transition) -> str:
        """One transition: its message, or its error raised."""
        outcome = self.change_states([t])[0]
        if isinstance(outcome, SonglakeError):
            raise outcome
        return outcome

    def change_states(
        self, transitions: Sequence[Transition], *, storage_checked: bool = False
    ) -> list[str | SonglakeError]:
        """Apply many transitions with one history commit; each gets its message or its error.

        With storage_checked, the caller ran ``check_publishable`` on each publish already (the
        API does, in each request's own thread, so the checks of concurrent requests overlap).
        """
        outcomes: list[str | SonglakeError] = [""] * len(transitions)
        # storage checks read object storage: run them before taking the write lock
        refused: dict[int, SonglakeError] = {}
        latest: dict[str, int | None] = {}  # one registry look-up per type for the batch
        for i, t in enumerate(transitions):
            if t.action == "publish" and not storage_checked:
                try:
                    self._check_publishable(t, latest)
                except SonglakeError as exc:
                    refused[i] = exc

        def write() -> None:
            rows: list[dict[str, Any]] = []
            at = now()
            states: dict[str, str] = {}
            for i, t in enumerate(transitions):
                try:
                    if i in refused:
                        raise refused[i]
                    rec = self.model.record(t.study_id, t.analysis_id)
                    current = states.get(t.analysis_id, rec.state)
                    target = check_allowed(t.analysis_id, current, t.action)
                    # distinct times keep several transitions of one analysis in order
                    rows.append(
                        history_row(t, current, target, at + timedelta(microseconds=len(rows)))
                    )
                    states[t.analysis_id] = target
                    outcomes[i] = message(t.action, t.analysis_id)
                except SonglakeError as exc:
                    outcomes[i] = exc
            if rows:
                self.committer.commit(
                    [("analysis_state_history", rows)],
                    operation="change_states",
                    actor=transitions[0].actor if transitions else None,
                )

        self.committer.run(write)
        return outcomes

    def check_publishable(self, t: Transition) -> None:
        """Song's publish checks (state, type version, files in storage with their size and md5);
        raises the first failure."""
        self._check_publishable(t, {})

    def _check_publishable(self, t: Transition, latest_of: dict[str, int | None]) -> None:
        rec = self.model.record(t.study_id, t.analysis_id)
        if rec.state == "SUPPRESSED":
            check_allowed(t.analysis_id, rec.state, "publish")
        if self.settings.enforce_latest:
            if rec.type_name not in latest_of:
                latest_of[rec.type_name] = self.committer.registry.latest_version(rec.type_name)
            latest = latest_of[rec.type_name]
            if latest is not None and rec.type_version != latest:
                raise IncorrectTypeVersion(
                    name=rec.type_name,
                    latest=latest,
                    version=rec.type_version,
                    analysis_id=t.analysis_id,
                )
        with self.model.lock:
            files = [self.model.file_json(f) for f in self.model.files_of(rec)]
        verify_for_publish(
            self.store, t.analysis_id, files, ignore_undefined_md5=t.ignore_undefined_md5
        )


# -- Song's publish-time storage check (song-api.md §5, steps 3-7) -----------------------------

# Song's validation of Score's download response (song-api.md §5 step 5)
_SONG_OBJECT_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9\-_]{1,34}[a-zA-Z0-9]")
_MD5_RE = re.compile(r"[a-fA-F0-9]{32}")


def verify_for_publish(
    store: ObjectStore,
    analysis_id: str,
    files: Sequence[Mapping[str, Any]],
    *,
    ignore_undefined_md5: bool = False,
) -> None:
    """Song's storage checks before publishing, in Song's order; the first failure raises."""
    _require_files(analysis_id, files)
    ids = [str(f.get("objectId")) for f in files]
    _require_stored(store, analysis_id, ids)
    stored = _read_specs(store, analysis_id, ids)
    _check_sizes(analysis_id, files, stored)
    _check_md5s(analysis_id, files, stored, ignore_undefined_md5)
    _check_blobs(store, analysis_id, stored)


def _require_files(analysis_id: str, files: Sequence[Mapping[str, Any]]) -> None:
    """Step 3: an analysis without files is corrupted."""
    if not files:
        raise AnalysisMissingFiles(
            f"The analysis with analysisId '{analysis_id}' is missing files and is therefore "
            "corrupted. It should contain at least 1 file",
            analysis_id=analysis_id,
            object_ids=[],
        )


def _require_stored(store: ObjectStore, analysis_id: str, ids: list[str]) -> None:
    """Step 4: every object is in storage (its .meta exists, Score's rule)."""
    missing = [oid for oid in ids if not (is_object_id(oid) and store.exists(oid))]
    if missing:
        raise StorageCheckFailed(
            "The following storage objectIds must be uploaded to the storage server before the "
            f"analysisId {analysis_id} can be published: {','.join(missing)}",
            analysis_id=analysis_id,
            object_ids=missing,
        )


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


def _read_specs(store: ObjectStore, analysis_id: str, ids: list[str]) -> dict[str, ObjectSpec]:
    """Step 5: each object's specification, read and validated as Song validates Score's
    download response."""
    specs: dict[str, ObjectSpec] = {}
    for oid in ids:
        raw = store.read_meta(oid)
        if raw is None:
            raise StorageObjectNotFound(analysis_id=analysis_id, object_id=oid, object_ids=[oid])
        problems = _validate_download_response(raw)
        if problems:
            raise InvalidStorageResponse(
                f"The validation of the storage download response for objectId '{oid}' failed "
                f"with the following errors: {'; '.join(problems)}",
                analysis_id=analysis_id,
                object_ids=[oid],
            )
        try:
            specs[oid] = ObjectSpec.from_json(raw)
        except (KeyError, TypeError, ValueError):  # Song ignores parts; so does the blob check
            specs[oid] = ObjectSpec(oid, raw["objectSize"], raw.get("objectMd5"))
    return specs


def _check_sizes(
    analysis_id: str, files: Sequence[Mapping[str, Any]], stored: dict[str, ObjectSpec]
) -> None:
    """Step 6: each stored size is the registered fileSize."""
    bad = [
        str(f.get("objectId"))
        for f in files
        if f.get("fileSize") != stored[str(f.get("objectId"))].object_size
    ]
    if bad:
        raise MismatchingObjectSize(
            "The following file objectIds have mismatching object sizes in the storage server: "
            f"[{' , '.join(bad)}]. The analysisId '{analysis_id}' cannot be published "
            "until they all match.",
            analysis_id=analysis_id,
            object_ids=bad,
        )


def _check_md5s(
    analysis_id: str,
    files: Sequence[Mapping[str, Any]],
    stored: dict[str, ObjectSpec],
    ignore_undefined_md5: bool,
) -> None:
    """Step 7: each stored md5 is the registered fileMd5sum (an undefined one is refused unless
    ignore_undefined_md5)."""
    ids = [str(f.get("objectId")) for f in files]
    md5s = [stored[oid].object_md5 for oid in ids]
    undefined = [oid for oid, md5 in zip(ids, md5s, strict=True) if not md5]
    bad_md5 = [
        oid
        for oid, f, md5 in zip(ids, files, md5s, strict=True)
        if md5 and f.get("fileMd5sum") != md5
    ]
    if not bad_md5 and not (undefined and not ignore_undefined_md5):
        return
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
    raise MismatchingObjectChecksum(
        msg,
        analysis_id=analysis_id,
        object_ids=bad_md5 + ([] if ignore_undefined_md5 else undefined),
        undefined_md5_object_ids=undefined,
        mismatching_md5_object_ids=bad_md5,
    )


def _check_blobs(store: ObjectStore, analysis_id: str, stored: dict[str, ObjectSpec]) -> None:
    """Beyond Song, which trusts the .meta alone: the blob must be there and agree with it (size;
    on S3 also md5chksum and ETag), so an object damaged or replaced after upload is refused."""
    for oid, spec in stored.items():
        found = store.blob_problem(oid, spec)
        if found is not None:
            raise type(found)(
                f"The storage object '{oid}' does not match its object specification: "
                f"{found.message}. The analysisId '{analysis_id}' cannot be published until it "
                "is uploaded again",
                analysis_id=analysis_id,
                object_ids=[oid],
            )
