"""The schema registry: analysis types as named, versioned JSON Schemas (Song's dynamic schemas).

A type's schema is *rendered* onto the base payload schema (song-api.md §4.3): its ``properties``
overlay the base properties key by key and its ``required`` list is appended; its
``definitions`` are not copied. Validators are compiled once per (name, version) and cached:
fastjsonschema answers "valid?" in tens of microseconds, and jsonschema lists every problem when
the answer is no.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
import jsonschema
from jsonschema import Draft7Validator

from ..errors import (
    AnalysisTypeNotFound,
    IllegalTypeName,
    MalformedJsonSchema,
    MalformedParameter,
    SchemaViolation,
    problem,
)
from ..model import dumps, now, song_time
from ..tables import TableStore

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9\._-]+$")
RESERVED_NAMES = {"registration"}


@cache
def load_schema_file(name: str) -> dict[str, Any]:
    """A JSON document shipped in the ``schemas`` data package."""
    return json.loads(resources.files("schemas").joinpath(name).read_text(encoding="utf-8"))


def base_schema() -> dict[str, Any]:
    return load_schema_file("analysisBase.json")


def registration_schema() -> dict[str, Any]:
    return load_schema_file("analysisTypeRegistration.json")


def bundled_types() -> list[dict[str, Any]]:
    """The example analysis types seeded by ``songlake init`` (Song's two pre-seeded ones)."""
    folder = resources.files("schemas").joinpath("types")
    return [
        json.loads(entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda p: p.name)
        if entry.name.endswith(".json")
    ]


def render(base: dict[str, Any], type_schema: dict[str, Any]) -> dict[str, Any]:
    """Song's rendering: base properties overlaid by the type's, required lists concatenated."""
    out = copy.deepcopy(base)
    out["properties"] = {**base.get("properties", {}), **type_schema.get("properties", {})}
    required = list(base.get("required", []))
    for key in type_schema.get("required", []):
        if key not in required:
            required.append(key)
    out["required"] = required
    return out


def pointer(path: Any) -> str:
    return "".join(f"/{str(p).replace('~', '~0').replace('/', '~1')}" for p in path)


def problems_from(validator: Draft7Validator, doc: Any, schema_label: str) -> list[dict]:
    """Every problem in doc, as {pointer, rule, message, schema}, leaf errors first-class."""
    out: list[dict] = []
    stack = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    for err in stack:
        _collect(err, schema_label, out)
    # jsonschema raises one "required" error per missing key, each carrying the whole list, so
    # _collect sees every missing key once per error: keep the first of identical problems
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for p in out:
        key = (p["pointer"], p["rule"], p["message"])
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _collect(err: jsonschema.ValidationError, label: str, out: list[dict]) -> None:
    if err.context and err.validator in ("anyOf", "oneOf"):
        # report the branch that got furthest, as best_match does
        best = jsonschema.exceptions.best_match(err.context)
        if best is not None:
            _collect(best, label, out)
            return
    path = list(err.absolute_path)
    message = err.message
    if err.validator == "required" and isinstance(err.instance, dict):
        missing = [k for k in err.validator_value if k not in err.instance]
        for key in missing:
            out.append(
                problem(pointer([*path, key]), "required", f"required key [{key}] not found", label)
            )
        return
    if err.validator == "not" and err.validator_value == {}:
        message = f"key [{path[-1] if path else ''}] is not permitted"
    elif err.validator == "enum":
        message = f"{json.dumps(err.instance, ensure_ascii=False)} is not a valid enum value"
    elif err.validator == "type":
        message = f"expected type: {_type_name(err.validator_value)}, found: {_kind(err.instance)}"
    elif err.validator == "const":
        wanted = json.dumps(err.validator_value)
        message = f"{json.dumps(err.instance, ensure_ascii=False)} must be {wanted}"
    out.append(problem(pointer(path), str(err.validator), message, label))


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", int: "integer", float: "number"}.get(
        type(value), type(value).__name__
    )


def _type_name(expected: Any) -> str:
    return " or ".join(expected) if isinstance(expected, list) else str(expected)


@dataclass(frozen=True)
class AnalysisType:
    name: str
    version: int
    schema: dict[str, Any]
    options: dict[str, Any] | None
    created_at: datetime

    @property
    def file_types(self) -> list[str]:
        return list((self.options or {}).get("fileTypes") or [])

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def to_json(self, *, rendered: bool = True, hide_schema: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "createdAt": song_time(self.created_at),
            "options": self.options,
        }
        if not hide_schema:
            out["schema"] = render(base_schema(), self.schema) if rendered else self.schema
        return out


class CompiledType:
    """A registered type with its validators compiled once."""

    def __init__(self, atype: AnalysisType) -> None:
        self.type = atype
        self.rendered = render(base_schema(), atype.schema)
        self.validator = Draft7Validator(
            self.rendered, format_checker=Draft7Validator.FORMAT_CHECKER
        )
        self._fast: Callable[[Any], Any] | None
        try:
            self._fast = fastjsonschema.compile(self.rendered)
        except Exception:  # a schema fastjsonschema cannot compile still validates slowly
            self._fast = None
        update_base = load_schema_file("analysisUpdate.json")
        self.update_validator = Draft7Validator(
            render(update_base, atype.schema), format_checker=Draft7Validator.FORMAT_CHECKER
        )

    def problems(self, payload: dict[str, Any]) -> list[dict]:
        if self._fast is not None:
            try:
                self._fast(payload)
                return []
            except fastjsonschema.JsonSchemaException:
                pass
        return problems_from(self.validator, payload, self.type.label)

    def update_problems(self, body: dict[str, Any]) -> list[dict]:
        return problems_from(self.update_validator, body, self.type.label)


class Registry:
    """Analysis types backed by the append-only ``analysis_types`` table."""

    def __init__(self, tables: TableStore) -> None:
        self.tables = tables
        self._lock = threading.Lock()
        self._seen_version = -1
        self._types: dict[str, list[AnalysisType]] = {}
        self._compiled: dict[tuple[str, int], CompiledType] = {}

    # -- reading ------------------------------------------------------------------------------

    def refresh(self) -> None:
        dt = self.tables.latest("analysis_types")
        if dt.version() == self._seen_version:
            return
        with self._lock:
            rows = self.tables.read("analysis_types").to_pylist()
            types: dict[str, list[AnalysisType]] = {}
            for row in sorted(rows, key=lambda r: (r["name"], r["version"])):
                types.setdefault(row["name"], []).append(
                    AnalysisType(
                        name=row["name"],
                        version=row["version"],
                        schema=json.loads(row["schema"]),
                        options=json.loads(row["options"]) if row["options"] else None,
                        created_at=row["created_at"],
                    )
                )
            self._types = types
            self._seen_version = dt.version()

    def _loaded(self) -> None:
        # Lookups do not re-check the Delta log (0.3-1.5 ms each, twice per payload): the
        # catalog refreshes the registry once per batch and per API refresh interval.
        if self._seen_version < 0:
            self.refresh()

    def names(self) -> list[str]:
        self._loaded()
        return sorted(self._types)

    def all(self) -> list[AnalysisType]:
        self._loaded()
        return [t for versions in self._types.values() for t in versions]

    def latest_version(self, name: str) -> int | None:
        self._loaded()
        versions = self._types.get(name)
        return versions[-1].version if versions else None

    def get(self, name: str, version: int | None = None) -> AnalysisType:
        check_name(name)
        self._loaded()
        versions = self._types.get(name)
        if not versions:
            raise AnalysisTypeNotFound(
                f"The analysisType with name '{name}' does not exist",
                analysis_type=name,
            )
        if version is None:
            return versions[-1]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise MalformedParameter(
                f"The version '{version}' of analysisType '{name}' must be an integer >= 1",
            )
        if version > len(versions):
            raise AnalysisTypeNotFound(
                f"Version '{version}' of analysisType with name '{name}' does not exist however "
                f"exists for the latest version '{versions[-1].version}'",
                analysis_type=name,
            )
        return versions[version - 1]

    def compiled(self, name: str, version: int | None = None) -> CompiledType:
        atype = self.get(name, version)
        key = (atype.name, atype.version)
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = CompiledType(atype)
        return found

    # -- registering --------------------------------------------------------------------------

    @staticmethod
    def row(atype: AnalysisType) -> dict[str, Any]:
        """The ``analysis_types`` row registering a prepared type (committed by the Committer)."""
        return {
            "name": atype.name,
            "version": atype.version,
            "schema": dumps(atype.schema),
            "options": dumps(atype.options) if atype.options is not None else None,
            "created_at": atype.created_at,
        }

    def prepare(self, body: Any) -> AnalysisType:
        """Check a registration body as Song does and return the type it would create."""
        if not isinstance(body, dict):
            raise SchemaViolation(
                "The analysis type registration must be a JSON object",
                problems=[problem("", "type", "expected an object")],
            )
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise MalformedParameter("The analysisType name field cannot be null")
        check_name(name)
        if name in RESERVED_NAMES:
            raise IllegalTypeName(
                f"Cannot register an analysisType with name '{name}'",
            )
        schema = body.get("schema")
        if schema is None:
            raise SchemaViolation(
                "Schema field cannot be null",
                problems=[problem("/schema", "required", "Schema field cannot be null")],
            )
        meta = Draft7Validator(registration_schema())
        problems = problems_from(meta, schema, "analysisTypeRegistration")
        if problems:
            raise SchemaViolation(
                "The analysis type schema violates the registration meta-schema: "
                + ", ".join(f"#{p['pointer']}: {p['message']}" for p in problems),
                problems=[{**p, "pointer": "/schema" + p["pointer"]} for p in problems],
                analysis_type=name,
            )
        try:
            Draft7Validator.check_schema(render(base_schema(), schema))
        except jsonschema.SchemaError as exc:
            raise MalformedJsonSchema(
                "The schema is not a valid JSON schema: "
                f"#{pointer(exc.absolute_path)}: {exc.message}",
                problems=[
                    problem("/schema" + pointer(exc.absolute_path), str(exc.validator), exc.message)
                ],
            ) from exc
        options = body.get("options")
        if options is not None and not isinstance(options, dict):
            raise SchemaViolation(
                "options must be an object",
                problems=[problem("/options", "type", "options must be an object")],
            )
        options = dict(options) if options else None
        file_types = (options or {}).get("fileTypes")
        if file_types is not None and (
            not isinstance(file_types, list) or not all(isinstance(t, str) for t in file_types)
        ):
            raise SchemaViolation(
                "options.fileTypes must be a list of strings",
                problems=[problem("/options/fileTypes", "type", "must be a list of strings")],
            )
        self.refresh()
        previous = self._types.get(name, [])
        if not file_types and previous:
            inherited = previous[-1].file_types
            if inherited:
                options = {**(options or {}), "fileTypes": inherited}
        return AnalysisType(
            name=name, version=len(previous) + 1, schema=schema, options=options, created_at=now()
        )


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise MalformedParameter(
            f"The analysisType name '{name}' must match {NAME_PATTERN.pattern}",
        )
