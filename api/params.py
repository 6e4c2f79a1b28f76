"""Reading a request: the catalog serving it, its query parameters and its JSON body.

Parameters are read as Spring reads them for Song: booleans and integers are converted or refused
with ``malformed.parameter``; an empty value counts as absent (the default applies); list
parameters accept a comma-joined value (the Java SDK's form) and repeated keys, or both.

Each blueprint declares its query parameters once, as a ``Params`` table of ``Query`` objects
(``Flag``, ``Int``, ``Text``, ``Choice``, ``Csv``, ``Time``): its views read them with
``PARAMS["name"].read()`` and list them in ``@doc(params=PARAMS.of(...))`` (api/docs.py), so
``/openapi.json`` describes exactly what the views read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app, request

from catalog.catalog import Catalog
from catalog.errors import MalformedParameter
from catalog.model import parse_payload
from catalog.settings import Settings

EXTENSION = "songlake"
SETTINGS = "songlake.settings"
COMMITTER = "songlake.groupcommit"  # the app's GroupCommitter of lifecycle changes
REFRESH = "songlake.refresh"  # the app's RefreshGate (its last failure is in /health)

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
    number = Int(name, default=default, minimum=minimum).read()
    return default if number is None else number


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


# -- the parameter tables of the blueprints -------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A query parameter: how a view reads it and how the OpenAPI document describes it."""

    name: str
    description: str = ""

    def read(self) -> Any:
        """The value in the current request (None when absent or empty)."""
        return _raw(self.name)

    def schema(self) -> dict[str, Any]:
        return {"type": "string"}

    def spec(self) -> dict[str, Any]:
        """The OpenAPI parameter object."""
        out: dict[str, Any] = {
            "name": self.name,
            "in": "query",
            "required": False,
            "schema": self.schema(),
        }
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True, kw_only=True)
class Text(Query):
    """A string, taken as given; ``enum`` only documents the values the catalog understands."""

    enum: tuple[str, ...] = ()

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.enum)} if self.enum else {"type": "string"}


@dataclass(frozen=True, kw_only=True)
class Flag(Query):
    """A boolean (true/false, on/off, yes/no, 1/0)."""

    default: bool = False

    def read(self) -> bool:
        return flag(self.name, self.default)

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean", "default": self.default}


@dataclass(frozen=True, kw_only=True)
class Int(Query):
    """An integer, refused below ``minimum`` or above ``maximum``; None when absent and no default.

    ``checked=False`` only documents the bounds, for a value the catalog checks itself.
    """

    default: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    checked: bool = True

    def read(self) -> int | None:
        number = optional_integer(self.name)
        if number is None or not self.checked:
            return self.default if number is None else number
        if self.minimum is not None and number < self.minimum:
            raise MalformedParameter(
                f"The parameter '{self.name}' must be >= {self.minimum}, not {number}",
                name=self.name,
                value=number,
            )
        if self.maximum is not None and number > self.maximum:
            raise MalformedParameter(
                f"{self.name} must be <= {self.maximum}", name=self.name, value=number
            )
        return number

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        for key in ("minimum", "maximum", "default"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True, kw_only=True)
class Choice(Query):
    """One of ``choices`` (the view checks it, in its own words); a comma-joined value counts
    its first item."""

    choices: tuple[str, ...]
    default: str

    def read(self) -> str:
        return self.values()[0]

    def values(self) -> list[str]:
        """Every item given, or the default alone."""
        return csv_list(self.name) or [self.default]

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.choices), "default": self.default}


@dataclass(frozen=True, kw_only=True)
class Csv(Query):
    """A list: comma-joined, repeated, or both; ``default`` when none is given. The items stay
    strings; ``of`` and ``enum`` document them, the view or the catalog checks them."""

    of: str = "string"
    enum: tuple[str, ...] = ()
    default: tuple[str, ...] = ()

    def read(self) -> list[str]:
        return csv_list(self.name) or list(self.default)

    def schema(self) -> dict[str, Any]:
        item: dict[str, Any] = {"type": self.of}
        if self.enum:
            item["enum"] = list(self.enum)
        return {"type": "array", "items": item}

    def spec(self) -> dict[str, Any]:
        out = super().spec()
        out["description"] = self.description + " (comma-joined or repeated)"
        out.update(style="form", explode=False)
        return out


@dataclass(frozen=True, kw_only=True)
class Time(Query):
    """An ISO-8601 date or date-time (naive = server local time)."""

    def read(self) -> datetime | None:
        return time_param(self.name)

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date-time"}


class Params(dict[str, Query]):
    """A blueprint's query parameters: positional ones under their own name, keyword ones under
    the keyword (for two parameters of one name, or a name the view maps to a field)."""

    def __init__(self, *params: Query, **named: Query) -> None:
        super().__init__({p.name: p for p in params}, **named)

    def of(self, *keys: str) -> tuple[Query, ...]:
        """The parameters under `keys`, in that order (for ``@doc(params=...)``)."""
        return tuple(self[key] for key in keys)
