"""Serving the app with waitress: several worker threads, so publish (which reads object storage)
never stops the API from answering, Score's callbacks included."""

from __future__ import annotations

import logging
import signal
import threading

import waitress
from flask import Flask
from waitress.server import BaseWSGIServer, MultiSocketServer
from waitress.wasyncore import close_all

log = logging.getLogger("songlake.api")


class ApiServer:
    """A bound waitress server: ``run()`` blocks until ``stop()`` is called from another thread."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 8080, threads: int = 8):
        server = waitress.create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="songlake",
            # waitress stops accepting at 100 open connections; keep-alive clients (Song SDKs,
            # score-client, a portal's pool) hold theirs, so allow many more than threads
            connection_limit=max(1000, 4 * threads),
            # a 500-analysis search answer is ~1.3 MB; waitress spills anything over 1 MB to a
            # temporary file by default
            outbuf_overflow=64 * 1024 * 1024,
            # Score's upload parts (20 MiB and more) arrive in the request body: 8 KiB reads
            # (waitress' default) cost a pass of its event loop each
            recv_bytes=1024 * 1024,
        )
        if isinstance(server, MultiSocketServer):  # only when several listen addresses are given
            raise ValueError("songlake serves on one host:port")
        self._server: BaseWSGIServer = server
        self.host = host
        self.port: int = server.effective_port  # the real port when 0 asked for a free one
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run(self) -> None:
        log.info("songlake API on %s", self.url)
        try:
            self._server.run()
        finally:
            self._server.task_dispatcher.shutdown()

    def stop(self) -> None:
        """Close every socket from inside the event loop, which then ends ``run()``."""
        if self._stopping:
            return
        self._stopping = True
        socket_map = self._server._map
        self._server.trigger.pull_trigger(lambda: close_all(socket_map))


def serve(app: Flask, host: str = "127.0.0.1", port: int = 8080, threads: int = 8) -> None:
    """Serve `app` until interrupted (Ctrl-C, or SIGTERM: the caller's cleanup then runs, such as
    stopping the watcher and its upload processes)."""
    server = ApiServer(app, host, port, threads)
    if threading.current_thread() is not threading.main_thread():
        server.run()
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
