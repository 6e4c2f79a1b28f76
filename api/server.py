"""Serving the app with waitress: several worker threads, so publish (which reads object storage)
never stops the API from answering, Score's callbacks included."""

from __future__ import annotations

import logging

import waitress
from flask import Flask
from waitress.server import BaseWSGIServer, MultiSocketServer
from waitress.wasyncore import close_all

log = logging.getLogger("songlake.api")


class ApiServer:
    """A bound waitress server: ``run()`` blocks until ``stop()`` is called from another thread."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 8080, threads: int = 8):
        server = waitress.create_server(
            app, host=host, port=port, threads=threads, ident="songlake"
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
    """Serve `app` until interrupted."""
    ApiServer(app, host, port, threads).run()
