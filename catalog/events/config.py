"""How ``songlake.toml`` names the events sinks (parsed, checked), and opening the sink named.

    [events]                      dispatcher options (see EventsConfig)
    [[events.sinks]]              one table per sink: name, type = "jsonl" | "webhook" | "kafka",
                                  start = "beginning" | "now", enabled, and the type's options

A sink whose table is wrong is reported by name in ``EventsConfig.problems`` and left out, so the
others still run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import BadRequest, SinkError
from .jsonl import JsonlSink
from .kafka import KafkaSink
from .sink import Sink, SinkSpec
from .webhook import WebhookSink

DEFAULT_SINK = "song-analysis"


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


_REQUIRED = object()


_COMMON: dict[str, tuple[type, Any]] = {
    "name": (str, _REQUIRED),
    "type": (str, _REQUIRED),
    "enabled": (bool, True),
    "start": (str, "beginning"),
}


_RETRY: dict[str, tuple[type, Any]] = {
    "max_attempts": (int, 10),
    "backoff_initial": (float, 0.5),
    "backoff_max": (float, 60.0),
    "dead_letter_path": (str, None),
}


OPTIONS: dict[str, dict[str, tuple[type, Any]]] = {
    "jsonl": {"path": (str, None), "max_bytes": (int, 256 * 1024 * 1024), "fsync": (bool, True)},
    "webhook": {
        "url": (str, _REQUIRED),
        "secret": (str, None),
        "secret_env": (str, None),
        "timeout": (float, 10.0),
        "concurrency": (int, 4),
        "headers": (dict, {}),
        **_RETRY,
    },
    "kafka": {
        "bootstrap_servers": (str, "localhost:9092"),
        "topic": (str, "song-analysis"),
        "security_protocol": (str, None),
        "sasl_mechanism": (str, None),
        "sasl_username": (str, None),
        "sasl_password": (str, None),
        "sasl_password_env": (str, None),
        "ssl_ca_location": (str, None),
        "ssl_certificate_location": (str, None),
        "ssl_key_location": (str, None),
        "ssl_key_password": (str, None),
        "config": (dict, {}),
        "flush_timeout": (float, 30.0),
        **_RETRY,
    },
}


@dataclass(frozen=True)
class EventsConfig:
    """The ``[events]`` table of songlake.toml, parsed."""

    enabled: bool = True  # the dispatcher runs inside `serve`
    update_action: str = "PUBLISH"  # Song's message for metadata updates; "UPDATE": songlake's
    poll_interval: float = 0.05  # seconds between looks at the Delta logs
    batch_commits: int = 256  # commits per batch at most
    chunk_events: int = 500  # events delivered between two cursor saves at most
    jsonl: bool = True  # the default JSONL sink when none is configured
    sse_max_clients: int = 4
    sse_max_seconds: float = 300.0  # then the stream ends; EventSource reconnects by itself
    sse_heartbeat: float = 15.0
    sinks: tuple[SinkSpec, ...] = ()
    problems: tuple[tuple[str, str], ...] = ()  # (sink name, what is wrong) of sinks left out


_TOP: dict[str, tuple[type, Any]] = {
    "enabled": (bool, True),
    "update_action": (str, "PUBLISH"),
    "poll_interval": (float, 0.05),
    "batch_commits": (int, 256),
    "chunk_events": (int, 500),
    "jsonl": (bool, True),
    "sse_max_clients": (int, 4),
    "sse_max_seconds": (float, 300.0),
    "sse_heartbeat": (float, 15.0),
}


def _check(kind: type, value: Any) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def parse_events(table: Mapping[str, Any] | None) -> EventsConfig:
    """Parse ``[events]``; a bad dispatcher option raises, a bad sink lands in ``problems``."""
    table = dict(table or {})
    sink_tables = table.pop("sinks", [])
    top: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _TOP:
            raise BadRequest(f"Unknown setting events.{key} (known: {', '.join(_TOP)})")
        kind = _TOP[key][0]
        if not _check(kind, value):
            raise BadRequest(f"Setting events.{key} must be a {kind.__name__}, not {value!r}")
        top[key] = float(value) if kind is float else value
    if top.get("update_action", "PUBLISH") not in ("UPDATE", "PUBLISH"):
        raise BadRequest('Setting events.update_action must be "UPDATE" or "PUBLISH"')
    if not isinstance(sink_tables, list):
        raise BadRequest("events.sinks must be an array of tables ([[events.sinks]])")
    specs: list[SinkSpec] = []
    problems: list[tuple[str, str]] = []
    for i, raw in enumerate(sink_tables):
        name = raw.get("name") if isinstance(raw, dict) else None
        label = name if isinstance(name, str) and name else f"#{i + 1}"
        try:
            spec = parse_sink(raw)
            if any(s.name == spec.name for s in specs):
                raise SinkError(f"events sink '{spec.name}': the name is used twice")
            if raw.get("enabled", True):
                specs.append(spec)
        except SinkError as exc:
            problems.append((label, exc.message))
    if top.get("jsonl", True) and not any(
        t.get("type") == "jsonl" for t in sink_tables if isinstance(t, dict)
    ):
        specs.insert(0, SinkSpec(DEFAULT_SINK, "jsonl", "beginning", _defaults("jsonl")))
    return EventsConfig(**top, sinks=tuple(specs), problems=tuple(problems))


def events_config(settings: Any) -> EventsConfig:
    """The ``[events]`` table of a Settings, parsed."""
    return parse_events(getattr(settings, "events", None))


def _defaults(kind: str) -> dict[str, Any]:
    return {k: v for k, (_, v) in OPTIONS[kind].items() if v is not _REQUIRED}


def parse_sink(raw: Any) -> SinkSpec:
    """One ``[[events.sinks]]`` table, checked; SinkError names the sink and the problem."""
    if not isinstance(raw, dict):
        raise SinkError(f"events sink {raw!r} is not a table")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SinkError(
            f"events sink {name!r}: a name of letters, digits, '.', '_' or '-' is required"
        )
    where = f"events sink '{name}'"
    kind = raw.get("type")
    if kind not in OPTIONS:
        raise SinkError(f"{where}: type must be one of {', '.join(OPTIONS)}, not {kind!r}")
    known = {**_COMMON, **OPTIONS[kind]}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SinkError(f"{where}: unknown option(s) {', '.join(unknown)} for a {kind} sink")
    options = _defaults(kind)
    for key, (expected, default) in known.items():
        if key not in raw:
            if default is _REQUIRED:
                raise SinkError(f"{where}: '{key}' is required")
            continue
        if not _check(expected, raw[key]):
            raise SinkError(f"{where}: '{key}' must be a {expected.__name__}, not {raw[key]!r}")
        if key in OPTIONS[kind]:
            options[key] = float(raw[key]) if expected is float else raw[key]
    if raw.get("start", "beginning") not in ("beginning", "now"):
        raise SinkError(f'{where}: start must be "beginning" or "now"')
    for key in ("max_attempts", "concurrency", "max_bytes"):
        if key in options and options[key] < (0 if key == "max_attempts" else 1):
            raise SinkError(f"{where}: '{key}' is out of range: {options[key]}")
    if kind == "webhook":
        url = urlsplit(options["url"])
        if url.scheme not in ("http", "https") or not url.hostname:
            raise SinkError(
                f"{where}: url must be an http:// or https:// URL, not {options['url']!r}"
            )
    for key in ("secret_env", "sasl_password_env"):
        var = options.get(key)
        if var and var not in os.environ:
            raise SinkError(f"{where}: the environment variable {var} ({key}) is not set")
    return SinkSpec(name, kind, raw.get("start", "beginning"), options)


def open_sink(spec: SinkSpec, root: Path, *, producer_factory: Any = None) -> Sink:
    """The sink a spec describes (not opened yet)."""
    if spec.type == "jsonl":
        return JsonlSink(spec, root)
    if spec.type == "webhook":
        return WebhookSink(spec)
    if spec.type == "kafka":
        return KafkaSink(spec, factory=producer_factory)
    raise SinkError(f"events sink '{spec.name}': unknown type {spec.type!r}")
