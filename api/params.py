"""Reading a request: the catalog serving it, its query parameters and its JSON body.

Parameters are read as Spring reads them for Song: booleans and integers are converted or refused
with ``malformed.parameter``; an empty value counts as absent (the default applies); list
parameters accept a comma-joined value (the Java SDK's form) and repeated keys, or both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app, request

from catalog.catalog import Catalog
from catalog.errors import MalformedParameter
from catalog.model import parse_payload
from catalog.settings import Settings

EXTENSION = "songlake"
SETTINGS = "songlake.settings"

_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


def current_catalog() -> Catalog:
    """The Catalog the current app serves."""
    return current_app.extensions[EXTENSION]


def current_settings() -> Settings:
    """The settings the current app was made with (create_app may override the catalog's)."""
    return current_app.extensions.get(SETTINGS) or current_catalog().settings


def _raw(name: str) -> str | None:
    value = request.args.get(name)
    return None if value is None or value == "" else value


def flag(name: str, default: bool = False) -> bool:
    """A boolean query parameter."""
    value = _raw(name)
    if value is None:
        return default
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise MalformedParameter(
        f"The parameter '{name}' must be true or false, not '{value}'", name=name, value=value
    )


def integer(name: str, default: int, *, minimum: int | None = None) -> int:
    """An integer query parameter, optionally at least `minimum`."""
    number = optional_integer(name)
    if number is None:
        return default
    if minimum is not None and number < minimum:
        raise MalformedParameter(
            f"The parameter '{name}' must be >= {minimum}, not {number}", name=name, value=number
        )
    return number


def optional_integer(name: str) -> int | None:
    """An integer query parameter, None when absent."""
    value = _raw(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise MalformedParameter(
            f"The parameter '{name}' must be an integer, not '{value}'", name=name, value=value
        ) from None


def csv_list(name: str) -> list[str]:
    """A list parameter: comma-joined, repeated, or both; empty items dropped, no trimming."""
    return [item for value in request.args.getlist(name) for item in value.split(",") if item]


def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or ``payload.parsing`` saying why not."""
    settings = current_settings()
    return parse_payload(
        request.get_data(cache=False),
        max_bytes=settings.max_payload_bytes,
        max_depth=settings.max_payload_depth,
    )


# -- path variables ---------------------------------------------------------------------------

#: longest id accepted in a path (Song's ids are at most 36 characters; objectIds too)
MAX_ID_LENGTH = 256
#: longest comma-joined id list in a path (an export of a few hundred analyses)
MAX_PATH_LIST = 64 * 1024


def check_path_args() -> None:
    """Refuse path variables no entity could have: control characters, NUL, absurd lengths."""
    for name, value in (request.view_args or {}).items():
        if not isinstance(value, str):
            continue
        if len(value) > MAX_PATH_LIST or any(len(v) > MAX_ID_LENGTH for v in value.split(",")):
            raise MalformedParameter(
                f"The path parameter '{name}' is too long ({len(value):,} characters)",
                name=name,
                value=value,
            )
        if any(ord(c) < 32 or c == "\x7f" for c in value) or value in (".", ".."):
            raise MalformedParameter(
                f"The path parameter '{name}' holds characters no id can have",
                name=name,
                value=value,
            )


def id_list(value: str) -> list[str]:
    """A comma-joined list of ids from a path (Song's DELETE and export), empty items dropped."""
    items = [v for v in value.split(",") if v]
    if not items:
        raise MalformedParameter("At least one id is needed", value=value)
    return items


def time_param(name: str) -> datetime | None:
    """An ISO-8601 date or date-time query parameter (naive = server local time)."""
    value = _raw(name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise MalformedParameter(
            f"The parameter '{name}' must be an ISO-8601 date or time, not '{value}'",
            name=name,
            value=value,
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.astimezone()
