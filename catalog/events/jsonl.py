"""The embedded default sink: one message a line in a JSON Lines file under the catalog root."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .sink import Delivery, Record, Sink, SinkSpec


class JsonlSink(Sink):
    """Appends one message a line to ``<root>/events/<name>.jsonl``.

    The file's length is saved with the cursor, and a restart cuts off whatever was written after
    the last save, then writes it again: the log holds each message once, even after kill -9.
    Past ``max_bytes`` the file is renamed ``<name>.<n>.jsonl`` before the next write.
    """

    type = "jsonl"

    def __init__(self, spec: SinkSpec, root: Path) -> None:
        super().__init__(spec)
        path = Path(spec.options.get("path") or f"events/{spec.name}.jsonl")
        self.path = path if path.is_absolute() else root / path
        self.max_bytes = int(spec.options.get("max_bytes", 256 * 1024 * 1024))
        self.fsync = bool(spec.options.get("fsync", True))
        self.offset = 0

    def open(self, state: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        saved = int(state.get("offset", 0))
        size = self.path.stat().st_size if self.path.exists() else 0
        if size > saved:
            with self.path.open("r+b") as fh:  # written after the last cursor save: again later
                fh.truncate(saved)
            size = saved
        self.offset = size

    def state(self) -> dict[str, Any]:
        return {"offset": self.offset}

    def deliver(self, records: Sequence[Record], ctx: Delivery) -> int:
        data = b"".join(r.body + b"\n" for r in records)
        failures = 0
        while not ctx.stopping():
            try:
                if self.offset >= self.max_bytes:
                    self._rotate()
                with self.path.open("ab") as fh:
                    fh.write(data)
                    fh.flush()
                    if self.fsync:
                        os.fsync(fh.fileno())
                self.offset += len(data)
                return len(records)
            except OSError as exc:  # a full or read-only disk: keep trying, never drop
                failures += 1
                ctx.failed(records[0], f"{type(exc).__name__}: {exc}", failures)
                if not ctx.sleep(min(30.0, 0.5 * 2 ** (failures - 1))):
                    break
        return 0

    def _rotate(self) -> None:
        n = 1
        while (target := self.path.with_name(f"{self.path.stem}.{n}{self.path.suffix}")).exists():
            n += 1
        os.replace(self.path, target)
        self.offset = 0
