"""A catalog root on S3: the client its leases use, and the checks ``init`` makes before it writes.

``check_root`` says in one line what is wrong with an ``s3://bucket/prefix`` root, naming the
bucket: no credentials, an endpoint that cannot be reached, a bucket that does not exist or refuses
us, or an endpoint without conditional put. Delta's commits on S3 are safe only with conditional
put (``If-None-Match: *``): without it two writers could both "create" the same log entry, so such
an endpoint is refused instead of written to unsafely. The probe puts one object twice with
``If-None-Match: *`` (the second must be refused with 412) and removes it again.
"""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import botocore.exceptions as bex
from botocore.config import Config

from ..errors import UnusableRoot
from ..root import S3_ATTEMPTS, Location

_REFUSED = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_NO_BUCKET = {"NoSuchBucket", "404", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}


def s3_client(location: Location, session: Any = None) -> Any:
    """A boto3 client for the root's endpoint and region (credentials: the AWS chain)."""
    config = Config(
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "total_max_attempts": S3_ATTEMPTS},
        connect_timeout=10,
        read_timeout=60,
    )
    return (session or boto3.session.Session()).client(
        "s3",
        endpoint_url=location.s3.endpoint_url or None,
        region_name=location.s3.region,
        config=config,
    )


def _code(exc: bex.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def check_root(location: Location, *, probe: bool = True) -> None:
    """Raise UnusableRoot, in one line naming the bucket, unless the root can hold a catalog."""
    bucket = location.bucket
    endpoint = location.s3.endpoint_url or "AWS S3"
    session = boto3.session.Session()
    client = s3_client(location, session)
    try:
        if session.get_credentials() is None:
            raise bex.NoCredentialsError()
        client.head_bucket(Bucket=bucket)
    except bex.ClientError as exc:
        code = _code(exc)
        if code in _NO_BUCKET:
            raise UnusableRoot(
                f"Bucket '{bucket}' does not exist at {endpoint}: create it first"
            ) from None
        if code in _DENIED:
            raise UnusableRoot(
                f"Access to bucket '{bucket}' at {endpoint} is refused ({code}): check the AWS "
                "credentials"
            ) from None
        raise UnusableRoot(f"Bucket '{bucket}' at {endpoint} cannot be used: {exc}") from None
    except bex.NoCredentialsError:
        raise UnusableRoot(
            f"No AWS credentials for bucket '{bucket}': set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        ) from None
    except bex.BotoCoreError as exc:
        raise UnusableRoot(f"Cannot reach {endpoint} for bucket '{bucket}': {exc}") from None
    if probe:
        _probe_conditional_put(client, location)


def _probe_conditional_put(client: Any, location: Location) -> None:
    key = location.key("state", f".conditional-put-probe-{uuid.uuid4().hex}")
    try:
        client.put_object(Bucket=location.bucket, Key=key, Body=b"", IfNoneMatch="*")
        try:
            client.put_object(Bucket=location.bucket, Key=key, Body=b"", IfNoneMatch="*")
        except bex.ClientError as exc:
            if _code(exc) in _REFUSED:
                return
            raise
        raise UnusableRoot(
            f"The endpoint {location.s3.endpoint_url or 'AWS S3'} does not honour conditional put "
            f"(If-None-Match) on bucket '{location.bucket}': Delta commits there would not be "
            "safe; use an endpoint that supports it (AWS S3, MinIO, ...)"
        )
    except bex.ClientError as exc:
        raise UnusableRoot(
            f"Bucket '{location.bucket}' refused a write of s3://{location.bucket}/{key}: "
            f"{_code(exc) or exc}"
        ) from None
    finally:
        try:
            client.delete_object(Bucket=location.bucket, Key=key)
        except (bex.ClientError, bex.BotoCoreError):
            pass
