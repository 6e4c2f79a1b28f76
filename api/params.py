"""Reading a request: the catalog serving it, its query parameters and its JSON body.

Parameters are read as Spring reads them for Song: booleans and integers are converted or refused
with ``malformed.parameter``; an empty value counts as absent (the default applies); list
parameters accept a comma-joined value (the Java SDK's form) and repeated keys, or both.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, request

from catalog.catalog import Catalog
from catalog.errors import BadRequest
from catalog.model import parse_payload

EXTENSION = "songlake"

_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


def current_catalog() -> Catalog:
    """The Catalog the current app serves."""
    return current_app.extensions[EXTENSION]


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
    raise BadRequest(
        f"The parameter '{name}' must be true or false, not '{value}'",
        error_id="malformed.parameter",
    )


def integer(name: str, default: int, *, minimum: int | None = None) -> int:
    """An integer query parameter, optionally at least `minimum`."""
    number = optional_integer(name)
    if number is None:
        return default
    if minimum is not None and number < minimum:
        raise BadRequest(
            f"The parameter '{name}' must be >= {minimum}, not {number}",
            error_id="malformed.parameter",
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
        raise BadRequest(
            f"The parameter '{name}' must be an integer, not '{value}'",
            error_id="malformed.parameter",
        ) from None


def csv_list(name: str) -> list[str]:
    """A list parameter: comma-joined, repeated, or both; empty items dropped, no trimming."""
    return [item for value in request.args.getlist(name) for item in value.split(",") if item]


def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or ``payload.parsing`` saying why not."""
    settings = current_catalog().settings
    return parse_payload(
        request.get_data(cache=False),
        max_bytes=settings.max_payload_bytes,
        max_depth=settings.max_payload_depth,
    )
