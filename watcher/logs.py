"""Structured logs: one JSON object per line on stderr, so a log shipper needs no parsing rules.

Watcher code logs through ``logging.getLogger("songlake.watcher")`` and passes its fields with
``extra={"event": ..., "path": ..., "analysisId": ...}``; ``JsonFormatter`` puts every such
field next to the time, level and message.
"""

from __future__ import annotations

import json
import logging
import sys

from catalog.model import utc_iso

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": utc_iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: int = logging.INFO) -> logging.Handler:
    """Send songlake's logs to stderr as JSON lines (idempotent); returns the handler."""
    root = logging.getLogger("songlake")
    for handler in root.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            root.setLevel(level)
            return handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    return handler
