"""S3 for tests: moto's server on 127.0.0.1 (in this process or its own), and a TCP proxy in
front of it that a test can cut.

Both are real servers reached over loopback by real boto3 calls; nothing of songlake is mocked.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class MotoS3:
    """moto's threaded server on a free loopback port."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.port = port
        self.url = f"http://{host}:{port}"

    def client(self, endpoint_url: str | None = None) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
        )

    def require_auth(self, on: bool) -> None:
        """Make moto check credentials (unknown keys are refused) or stop checking them."""
        body = b"0" if on else b"inf"
        req = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth",
            data=body,
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(req, timeout=10) as response:
            json.loads(response.read())

    def stop(self) -> None:
        self._server.stop()


class MotoProcess(MotoS3):
    """moto's server in a process of its own. deltalake calls that hold the GIL while they wait
    for S3 (``history``, ``is_deltatable``) starve a server running in the same interpreter until
    their requests time out; a server in another process answers them."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(30)


@contextmanager
def moto_server() -> Iterator[MotoS3]:
    """moto's server for the duration of a fixture, its request log quiet."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = MotoS3()
    try:
        yield server
    finally:
        server.stop()


class TcpProxy:
    """A loopback TCP proxy to ``upstream_port`` that a test can cut.

    ``rewrite`` changes the bytes going upstream (an endpoint that ignores a header, say).
    ``cut()`` drops every open connection and refuses (accepts then closes) new ones until
    ``restore()``; ``cut_after(n)`` does so once ``n`` bytes have gone upstream, ``stay_down``
    deciding whether it then stays down or lets the next connections through.
    """

    def __init__(
        self, upstream_port: int, *, rewrite: Callable[[bytes], bytes] | None = None
    ) -> None:
        self._upstream = upstream_port
        self._rewrite = rewrite  # applied to every chunk going upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.up = True
        self.bytes_up = 0  # client -> server, since the proxy started
        self.refused = 0  # connections closed at once while down
        self._limit: int | None = None
        self._stay_down = True
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        with self._lock:
            self.up = False
            self._limit = None
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            _close(s)

    def restore(self) -> None:
        with self._lock:
            self.up = True
            self._limit = None

    def cut_after(self, nbytes: int, *, stay_down: bool = True) -> None:
        with self._lock:
            self._limit = self.bytes_up + nbytes
            self._stay_down = stay_down

    def close(self) -> None:
        _close(self._listener)
        self.cut()
        self._acceptor.join(10)
        for t in list(self._threads):
            t.join(10)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.up:
                self.refused += 1
                _close(client)
                continue
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            with self._lock:
                self._sockets += [client, upstream]
                self._threads = [t for t in self._threads if t.is_alive()]
                for src, dst, upward in ((client, upstream, True), (upstream, client, False)):
                    t = threading.Thread(
                        target=self._pump, args=(src, dst, upward), name="tcp-pump", daemon=True
                    )
                    self._threads.append(t)
                    t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        try:
            while data := src.recv(65536):
                if upward:
                    with self._lock:
                        self.bytes_up += len(data)
                        over = self._limit is not None and self.bytes_up > self._limit
                        stay_down = self._stay_down
                    if over:
                        self.cut()
                        if not stay_down:
                            self.restore()
                        return
                if upward and self._rewrite is not None:
                    data = self._rewrite(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
