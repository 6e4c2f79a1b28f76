"""Settings: one frozen dataclass, declared once as a table that drives defaults, TOML and env.

Precedence, lowest first: the defaults below, ``<root>/songlake.toml``, ``SONGLAKE_*`` environment
variables, then explicit overrides (command-line flags).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import MalformedParameter, UnusableRoot
from .root import Location

DEFAULT_ROOT = "./catalog-data"
#: hours ``sql --as-of`` is promised to reach back (README): vacuum never removes files younger
TIME_TRAVEL_HOURS = 24.0
VACUUM_RETENTION_DEFAULT = 7 * 24.0


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a catalog process needs to know, passed down explicitly."""

    root: Path = field(
        default=Path(DEFAULT_ROOT),
        metadata={"help": "catalog root folder (an s3:// root: this machine's local_state_dir)"},
    )
    root_url: str = field(
        default="", metadata={"help": "the root when it is on S3: s3://bucket/prefix (from --root)"}
    )
    local_state_dir: str = field(
        default="",
        metadata={
            "help": "what belongs to this machine: inbox, watcher ledger, admin token (empty: "
            "<root>/state; for an s3:// root $XDG_STATE_HOME/songlake/<bucket>/<prefix>)"
        },
    )
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
    current_refresh_commits: int = field(
        default=1000,
        metadata={"help": "refresh the current_* tables after this many writes of a process"},
    )
    current_refresh_seconds: float = field(
        default=60.0,
        metadata={"help": "... or this many seconds after a write that left them behind"},
    )
    vacuum_retention: float = field(
        default=VACUUM_RETENTION_DEFAULT,
        metadata={
            "help": "hours a file replaced by compaction or a current_* refresh is kept (the "
            f"reach of sql --as-of; at least {TIME_TRAVEL_HOURS:g})"
        },
    )
    batch_size: int = field(default=1000, metadata={"help": "payloads per group commit"})
    refresh_interval: float = field(
        default=0.5, metadata={"help": "seconds between checks for other writers' commits"}
    )
    song_server_id: str = field(default="song.overture", metadata={"help": "Song server id"})
    object_store: str = field(default="local", metadata={"help": "object store: local or s3"})
    local_part_md5: bool = field(
        default=False,
        metadata={
            "help": "local store: record each part's sourceMd5 in .meta (a second md5 of every "
            "byte; Score and score-client skip the per-part check when it is absent)"
        },
    )
    # -- S3 object store (object_store = "s3"; catalog/store/s3.py). Credentials come from the
    # standard AWS chain: AWS_* variables, the shared config/credentials files (s3_profile), roles.
    s3_endpoint_url: str = field(
        default="", metadata={"help": "S3 endpoint URL (empty: AWS); any S3-compatible server"}
    )
    s3_region: str = field(default="", metadata={"help": "S3 region (empty: the AWS chain's)"})
    s3_profile: str = field(default="", metadata={"help": "AWS profile (empty: default chain)"})
    s3_bucket: str = field(default="", metadata={"help": "bucket for blobs (bucket.name.object)"})
    s3_state_bucket: str = field(
        default="", metadata={"help": "bucket for .meta (bucket.name.state; empty: s3_bucket)"}
    )
    s3_data_dir: str = field(
        default="data", metadata={"help": "key prefix of blobs and .meta (s3.data.directory)"}
    )
    s3_path_style: bool = field(
        default=True, metadata={"help": "path-style addressing (Score forces it)"}
    )
    s3_bucket_pool: int = field(
        default=0, metadata={"help": "partition buckets, 0 = off (bucket.size.pool)"}
    )
    s3_bucket_key_length: int = field(
        default=2, metadata={"help": "objectId hex chars choosing the partition (bucket.size.key)"}
    )
    s3_part_size: int = field(
        default=20 * 1024 * 1024,
        metadata={"help": "part size in bytes, floor 20 MiB (upload.partsize)"},
    )
    s3_multipart_threshold: int = field(
        default=64 * 1024 * 1024, metadata={"help": "files larger than this use multipart"}
    )
    s3_concurrency: int = field(default=4, metadata={"help": "parts in flight per upload"})
    s3_max_attempts: int = field(default=5, metadata={"help": "attempts per S3 call"})
    s3_retry_backoff: float = field(
        default=0.5, metadata={"help": "seconds before the first retry; doubles each time"}
    )
    s3_connect_timeout: float = field(default=10.0, metadata={"help": "seconds"})
    s3_read_timeout: float = field(default=60.0, metadata={"help": "seconds"})
    s3_url_expiration: int = field(
        default=86_400, metadata={"help": "lifetime of download URLs in seconds"}
    )
    s3_verify_etag: bool = field(
        default=True,
        metadata={"help": "check ETags as MD5s (turn off for SSE-KMS/SSE-C buckets)"},
    )
    sql_row_limit: int = field(default=10_000, metadata={"help": "rows returned by sql at most"})
    sql_timeout: float = field(
        default=30.0, metadata={"help": "seconds a POST /sql query may run before it is stopped"}
    )
    sql_memory_limit: str = field(
        default="25%",
        metadata={"help": "memory a sql query may use: a size ('2GB') or a share of RAM ('25%')"},
    )
    sql_max_bytes: int = field(
        default=64 * 1024 * 1024, metadata={"help": "largest POST /sql answer, in bytes"}
    )
    api_threads: int = field(default=32, metadata={"help": "worker threads of the API server"})
    api_max_connections_per_client: int = field(
        default=500,
        metadata={
            "help": "open connections one client address may hold (of the server's 1,000); "
            "more are answered 503 and closed (0: no limit)"
        },
    )
    api_max_body_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata={
            "help": "largest request body the server reads (at least max_payload_bytes and a "
            "Score part of the local store + 1 MiB); a "
            "larger one is refused from its Content-Length before it is read"
        },
    )
    auth: bool = field(
        default=True,
        metadata={"help": "false switches API auth off: anyone reaching the port can write"},
    )
    auth_token_file: str = field(
        default="", metadata={"help": "static bearer tokens, one 'TOKEN SCOPE...' line each"}
    )
    auth_jwt_secret: str = field(
        default="", repr=False, metadata={"help": "HS256 key that signs bearer JWTs"}
    )
    auth_jwt_public_key: str = field(
        default="", metadata={"help": "PEM file of the RS256 public key that signs bearer JWTs"}
    )
    auth_jwks_file: str = field(
        default="", metadata={"help": "JWKS JSON file of the keys that sign bearer JWTs"}
    )
    auth_jwt_audience: str = field(
        default="", metadata={"help": "required 'aud' of bearer JWTs (empty: not checked)"}
    )
    auth_system_scope: str = field(
        default="song.WRITE", metadata={"help": "scope allowed to write to every study"}
    )
    auth_study_prefix: str = field(
        default="PROGRAMDATA-", metadata={"help": "study scope = prefix + studyId + suffix"}
    )
    auth_study_suffix: str = field(
        default=".WRITE", metadata={"help": "study scope = prefix + studyId + suffix"}
    )
    events_public: bool = field(
        default=False,
        metadata={
            "help": "GET /events streams to anyone, no token (it carries unpublished analyses)"
        },
    )
    trusted_proxies: str = field(
        default="",
        metadata={
            "help": "comma-separated addresses or networks (CIDR) of proxies whose "
            "X-Forwarded-Proto/-Host/-Prefix headers build the URLs songlake hands out"
        },
    )
    upload_url_expiration: int = field(
        default=6 * 86_400,
        metadata={"help": "seconds a part URL of a Score upload stays valid (Score: 6 days)"},
    )
    events: dict[str, Any] = field(
        default_factory=dict,
        hash=False,
        metadata={"help": "[events] table: sinks and dispatcher options (events/config.py)"},
    )

    # -- the watcher (watcher/): drop-folder ingestion into <root>/inbox/<studyId>/ ------------
    watch_folders: str = field(
        default="", metadata={"help": "more folders to watch besides the inbox, ':'-separated"}
    )
    auto_create_studies: bool = field(
        default=False,
        metadata={"help": "create the study of an inbox/<studyId>/ folder on first use"},
    )
    watch_after_upload: str = field(
        default="keep",
        metadata={"help": "dropped data files once verified in storage: keep, move or delete"},
    )
    watch_archive_dir: str = field(
        default="", metadata={"help": "where 'move' puts data files (empty: <root>/archive)"}
    )
    watch_pending_timeout: float = field(
        default=86_400.0,
        metadata={"help": "seconds a sidecar may wait for its files before it is rejected"},
    )
    watch_settle: float = field(
        default=2.0,
        metadata={"help": "seconds without a close event before a half-written file counts"},
    )
    watch_rescan_interval: float = field(
        default=300.0, metadata={"help": "seconds between reconciliation scans (inotify mode)"}
    )
    watch_poll_interval: float = field(
        default=2.0, metadata={"help": "seconds between scans in --polling mode"}
    )
    watch_linger: float = field(
        default=0.02, metadata={"help": "seconds a batch waits for more sidecars before commit"}
    )
    watch_hash_threads: int = field(
        default=2, metadata={"help": "threads hashing data files (md5 releases the GIL)"}
    )
    watch_upload_processes: int = field(
        default=2,
        metadata={
            "help": "worker processes copying files into object storage (0: threads of the "
            "watcher process; see watcher/uploadpool.py)"
        },
    )
    watch_upload_threads: int = field(
        default=4,
        metadata={"help": "upload threads per upload process (fsyncs and S3 calls overlap)"},
    )
    watch_upload_nice: int = field(
        default=5,
        metadata={
            "help": "niceness of the upload processes: registration (and the API of serve) "
            "gets the CPU first, copying takes the rest (0: same priority)"
        },
    )
    watch_stage_min_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata={"help": "files this large are verified while copied into storage (one read)"},
    )

    @property
    def location(self) -> Location:
        """The catalog root: a local folder or an S3 prefix (tables, shared state, config)."""
        return Location.parse(self.root_url or self.root)

    @property
    def tables_dir(self) -> Location:
        return self.location.child("tables")

    @property
    def shared_state(self) -> Location:
        """State every process of the catalog shares: event cursors, replay requests, leases."""
        return self.location.child("state")

    @property
    def objects_dir(self) -> Path:
        return self.root / "objects"

    @property
    def inbox_dir(self) -> Path:
        return self.root / "inbox"

    @property
    def state_dir(self) -> Path:
        """This machine's state: the watcher's ledger and lock, the admin token."""
        if self.local_state_dir:
            return Path(self.local_state_dir)
        return self.root if self.root_url else self.root / "state"

    @property
    def config_file(self) -> Path:
        """``songlake.toml`` of a local root (on S3: ``<root>/songlake.toml``, read the same)."""
        return self.root / "songlake.toml"


def _coerce(name: str, kind: Any, value: Any) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if kind_name.startswith("dict"):  # a TOML table, or JSON in an environment variable
            parsed = json.loads(value) if isinstance(value, str) else value
            if not isinstance(parsed, dict):
                raise ValueError(value)
            return parsed
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
        raise MalformedParameter(
            f"Setting '{name}' has an invalid value: {value!r}", name=name, value=value
        ) from exc


def load_settings(root: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, ``songlake.toml``, ``SONGLAKE_*`` variables and overrides."""
    env = os.environ
    location = Location.parse(root or env.get("SONGLAKE_ROOT") or DEFAULT_ROOT)
    values: dict[str, Any] = {}
    config = location.uri("songlake.toml")
    try:
        values.update(tomllib.loads(location.read_bytes("songlake.toml").decode()))
    except FileNotFoundError:
        pass
    except OSError as exc:  # S3: no such bucket, no credentials, endpoint unreachable
        # boto3 loads only when an S3 root fails: check_root says in one line what is wrong
        from .store.s3root import check_root

        check_root(location, probe=False)
        raise UnusableRoot(f"Cannot read {config}: {exc}".splitlines()[0]) from exc
    known = {f.name: f for f in fields(Settings)}
    for f in known.values():
        env_value = env.get(f"SONGLAKE_{f.name.upper()}")
        if env_value is not None and f.name not in ("root", "root_url"):
            values[f.name] = env_value
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise MalformedParameter(
            f"Unknown settings in {config}: {', '.join(unknown)}", name=", ".join(unknown)
        )
    values = {k: _coerce(k, known[k].type, v) for k, v in values.items()}
    values.pop("root_url", None)
    if values.get("vacuum_retention", TIME_TRAVEL_HOURS) < TIME_TRAVEL_HOURS:
        raise MalformedParameter(
            f"vacuum_retention is {values['vacuum_retention']:g} hours: it may not be shorter "
            f"than the {TIME_TRAVEL_HOURS:g} hours sql --as-of is promised to reach back",
            name="vacuum_retention",
        )
    if location.path is not None:
        values["root"] = location.path
    else:
        values.update(_s3_root_defaults(location, values))
    return Settings(**values)


def _s3_root_defaults(location: Location, values: dict[str, Any]) -> dict[str, Any]:
    """An S3 root keeps this machine's things in a local folder and, unless told otherwise, the
    object store in Score's layout in the root's own bucket."""
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    local = values.get("local_state_dir") or os.path.join(
        xdg, "songlake", location.bucket, location.prefix
    )
    out: dict[str, Any] = {"root_url": location.url, "root": Path(local)}
    out["local_state_dir"] = local
    if "object_store" not in values:
        out["object_store"] = "s3"
    if not values.get("s3_bucket"):
        out["s3_bucket"] = location.bucket
    if not values.get("s3_endpoint_url"):
        out["s3_endpoint_url"] = location.s3.endpoint_url
    if not values.get("s3_region"):
        out["s3_region"] = location.s3.region
    return out
