"""songlake's core: a Song-compatible metadata catalog on Delta Lake tables.

The public face, for the API, the watcher, the command line and scripts:

    Catalog                 a catalog root opened for reading and writing (catalog.py)
    SubmitItem, SubmitResult, Transition
                            what a batch of submits or state changes is made of
    Settings, load_settings one frozen dataclass; defaults < songlake.toml < SONGLAKE_* < flags
    SonglakeError, ...      the error tree (errors.py), each error with its Song error id

The wings under it: ``write/`` (registry, validation, registration, lifecycle, updates, the
committer), ``read/`` (read model, search, entities, export), ``store/`` (Score's layout, local
and S3 backends, audit) and ``events/`` (outbox, messages, dispatcher, sinks). The core never
imports flask, waitress, watchdog, ``api``, ``watcher`` or ``songlake``.

``Catalog`` and the names that come with it load on first use: ``import catalog.errors`` (the
command line's start, the watcher's upload worker processes) must not pay for pyarrow, deltalake
and jsonschema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AnalysisNotFound,
    BadRequest,
    Conflict,
    Internal,
    MalformedParameter,
    NotFound,
    PayloadParsing,
    SchemaViolation,
    SonglakeError,
    StorageCheckFailed,
    StudyNotFound,
    problem,
)
from .settings import Settings, load_settings

if TYPE_CHECKING:
    from .catalog import Catalog
    from .write.lifecycle import Transition
    from .write.registration import SubmitItem, SubmitResult

_LAZY = {
    "Catalog": "catalog.catalog",
    "SubmitItem": "catalog.write.registration",
    "SubmitResult": "catalog.write.registration",
    "Transition": "catalog.write.lifecycle",
}

__all__ = [
    "AnalysisNotFound",
    "BadRequest",
    "Catalog",
    "Conflict",
    "Internal",
    "MalformedParameter",
    "NotFound",
    "PayloadParsing",
    "SchemaViolation",
    "Settings",
    "SonglakeError",
    "StorageCheckFailed",
    "StudyNotFound",
    "SubmitItem",
    "SubmitResult",
    "Transition",
    "load_settings",
    "problem",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'catalog' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
