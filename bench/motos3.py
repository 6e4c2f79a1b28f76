"""moto's S3 app alone, served by werkzeug on a loopback port, for the storage benchmark.

    python bench/motos3.py PORT

Only the S3 backend app (no per-request service dispatch), so moto spends its time on S3.
``POST /_seed`` with JSON lines ``{"bucket", "key", "data" (base64), "metadata"}`` puts objects
straight into moto's backend: seeding 200,000 keys through the HTTP API would take half an hour
at moto's ~130 requests/s on two cores; the benchmark then reads them over real S3 calls.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
from moto.s3.models import FakeKey, s3_backends
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


def _lock_etags() -> None:
    """moto computes a key's ETag lazily, reading its buffer without the key's lock: two
    requests that ask at once (a part PUT answering its ETag while a ListParts lists it) read
    interleaved bytes and cache a wrong ETag for good. Compute it under the lock ``value`` uses."""
    plain = FakeKey.etag.fget

    def etag(self: Any) -> str:
        with self.lock:
            return plain(self)

    FakeKey.etag = property(etag)  # type: ignore[method-assign, assignment]


def main(port: int) -> None:
    _lock_etags()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    s3_app = create_backend_app("s3")
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/_seed":
            request = Request(environ)
            n = 0
            for line in request.get_data().splitlines():
                item = json.loads(line)
                key = backend.put_object(
                    item["bucket"], item["key"], base64.b64decode(item["data"])
                )
                if item.get("metadata"):
                    key.set_metadata(item["metadata"])
                n += 1
            return Response(json.dumps({"seeded": n}))(environ, start_response)
        return s3_app(environ, start_response)

    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"ready {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
