"""Score's object layout: keys, object ids, the ObjectSpecification (.meta) and its parts.

    <data_dir>/<objectId>         the bytes
    <data_dir>/<objectId>.meta    ObjectSpecification JSON (objectKey, objectId, uploadId, parts,
                                  objectSize, lowercase-hex objectMd5), written last
    <data_dir>/heliograph         the sentinel Score's health check reads

Part plans follow Score's SimplePartCalculator (score-storage.md §1.3).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    InvalidStorageResponse,
    MalformedParameter,
    StorageObjectNotFound,
)

MIB = 1024 * 1024


MIN_PART_SIZE = 20 * MIB  # Score's floor (20,971,520 bytes)


DEFAULT_PART_SIZE = MIN_PART_SIZE


MAX_PARTS = 10_000


DATA_DIR = "data"


SENTINEL = "heliograph"


SENTINEL_CONTENT = b"songlake sentinel\n"


_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def is_object_id(value: object) -> bool:
    """True for a canonical UUID string (the only object ids this store accepts)."""
    return isinstance(value, str) and _UUID_RE.fullmatch(value) is not None


def check_object_id(value: object) -> str:
    if not is_object_id(value):
        raise MalformedParameter(
            f"The objectId '{value}' is not a valid UUID",
            object_id=str(value),
        )
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class Part:
    part_number: int  # 1-based
    part_size: int
    offset: int
    source_md5: str | None = None  # hex md5 of this byte range

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "partNumber": self.part_number,
            "partSize": self.part_size,
            "offset": self.offset,
            "url": None,
            "md5": None,
        }
        if self.source_md5 is not None:  # Score omits it when null
            out["sourceMd5"] = self.source_md5
        return out


@dataclass(frozen=True)
class ObjectSpec:
    """Score's ObjectSpecification (the .meta companion)."""

    object_id: str
    object_size: int
    object_md5: str | None
    parts: tuple[Part, ...] = ()
    upload_id: str | None = field(default=None, compare=False)  # None -> object_id

    @property
    def object_key(self) -> str:
        return f"{DATA_DIR}/{self.object_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectKey": self.object_key,
            "objectId": self.object_id,
            "uploadId": self.upload_id or self.object_id,
            "parts": [p.to_dict() for p in self.parts],
            "objectSize": self.object_size,
            "objectMd5": self.object_md5,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> ObjectSpec:
        """Parse a .meta (text or dict); unknown fields such as "relocated" are ignored."""
        obj = json.loads(data) if isinstance(data, str | bytes) else data
        if not isinstance(obj, Mapping):
            raise ValueError("an ObjectSpecification must be a JSON object")
        parts = tuple(
            sorted(
                (
                    Part(
                        int(p["partNumber"]),
                        int(p["partSize"]),
                        int(p["offset"]),
                        p.get("sourceMd5"),
                    )
                    for p in obj.get("parts") or ()
                ),
                key=lambda p: p.part_number,
            )
        )
        return cls(
            object_id=str(obj["objectId"]),
            object_size=int(obj["objectSize"]),
            object_md5=obj.get("objectMd5"),
            parts=parts,
            upload_id=obj.get("uploadId"),
        )


def part_plan(size: int, part_size: int = DEFAULT_PART_SIZE) -> list[Part]:
    """Score's SimplePartCalculator: consecutive parts, >= 20 MiB each, at most 10,000."""
    if size < 0:
        raise ValueError("size must be >= 0")
    min_part = max(part_size, MIN_PART_SIZE)
    step = max(min_part, size // MAX_PARTS + 1)
    return [
        Part(number, min(step, size - offset), offset)
        for number, offset in enumerate(range(0, size, step), start=1)
    ]


def parse_meta(object_id: str, raw: bytes | str) -> dict[str, Any]:
    """A stored .meta as a JSON object; Internal (invalid.storage.download.response) otherwise."""
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise InvalidStorageResponse(
            f"The object specification of objectId '{object_id}' is not a JSON object",
            object_id=object_id,
        )
    return obj


def range_end(object_id: str, spec: ObjectSpec | None, offset: int, length: int) -> int:
    """Where a ranged read of a stored object ends (length -1 = to the end), or Score's errors."""
    if spec is None:
        raise StorageObjectNotFound(
            f"The object with objectId '{object_id}' does not exist in the storage server",
            object_id=object_id,
        )
    size = spec.object_size
    end = size if length == -1 else offset + length
    if offset < 0 or length < -1 or offset > size or end > size:
        raise MalformedParameter(
            f"The range offset={offset} length={length} is outside objectId '{object_id}' "
            f"({size} bytes)",
            object_id=object_id,
        )
    return end
