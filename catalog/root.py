"""Where a catalog lives: a local folder or an S3 prefix, behind one small interface.

    Location.parse(text)        ``/some/dir`` or ``s3://bucket/prefix``
    .uri(*parts)                a path or ``s3://`` URI under it (a Delta table's, a data file's)
    .child(*parts)              the Location of a sub-folder
    .storage_options            what deltalake needs to open a table there (conditional put)
    .read_bytes / .write_bytes / .exists / .list / .delete     small objects: songlake.toml,
                                event cursors, replay requests
    .filesystem()               (pyarrow filesystem, path) for Arrow datasets over its files

An S3 location takes its endpoint, region and credentials from the usual AWS environment
(``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``; ``AWS_ALLOW_HTTP`` for an endpoint without TLS, implied by an ``http://``
endpoint). Delta commits on S3 rely on conditional put (``If-None-Match``): ``songlake init``
refuses an endpoint without it (store/s3root.py) rather than writing unsafely.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from .errors import MalformedParameter
from .store.newfiles import write_file

S3_ATTEMPTS = 5  # per small-object call (pyarrow, boto3), with backoff in between


def _env(*names: str) -> str:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return ""


@dataclass(frozen=True)
class S3Config:
    """Endpoint and region of an S3 location, read once from the environment."""

    endpoint_url: str = ""
    region: str = ""

    @classmethod
    def from_env(cls) -> S3Config:
        return cls(
            endpoint_url=_env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            region=_env("AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1",
        )

    @property
    def allow_http(self) -> bool:
        flag = os.environ.get("AWS_ALLOW_HTTP", "").strip().lower() in {"1", "true", "yes"}
        return flag or self.endpoint_url.startswith("http://")


@dataclass(frozen=True)
class Location:
    """A local folder (``path``) or an S3 prefix (``bucket``, ``prefix``)."""

    path: Path | None = None
    bucket: str = ""
    prefix: str = ""
    s3: S3Config = field(default_factory=S3Config)

    @classmethod
    def parse(cls, text: str | os.PathLike[str]) -> Location:
        raw = os.fspath(text)
        if not raw.lower().startswith("s3://"):
            return cls(path=Path(raw))
        parts = urlsplit(raw)
        if not parts.netloc:
            raise MalformedParameter(
                f"The root {raw!r} names no bucket: use s3://BUCKET/PREFIX", name="root", value=raw
            )
        return cls(bucket=parts.netloc, prefix=parts.path.strip("/"), s3=S3Config.from_env())

    @property
    def is_s3(self) -> bool:
        return self.path is None

    @property
    def url(self) -> str:
        return str(self.path) if self.path is not None else self.uri()

    def __str__(self) -> str:
        return self.url

    def key(self, *parts: str) -> str:
        """The S3 key of a path under this location."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def uri(self, *parts: str) -> str:
        if self.path is not None:
            return str(self.path.joinpath(*parts))
        return f"s3://{self.bucket}/{self.key(*parts)}".rstrip("/")

    def child(self, *parts: str) -> Location:
        if self.path is not None:
            return Location(path=self.path.joinpath(*parts))
        return Location(bucket=self.bucket, prefix=self.key(*parts), s3=self.s3)

    @property
    def storage_options(self) -> dict[str, str] | None:
        """deltalake's options for tables here; None for a local folder."""
        if self.path is not None:
            return None
        options = {
            "conditional_put": "etag",  # safe concurrent commits without a locking service
            "AWS_REGION": self.s3.region,
        }  # deltalake retries a failed request with backoff: 10 times, for up to 3 minutes
        if self.s3.endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.s3.endpoint_url
        if self.s3.allow_http:
            options["AWS_ALLOW_HTTP"] = "true"
        return options

    # -- files and small objects ----------------------------------------------------------------

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and this location's path in it."""
        if self.path is not None:
            return pafs.LocalFileSystem(), str(self.path)
        return _s3_filesystem(self.s3), f"{self.bucket}/{self.prefix}".rstrip("/")

    def fs_path(self, uri: str) -> str:
        """A file URI (as deltalake lists them) as a path of ``filesystem()``."""
        return uri.removeprefix("s3://") if self.is_s3 else uri.removeprefix("file://")

    def read_bytes(self, *parts: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        if self.path is not None:
            return self.path.joinpath(*parts).read_bytes()
        fs, base = self.filesystem()
        with fs.open_input_stream(f"{base}/{'/'.join(parts)}") as stream:
            data: bytes = stream.read()
        return data

    def write_bytes(self, *parts: str, data: bytes) -> None:
        """Write an object whole (locally: durable and atomic; on S3 one PUT is atomic)."""
        if self.path is not None:
            target = self.path.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_file(target, data)
            return
        fs, base = self.filesystem()
        with fs.open_output_stream(f"{base}/{'/'.join(parts)}") as stream:
            stream.write(data)

    def exists(self, *parts: str) -> bool:
        if self.path is not None:
            return self.path.joinpath(*parts).exists()
        fs, base = self.filesystem()
        # opening answers "not there" in one request; get_file_info also lists, to look for a
        # "directory" of that name (17 ms against 3 ms on moto, and latest() asks per table)
        try:
            fs.open_input_stream(f"{base}/{'/'.join(parts)}").close()
        except FileNotFoundError:
            return False
        return True

    def mtime(self, *parts: str) -> float:
        fs, base = self.filesystem()
        info = fs.get_file_info(f"{base}/{'/'.join(parts)}")
        return info.mtime.timestamp() if info.mtime else 0.0

    def list(self, *parts: str) -> list[str]:
        """Names of the objects directly under a folder (none when it does not exist)."""
        fs, base = self.filesystem()
        folder = "/".join([base, *parts])
        try:
            infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        except FileNotFoundError:
            return []
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)

    def delete(self, *parts: str) -> None:
        fs, base = self.filesystem()
        try:
            fs.delete_file(f"{base}/{'/'.join(parts)}")
        except FileNotFoundError:
            pass


_FILESYSTEMS: dict[S3Config, Any] = {}


def _s3_filesystem(config: S3Config) -> pafs.S3FileSystem:
    """One pyarrow S3 filesystem per endpoint (its client pools connections)."""
    fs = _FILESYSTEMS.get(config)
    if fs is None:
        endpoint = urlsplit(config.endpoint_url) if config.endpoint_url else None
        fs = pafs.S3FileSystem(
            region=config.region,
            endpoint_override=endpoint.netloc if endpoint else None,
            scheme=endpoint.scheme if endpoint else "https",
            connect_timeout=10,
            request_timeout=60,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
        )
        _FILESYSTEMS[config] = fs
    return fs
