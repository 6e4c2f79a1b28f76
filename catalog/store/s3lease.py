"""The writer lease of a root on S3: one small object, taken and renewed with conditional put.

The object (``<prefix>/state/writer.lease``) holds ``{holder, epoch, since, ttl, released}``.

- **Take**: create it with ``If-None-Match: *``, or replace it with ``If-Match: <etag>`` when it is
  released, or when its ETag has not changed for a whole TTL as *this* process' clock measures it
  (a dead or stopped holder no longer renews; no clocks are compared across machines). Each take
  writes ``epoch + 1``.
- **Renew**: every TTL/3, and once more just before a commit (``check``), replace it with
  ``If-Match`` on the ETag we wrote last. A refused renewal means the lease was taken over: the
  write is abandoned before anything of it is visible, and re-validated (``WriteConflict``).
- **Release**: ``released: true``, with ``If-Match``, so the next writer takes it at once.

The check before a commit leaves a window (renewal, then the commit's first put) that a pause
longer than the TTL minus the renewal's age could still cross; the expected-version appends of
write/commit.py close it for every table the new holder wrote too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError

from ..errors import StorageServiceError, WriteConflict
from ..model import now_iso
from .lease import LeaseStats, Waiting, holder_name

_REFUSED = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Lease:
    """A catalog-wide writer lease held in one S3 object (any endpoint with conditional put)."""

    kind = "s3"

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        *,
        ttl: float = 30.0,
        poll: float = 0.02,
        holder: str | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.ttl = ttl
        self.poll = poll
        self.holder = holder or holder_name()
        self.stats = LeaseStats()
        self._local = threading.Lock()
        self._etag: str | None = None
        self._record: dict[str, Any] = {}
        self._lost = threading.Event()
        self._renewing = threading.Lock()  # the renewer thread and check() take turns

    # -- the object -----------------------------------------------------------------------------

    def _get(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None, None
            raise StorageServiceError(
                f"Cannot read the writer lease s3://{self.bucket}/{self.key}: {exc}"
            ) from exc
        try:
            record = json.loads(got["Body"].read())
        except ValueError:
            record = {}
        return (record if isinstance(record, dict) else {}), got["ETag"]

    def _put(self, record: dict[str, Any], *, etag: str | None) -> str | None:
        """Write the record if the object is still ``etag`` (absent when None); its new ETag, or
        None when another writer changed it first."""
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            put = self.client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=json.dumps(record, sort_keys=True).encode(),
                ContentType="application/json",
                **condition,
            )
        except ClientError as exc:
            if _code(exc) in _REFUSED:
                return None
            raise StorageServiceError(
                f"Cannot write the writer lease s3://{self.bucket}/{self.key}: {exc}"
            ) from exc
        return str(put["ETag"])

    # -- holding --------------------------------------------------------------------------------

    def _take(self, while_waiting: Waiting) -> int:
        seen: tuple[str | None, float] = (None, 0.0)  # (etag, when this process first saw it)
        started = time.monotonic()
        waited = False
        while True:
            record, etag = self._get()
            clock = time.monotonic()
            if etag != seen[0]:
                seen = (etag, clock)
            expired = record is not None and clock - seen[1] >= float(record.get("ttl", self.ttl))
            if record is None or record.get("released") or expired:
                epoch = int((record or {}).get("epoch", 0)) + 1
                mine = {
                    "holder": self.holder,
                    "epoch": epoch,
                    "since": now_iso(),
                    "ttl": self.ttl,
                    "released": False,
                }
                new = self._put(mine, etag=etag)
                if new is not None:
                    if expired and not (record or {}).get("released"):
                        self.stats.takeovers += 1
                    if waited:
                        self.stats.waits += 1
                        self.stats.wait_seconds += clock - started
                    self._etag, self._record = new, mine
                    return epoch
            waited = True
            if while_waiting is not None:
                while_waiting()
            time.sleep(self.poll)

    def _renew(self) -> bool:
        with self._renewing:
            if self._lost.is_set() or self._etag is None:
                return False
            new = self._put(self._record, etag=self._etag)
            if new is None:
                self._lost.set()
                return False
            self._etag = new
            return True

    @contextmanager
    def hold(self, while_waiting: Waiting = None) -> Iterator[int]:
        with self._local:
            self._lost.clear()
            epoch = self._take(while_waiting)
            self.stats.holds += 1
            stop = threading.Event()
            renewer = threading.Thread(
                target=self._renew_until, args=(stop,), name="songlake-lease", daemon=True
            )
            renewer.start()
            try:
                yield epoch
            finally:
                stop.set()
                renewer.join()
                if not self._lost.is_set():
                    self._put({**self._record, "released": True}, etag=self._etag)
                self._etag = None

    def _renew_until(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl / 3):
            try:
                if not self._renew():
                    return
            except StorageServiceError:
                continue  # the next renewal, or check(), tries again

    def check(self) -> None:
        """Renew now; WriteConflict if another writer took the lease over meanwhile."""
        if not self._renew():
            self.stats.lost += 1
            raise WriteConflict(f"the writer lease s3://{self.bucket}/{self.key} was taken over")

    def info(self) -> dict[str, Any]:
        record, _ = self._get()
        if record is None:
            return {"kind": self.kind, "held": False, "holder": None, "epoch": 0}
        return {"kind": self.kind, "held": not record.get("released"), **record}
