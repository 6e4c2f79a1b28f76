"""Object storage in Score's layout, behind one interface, and its audit against the registry.

    layout      Score's keys, object ids, ObjectSpec / Part (the .meta), part plans
    hashing     the streaming copy: each byte read once, whole md5 and part md5s computed on the way
    base        the ObjectStore interface, PutRequest, StoredObject, RangeReader
    local       LocalObjectStore: <root>/objects, the embedded default
    lease       the catalog-wide writer lease (flock locally)
    s3          S3ObjectStore: any S3-compatible endpoint, through boto3 (the only boto3 user)
    newfiles    files written whole before they get a name (O_TMPFILE), and atomic replacement
    multipart   Score's upload protocol (initiate, parts, finalize, status, recovery, cancel)
    localparts  ... on the local store: parts PUT to songlake, written in place, renamed at the end
    s3parts     ... on S3: real multipart uploads, presigned part URLs, Score's upload/ state
    audit       ``storage verify`` and ``storage sync``: the registry against what is stored

``open_store(settings)`` picks the backend the settings name; ``open_uploads(store)`` its uploads.
"""

from __future__ import annotations

from typing import Any

from ..errors import MalformedParameter
from .base import ObjectStore, PutRequest, StoredObject
from .layout import ObjectSpec, Part, check_object_id, is_object_id, part_plan
from .lease import Lease, LocalLease
from .local import LocalObjectStore
from .localparts import LocalUploads
from .multipart import Uploads

__all__ = [
    "Lease",
    "LocalLease",
    "LocalObjectStore",
    "ObjectSpec",
    "ObjectStore",
    "Part",
    "PutRequest",
    "StoredObject",
    "check_object_id",
    "is_object_id",
    "open_lease",
    "open_store",
    "open_uploads",
    "Uploads",
    "LocalUploads",
    "s3_lease",
    "part_plan",
]


def open_store(settings: Any) -> ObjectStore:
    """The object store the settings name: ``local`` (<root>/objects) or ``s3`` (boto3)."""
    kind = settings.object_store
    if kind == "local":
        return LocalObjectStore(settings.objects_dir, part_md5=settings.local_part_md5)
    if kind == "s3":
        # boto3 takes ~0.3 s to import: only processes configured for S3 pay for it
        from .s3 import S3ObjectStore

        return S3ObjectStore.from_settings(settings)
    raise MalformedParameter(
        f"Setting 'object_store' must be 'local' or 's3', not {kind!r}",
        name="object_store",
        value=kind,
    )


def open_lease(settings: Any) -> Lease:
    """The catalog-wide writer lease of the root: ``flock`` on ``<root>/state/writer.lock``, or
    for a root on S3 the object ``<prefix>/state/writer.lease`` taken with conditional put."""
    shared = settings.shared_state
    if shared.path is None:
        return s3_lease(shared, "writer.lease")
    shared.path.mkdir(parents=True, exist_ok=True)
    return LocalLease(shared.path / "writer.lock")


def s3_lease(folder: Any, name: str, **options: Any) -> Lease:
    """A lease object in an S3 folder (a Location) of the root."""
    # boto3 loads only for a root on S3
    from .s3lease import S3Lease
    from .s3root import s3_client

    return S3Lease(s3_client(folder), folder.bucket, folder.key(name), **options)


def open_uploads(store: ObjectStore) -> Uploads:
    """Score's upload protocol over a store."""
    if isinstance(store, LocalObjectStore):
        return LocalUploads(store)
    from .s3 import S3ObjectStore  # boto3: only for a store that is S3 already
    from .s3parts import S3Uploads

    if isinstance(store, S3ObjectStore):
        return S3Uploads(store)
    raise MalformedParameter(f"{store.describe()} does not take Score uploads")
