"""Settings: one frozen dataclass, declared once as a table that drives defaults, TOML and env.

Precedence, lowest first: the defaults below, ``<root>/songlake.toml``, ``SONGLAKE_*`` environment
variables, then explicit overrides (command-line flags).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import BadRequest

DEFAULT_ROOT = "./catalog-data"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a catalog process needs to know, passed down explicitly."""

    root: Path = field(default=Path(DEFAULT_ROOT), metadata={"help": "catalog root folder"})
    enforce_latest: bool = field(
        default=True, metadata={"help": "submit/update/publish must use the latest type version"}
    )
    max_payload_bytes: int = field(
        default=16 * 1024 * 1024, metadata={"help": "largest payload accepted, in bytes"}
    )
    max_payload_depth: int = field(
        default=64, metadata={"help": "deepest nesting of objects/arrays accepted in a payload"}
    )
    compact_after_files: int = field(
        default=64, metadata={"help": "compact a table once it holds this many Parquet files"}
    )
    batch_size: int = field(default=1000, metadata={"help": "payloads per group commit"})
    refresh_interval: float = field(
        default=0.5, metadata={"help": "seconds between checks for other writers' commits"}
    )
    song_server_id: str = field(default="song.overture", metadata={"help": "Song server id"})
    object_store: str = field(default="local", metadata={"help": "object store: local"})
    sql_row_limit: int = field(default=10_000, metadata={"help": "rows returned by sql at most"})

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def objects_dir(self) -> Path:
        return self.root / "objects"

    @property
    def inbox_dir(self) -> Path:
        return self.root / "inbox"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def config_file(self) -> Path:
        return self.root / "songlake.toml"


def _coerce(name: str, kind: Any, value: Any) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if "bool" in kind_name:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if "int" in kind_name:
            return int(value)
        if "float" in kind_name:
            return float(value)
        if "Path" in kind_name:
            return Path(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"Setting '{name}' has an invalid value: {value!r}") from exc


def load_settings(root: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, ``songlake.toml``, ``SONGLAKE_*`` variables and overrides."""
    env = os.environ
    root_path = Path(root or env.get("SONGLAKE_ROOT") or DEFAULT_ROOT)
    values: dict[str, Any] = {}
    config = root_path / "songlake.toml"
    if config.is_file():
        with config.open("rb") as fh:
            values.update(tomllib.load(fh))
    known = {f.name: f for f in fields(Settings)}
    for f in known.values():
        env_value = env.get(f"SONGLAKE_{f.name.upper()}")
        if env_value is not None and f.name != "root":
            values[f.name] = env_value
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise BadRequest(f"Unknown settings in {config}: {', '.join(unknown)}")
    values = {k: _coerce(k, known[k].type, v) for k, v in values.items()}
    values["root"] = root_path
    return Settings(**values)


def with_root(settings: Settings, root: Path) -> Settings:
    return replace(settings, root=root)
