"""Song's data model: IDs, payload parsing with limits, entity normalisation and time formats."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from .errors import MalformedParameter, PayloadParsing, problem

#: an analysis' lifecycle states, declared once (read model, search, API, CLI and OpenAPI use these)
STATES = ("UNPUBLISHED", "PUBLISHED", "SUPPRESSED")


def check_states(states: Iterable[str]) -> list[str]:
    """The states asked for, or Song's malformed.parameter naming those that are not states."""
    states = list(states)
    bad = [s for s in states if s not in STATES]
    if bad:
        raise MalformedParameter(
            f"The following are not AnalysisStates: '{','.join(bad)}'",
            name="analysisStates",
            value=",".join(bad),
        )
    return states


# The known fields of each entity, payload name -> column name. Every other key goes into info.
DONOR_FIELDS = {"submitterDonorId": "submitter_donor_id", "gender": "gender"}
SPECIMEN_FIELDS = {
    "submitterSpecimenId": "submitter_specimen_id",
    "tumourNormalDesignation": "tumour_normal_designation",
    "specimenTissueSource": "specimen_tissue_source",
    "specimenType": "specimen_type",
}
SAMPLE_FIELDS = {
    "submitterSampleId": "submitter_sample_id",
    "sampleType": "sample_type",
    "matchedNormalSubmitterSampleId": "matched_normal_submitter_sample_id",
}
FILE_FIELDS = {
    "fileName": "file_name",
    "fileSize": "file_size",
    "fileType": "file_type",
    "fileMd5sum": "file_md5sum",
    "fileAccess": "file_access",
    "dataType": "data_type",
}
# Keys that never land in info: server ids and the nested entities.
_SERVER_KEYS = {
    "donor": {"donorId", "studyId", "info"},
    "specimen": {"specimenId", "donorId", "info", "donor", "samples"},
    "sample": {"sampleId", "specimenId", "info", "specimen", "donor"},
    "file": {"objectId", "studyId", "analysisId", "info"},
}
RESERVED_TOP_LEVEL = ("studyId", "analysisType", "samples", "files", "analysisId")


# --- IDs (Song's local id mode, song-api.md §3.7) -------------------------------------------


_OID = uuid.NAMESPACE_OID.bytes


def uuid5_oid(name: str) -> str:
    """str(uuid.uuid5(uuid.NAMESPACE_OID, name)), in a third of the time (no UUID object)."""
    digest = bytearray(hashlib.sha1(_OID + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def entity_id(study_id: str, submitter_id: str) -> str:
    """Donor, specimen and sample ids: uuid5(NAMESPACE_OID, "<studyId>:<submitterId>")."""
    return uuid5_oid(f"{study_id}:{submitter_id}")


def object_id(analysis_id: str, file_name: str) -> str:
    """File object ids: uuid5(NAMESPACE_OID, "<analysisId>:<fileName>")."""
    return uuid5_oid(f"{analysis_id}:{file_name}")


def new_analysis_id() -> str:
    return str(uuid.uuid4())


# --- times -----------------------------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


def _fixed_local_zone() -> timezone | None:
    """The local zone as a fixed offset when it has no daylight saving time (UTC in most
    containers): converting to it is plain arithmetic, ~3x cheaper than astimezone()."""
    if time.daylight:
        return None
    return timezone(timedelta(seconds=-time.timezone))


_LOCAL_FIXED = _fixed_local_zone()


def song_time(value: datetime | None) -> str | None:
    """Song's date format: naive ISO-8601 in server local time, e.g. 2023-03-09T17:18:15.673782."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(_LOCAL_FIXED).replace(tzinfo=None)
    return value.isoformat()


def utc_iso(value: datetime | float | None) -> str | None:
    """songlake's own time format (receipts, status, logs, events, SQL results): ISO-8601 in UTC
    with milliseconds and ``Z``, e.g. 2026-12-06T12:18:41.924Z. Song's fields keep song_time."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    """Now, in songlake's own time format (see utc_iso)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- payload parsing -------------------------------------------------------------------------


class Payload(dict[str, Any]):
    """A payload dict that ``parse_payload`` has already checked (it is not checked again)."""

    __slots__ = ("max_depth",)
    max_depth: int


def parse_payload(raw: bytes | str | dict[str, Any], *, max_bytes: int, max_depth: int) -> dict:
    """Turn raw bytes into a payload dict, refusing what Song refuses and what would hurt us."""
    if isinstance(raw, Payload) and raw.max_depth <= max_depth:
        return raw
    if isinstance(raw, dict):
        doc: Any = raw
    else:
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        if len(raw) > max_bytes:
            raise PayloadParsing(
                f"Unable to read the input payload: it is {len(raw):,} bytes, "
                f"over the limit of {max_bytes:,} bytes",
                problems=[problem("", "maxBytes", f"payload larger than {max_bytes} bytes")],
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadParsing(
                f"Unable to read the input payload: not UTF-8 ({exc.reason} at byte {exc.start})",
                problems=[problem("", "utf8", f"invalid UTF-8 at byte {exc.start}")],
            ) from exc
        if text.startswith("\ufeff"):
            text = text[1:]
        try:
            doc = json.loads(text, parse_constant=_not_a_number, parse_float=_finite_float)
        except RecursionError as exc:
            raise _too_deep(max_depth) from exc
        except json.JSONDecodeError as exc:
            raise PayloadParsing(
                "Unable to read the input payload: "
                f"{exc.msg} at line {exc.lineno} column {exc.colno}",
                problems=[
                    problem("", "json", f"{exc.msg} at line {exc.lineno} column {exc.colno}")
                ],
            ) from exc
        except ValueError as exc:
            # NaN / Infinity are not JSON (Song's parser refuses them) and could not be stored
            raise PayloadParsing(
                f"Unable to read the input payload: {exc}",
                problems=[problem("", "json", str(exc))],
            ) from exc
    if not isinstance(doc, dict):
        raise PayloadParsing(
            f"Unable to read the input payload: expected a JSON object, got {_json_kind(doc)}",
            problems=[problem("", "type", f"expected an object, got {_json_kind(doc)}")],
        )
    check_depth(doc, max_depth)
    # a lone surrogate comes only from a \u escape (UTF-8 cannot carry one); no column can store it
    if isinstance(raw, dict) or _SURROGATE_ESCAPE.search(raw):
        check_text(doc)
    checked = Payload(doc)
    checked.max_depth = max_depth
    return checked


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(doc: Any) -> None:
    """Refuse a document holding a lone surrogate in any key or string: it is not text (it cannot
    be encoded as UTF-8, so no table, file or answer could hold it)."""
    stack = [("", doc)]
    while stack:
        pointer, node = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise PayloadParsing(
                    f"Unable to read the input payload: the string at '{pointer or '/'}' holds a "
                    "lone surrogate (\\ud800-\\udfff), which is not text",
                    problems=[problem(pointer, "utf8", "a lone surrogate is not text")],
                )
        elif isinstance(node, dict):
            for key, value in node.items():
                name = key.encode("utf-8", "backslashreplace").decode("utf-8")
                where = f"{pointer}/{name}"
                stack.append((where, key))
                stack.append((where, value))
        elif isinstance(node, list):
            stack.extend((f"{pointer}/{i}", v) for i, v in enumerate(node))


def _not_a_number(token: str) -> float:
    raise ValueError(f"{token} is not a JSON number")


def _finite_float(token: str) -> float:
    value = float(token)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {token[:40]} is too large")
    if value == 0 and any(c in "123456789" for c in token.split("e")[0].split("E")[0]):
        raise ValueError(f"the number {token[:40]} is too small to be told from 0")
    return value


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _too_deep(max_depth: int) -> PayloadParsing:
    return PayloadParsing(
        f"Unable to read the input payload: nested deeper than {max_depth} levels",
        problems=[problem("", "maxDepth", f"nesting deeper than {max_depth} levels")],
    )


def check_depth(doc: Any, max_depth: int) -> None:
    """Refuse documents nested deeper than max_depth (the walk stops there: no deep recursion)."""

    def walk(node: Any, depth: int) -> None:
        if depth > max_depth:
            raise _too_deep(max_depth)
        for value in node.values() if isinstance(node, dict) else node:
            if isinstance(value, (dict, list)):
                walk(value, depth + 1)

    if isinstance(doc, (dict, list)):
        walk(doc, 1)


# --- entity normalisation ----------------------------------------------------------------------


def split_entity(obj: dict[str, Any], kind: str, known: dict[str, str]) -> tuple[dict, dict]:
    """Split a payload entity into its known columns and its info map, as Song's any-setter does.

    Unknown keys merge into ``info`` together with an explicit ``info`` object; null values are
    dropped from info.
    """
    cols = {col: obj.get(key) for key, col in known.items()}
    info: dict[str, Any] = {}
    explicit = obj.get("info")
    skip = _SERVER_KEYS[kind]
    for key, value in obj.items():
        if key in known or key in skip:
            continue
        info[key] = value
    if isinstance(explicit, dict):
        info.update(explicit)
    info = {k: v for k, v in info.items() if v is not None}
    return cols, info


def dumps(value: Any) -> str:
    """Canonical compact JSON used for stored documents (stable key order for comparisons)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def dynamic_data(payload: dict[str, Any]) -> dict[str, Any]:
    """Everything at the top level that is not studyId, analysisType, samples or files."""
    return {k: v for k, v in payload.items() if k not in RESERVED_TOP_LEVEL}
