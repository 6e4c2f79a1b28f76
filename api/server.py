"""Serving the app with waitress: several worker threads, so publish (which reads object storage)
never stops the API from answering, Score's callbacks included."""

from __future__ import annotations

import errno
import logging
import signal
import socket
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


def listen_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port, in one line (None when it can).

    Asked before anything starts, so that a second ``serve`` on a taken port says so instead of
    announcing itself and failing later. Binds the way waitress does (``SO_REUSEADDR``), so only
    a listening socket counts, not connections of an earlier server still closing.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return bind_problem(exc, host, port)
    return None


def bind_problem(exc: OSError, host: str, port: int) -> str:
    """The one line that says why binding host:port failed."""
    if exc.errno == errno.EADDRINUSE:
        return f"{host}:{port} is in use (another songlake serve?): stop it or pass --port"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def serve(server: ApiServer) -> None:
    """Run a bound server until interrupted (Ctrl-C, or SIGTERM: the caller's cleanup then runs,
    such as stopping the watcher and its upload processes)."""
    if threading.current_thread() is not threading.main_thread():
        server.run()
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
