"""Every error songlake raises on purpose, each carrying a Song error id and its context.

    SonglakeError                       error_id, message, problems, context (study, analysis, ...)
    ├── NotFound                        id.not.found
    │   ├── StudyNotFound               study.id.does.not.exist          (study_id=)
    │   ├── AnalysisNotFound            analysis.id.not.found            (analysis_id=)
    │   ├── AnalysisTypeNotFound        analysis.type.not.found          (analysis_type=)
    │   ├── DonorNotFound, SpecimenNotFound, SampleNotFound
    │   │                               donor|specimen|sample.does.not.exist
    │   ├── FileNotFound                file.not.found
    │   ├── LegacyEntityNotFound        legacy.entity.not.found
    │   ├── StorageObjectNotFound       storage.object.not.found         (object_id=)
    │   └── UploadNotFound              upload.id.not.found (no upload in progress for an object)
    ├── Conflict                        info.already.exists (a file md5 registered already)
    │   ├── StudyAlreadyExists          study.already.exists             (study_id=)
    │   ├── StudyIdMismatch             study.id.mismatch
    │   ├── AnalysisIdCollision         analysis.id.collision
    │   ├── IncorrectTypeVersion        analysis.type.incorrect.version
    │   ├── MismatchingDonorData, MismatchingSpecimenData, MismatchingSampleData
    │   │                               mismatching.<kind>.data
    │   ├── SpecimenToDonorMismatch     specimen.to.donor.id.mismatch
    │   ├── SampleToSpecimenMismatch    sample.to.specimen.id.mismatch
    │   ├── EntityInUse                 <kind>.repository.delete.record (Song: 422)
    │   └── Busy                        another process holds a root's lock
    │       ├── WatcherBusy             watcher.already.running
    │       └── DispatcherBusy          dispatcher.already.running
    ├── BadRequest                      malformed.parameter
    │   ├── MalformedParameter          malformed.parameter              (name=, value=)
    │   ├── IllegalQueryParameter       illegal.query.parameter
    │   ├── IllegalFilterParameter      illegal.filter.parameter
    │   ├── SearchTermSyntax            search.term.syntax
    │   ├── StudyIdMissing              study.id.missing
    │   ├── NotRelatedToStudy           entity.not.related.to.study      (study_id=)
    │   ├── InvalidFileUpdate           invalid.file.update.request
    │   ├── IllegalFileUpdate           illegal.file.update.request      (analysis_id=)
    │   ├── IllegalAnalysisState        illegal.analysis.state (Score: download of unpublished)
    │   ├── IllegalAnalysisUpdate       illegal.analysis.update.request (watcher: sidecar edits)
    │   ├── UploadRefused               upload.refused (Score's NotRetryableException: a part,
    │   │                               a finalize or a recovery the upload's state refuses)
    │   ├── IllegalTypeName             illegal.analysis.type.name
    │   ├── MalformedJsonSchema         malformed.json.schema
    │   ├── SchemaViolation             schema.violation, with a list of problems
    │   ├── StateTransitionRefused      suppressed.state.transition
    │   └── SinkError                   an events sink that cannot be configured or opened
    ├── PayloadParsing                  payload.parsing (not JSON or UTF-8, not an object, too big)
    ├── StorageCheckFailed              missing.storage.objects (publish)
    │   ├── MismatchingObjectSize       mismatching.storage.object.sizes
    │   └── MismatchingObjectChecksum   mismatching.storage.object.checksums
    ├── ResultTooLarge                  payload.too.large (a SQL answer or memory over its limit)
    ├── Unavailable                     service.unavailable (too many clients, shutting down)
    │   └── GatewayTimeout              gateway.timed.out (a query ran out of time)
    └── Internal                        unknown.error and Song's other 5xx ids
        ├── AnalysisMissingFiles        analysis.missing.files
        ├── CorruptedId                 donor|specimen|sample.id.is.corrupted
        ├── InvalidStorageResponse      invalid.storage.download.response
        ├── StorageServiceError         storage.service.error (S3 failed or refused)
        │   └── UnusableRoot            an s3:// root without bucket, credentials or conditional put
        ├── ObjectOverwriteRefused      object.overwrite.refused (Score: 500, overwrite=false)
        ├── RangeExceedsObject          storage.range.exceeds.object (Score: 500, a download range
        │                               past the object's end)
        └── OutboxGap                   a commit's log entry is gone (events)

    DeliveryFailed                      not a request's error: one attempt of an events sink
                                        failed, and its retry policy decides what follows

The HTTP status of each error id lives in one table in the API layer (``api/errors.py``), and a
test checks that every id raised anywhere has one; the CLI prints ``error [<error_id>]: <message>``
and exits 1; the watcher writes ``problems`` into the errors file. A problem is a plain dict
``{pointer, rule, message, schema}`` (see ``problem``).
"""

from __future__ import annotations

from typing import Any


def problem(pointer: str, rule: str, message: str, schema: str | None = None) -> dict[str, Any]:
    """One validation problem: where (JSON pointer), which rule, a plain message, which schema."""
    return {"pointer": pointer, "rule": rule, "message": message, "schema": schema}


class SonglakeError(Exception):
    """Base of every deliberate error: a Song error id, a message and its context."""

    error_id = "unknown.error"
    #: the class-name part of Song's message prefix "[<Context>::<errorId>] - "
    context_name = "Songlake"

    def __init__(
        self,
        message: str,
        *,
        error_id: str | None = None,
        problems: list[dict[str, Any]] | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message)
        if error_id is not None:
            self.error_id = error_id
        self.message = message
        self.problems = list(problems or [])
        self.context = context

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"errorId": self.error_id, "message": self.message}
        if self.problems:
            out["problems"] = self.problems
        ctx = {k: v for k, v in self.context.items() if v is not None}
        if ctx:
            out["context"] = ctx
        return out


# -- not found ------------------------------------------------------------------------------------


class NotFound(SonglakeError):
    error_id = "id.not.found"


class StudyNotFound(NotFound):
    error_id = "study.id.does.not.exist"

    def __init__(self, *, study_id: str, **context: Any) -> None:
        super().__init__(f"The studyId '{study_id}' does not exist", study_id=study_id, **context)


class AnalysisNotFound(NotFound):
    error_id = "analysis.id.not.found"

    def __init__(self, *, analysis_id: str, **context: Any) -> None:
        super().__init__(
            f"The analysisId '{analysis_id}' was not found", analysis_id=analysis_id, **context
        )


class AnalysisTypeNotFound(NotFound):
    error_id = "analysis.type.not.found"


class DonorNotFound(NotFound):
    error_id = "donor.does.not.exist"


class SpecimenNotFound(NotFound):
    error_id = "specimen.does.not.exist"


class SampleNotFound(NotFound):
    error_id = "sample.does.not.exist"


class FileNotFound(NotFound):
    error_id = "file.not.found"


class LegacyEntityNotFound(NotFound):
    error_id = "legacy.entity.not.found"


class StorageObjectNotFound(NotFound):
    error_id = "storage.object.not.found"

    def __init__(self, message: str | None = None, *, object_id: str, **context: Any) -> None:
        """The context names ``object_id`` unless it names ``object_ids`` (publish does)."""
        if "object_ids" not in context:
            context["object_id"] = object_id
        super().__init__(
            message
            or f"The object with objectId '{object_id}' does not exist in the storage server",
            **context,
        )


class UploadNotFound(NotFound):
    error_id = "upload.id.not.found"


# -- conflicts ------------------------------------------------------------------------------------


class Conflict(SonglakeError):
    error_id = "info.already.exists"


class StudyAlreadyExists(Conflict):
    error_id = "study.already.exists"

    def __init__(self, *, study_id: str) -> None:
        super().__init__(f"The studyId '{study_id}' already exists", study_id=study_id)


class StudyIdMismatch(Conflict):
    error_id = "study.id.mismatch"


class AnalysisIdCollision(Conflict):
    error_id = "analysis.id.collision"

    def __init__(self, *, analysis_id: str) -> None:
        super().__init__(f"The analysisId '{analysis_id}' already exists", analysis_id=analysis_id)


class IncorrectTypeVersion(Conflict):
    error_id = "analysis.type.incorrect.version"

    def __init__(self, *, name: str, latest: int | None, version: int, **context: Any) -> None:
        super().__init__(
            f"Must use the latest version '{latest}' while enforceLatest=true, but using version "
            f"'{version}' of analysisType '{name}' instead",
            analysis_type=name,
            **context,
        )


class MismatchingDonorData(Conflict):
    error_id = "mismatching.donor.data"


class MismatchingSpecimenData(Conflict):
    error_id = "mismatching.specimen.data"


class MismatchingSampleData(Conflict):
    error_id = "mismatching.sample.data"


class SpecimenToDonorMismatch(Conflict):
    error_id = "specimen.to.donor.id.mismatch"


class SampleToSpecimenMismatch(Conflict):
    error_id = "sample.to.specimen.id.mismatch"


class EntityInUse(Conflict):
    """A donor, specimen or sample an analysis uses cannot be deleted (Song's foreign keys)."""

    IDS = {
        "donor": "donor.repository.delete.record",
        "specimen": "specimen.repository.delete.record",
        "sample": "sample.repository.delete.record",
    }

    def __init__(self, message: str, *, kind: str, analysis_ids: list[str]) -> None:
        super().__init__(message, error_id=self.IDS[kind], analysis_ids=analysis_ids)


class Busy(Conflict):
    """Another process holds a lock of this catalog root."""


class WatcherBusy(Busy):
    error_id = "watcher.already.running"


class DispatcherBusy(Busy):
    error_id = "dispatcher.already.running"


# -- bad requests ---------------------------------------------------------------------------------


class BadRequest(SonglakeError):
    error_id = "malformed.parameter"


class MalformedParameter(BadRequest):
    """A parameter, setting or field with a value that cannot be used."""

    error_id = "malformed.parameter"

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        value: Any = None,
        problems: list[dict[str, Any]] | None = None,
        **context: Any,
    ) -> None:
        shown = None if value is None else str(value)[:200]
        super().__init__(message, problems=problems, parameter=name, value=shown, **context)


class IllegalQueryParameter(BadRequest):
    error_id = "illegal.query.parameter"


class IllegalFilterParameter(BadRequest):
    error_id = "illegal.filter.parameter"


class SearchTermSyntax(BadRequest):
    error_id = "search.term.syntax"


class StudyIdMissing(BadRequest):
    error_id = "study.id.missing"

    def __init__(self) -> None:
        super().__init__("The studyId in the payload is missing")


class NotRelatedToStudy(BadRequest):
    error_id = "entity.not.related.to.study"


class InvalidFileUpdate(BadRequest):
    error_id = "invalid.file.update.request"


class IllegalFileUpdate(BadRequest):
    error_id = "illegal.file.update.request"


class IllegalAnalysisState(BadRequest):
    error_id = "illegal.analysis.state"


class IllegalAnalysisUpdate(BadRequest):
    error_id = "illegal.analysis.update.request"


class UploadRefused(BadRequest):
    error_id = "upload.refused"


class IllegalTypeName(BadRequest):
    error_id = "illegal.analysis.type.name"


class MalformedJsonSchema(BadRequest):
    error_id = "malformed.json.schema"


class SchemaViolation(BadRequest):
    error_id = "schema.violation"


class StateTransitionRefused(BadRequest):
    error_id = "suppressed.state.transition"


class SinkError(BadRequest):
    """A sink that cannot be configured or opened; the message names it."""


# -- payloads and storage -------------------------------------------------------------------------


class PayloadParsing(SonglakeError):
    error_id = "payload.parsing"


class StorageCheckFailed(SonglakeError):
    error_id = "missing.storage.objects"


class MismatchingObjectSize(StorageCheckFailed):
    error_id = "mismatching.storage.object.sizes"


class MismatchingObjectChecksum(StorageCheckFailed):
    error_id = "mismatching.storage.object.checksums"


# -- unavailable and internal ---------------------------------------------------------------------


class ResultTooLarge(SonglakeError):
    error_id = "payload.too.large"


class Unavailable(SonglakeError):
    error_id = "service.unavailable"


class GatewayTimeout(Unavailable):
    error_id = "gateway.timed.out"


class Internal(SonglakeError):
    error_id = "unknown.error"


class AnalysisMissingFiles(Internal):
    error_id = "analysis.missing.files"


class CorruptedId(Internal):
    """A donor, specimen or sample id in a payload that is not the one Song computes."""

    IDS = {
        "donor": "donor.id.is.corrupted",
        "specimen": "specimen.id.is.corrupted",
        "sample": "sample.id.is.corrupted",
    }

    def __init__(self, message: str, *, kind: str, **context: Any) -> None:
        super().__init__(message, error_id=self.IDS[kind], **context)


class InvalidStorageResponse(Internal):
    error_id = "invalid.storage.download.response"


class StorageServiceError(Internal):
    error_id = "storage.service.error"


class UnusableRoot(StorageServiceError):
    """A catalog root on S3 that cannot be used: no bucket, no credentials, no conditional put."""


class ObjectOverwriteRefused(Internal):
    error_id = "object.overwrite.refused"


class RangeExceedsObject(Internal):
    error_id = "storage.range.exceeds.object"


class OutboxGap(Internal):
    """A commit's log entry is gone (Delta log retention) or unreadable."""


# -- signals between parts, never shown to a user -------------------------------------------------


class DeliveryFailed(Exception):
    """One attempt of an events sink failed; the message says how."""


class WriteConflict(Exception):
    """Another writer committed first, or this process' writer lease was taken over: the write
    re-validates against the new latest state and tries again (``Committer.run``)."""
