"""Serving the app with waitress: several worker threads, so publish (which reads object storage)
never stops the API from answering, Score's callbacks included."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
from typing import Any

import waitress
from flask import Flask
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer
from waitress.task import ErrorTask
from waitress.wasyncore import close_all

from .errors import http_error_id, song_error_body
from .jsonio import dumps_bytes
from .params import EXTENSION, SETTINGS

log = logging.getLogger("songlake.api")


class SongErrorTask(ErrorTask):
    """waitress's own answers (a header section too large, a body over the limit, a request it
    cannot parse) as a SongError, like every other non-2xx answer."""

    def execute(self) -> None:
        error = self.request.error
        path = self.request.path or "/"
        text = f"{error.reason}: {error.body}" if error.body else error.reason
        body = dumps_bytes(song_error_body(http_error_id(error.code), error.code, text, path))
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class SongChannel(HTTPChannel):
    """A connection; one over its client's share (``per_client`` on the server) is answered
    503 service.unavailable and closed, so that one client cannot hold every connection."""

    error_task_class = SongErrorTask

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
        super().__init__(server, sock, addr, adj, map)
        limit = getattr(server, "per_client", 0)
        host = _host(addr)
        if not limit or host is None:
            return
        same = sum(1 for ch in server.active_channels.values() if _host(ch.addr) == host)
        if same > limit:
            text = f"Too many connections from {host} (at most {limit} at a time)"
            body = dumps_bytes(song_error_body("service.unavailable", 503, text, "/"))
            head = (
                f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
            )
            self.outbufs[-1].append(head.encode() + body)
            self.total_outbufs_len += len(head) + len(body)
            self.close_when_flushed = True


def _host(addr: Any) -> str | None:
    return addr[0] if isinstance(addr, tuple) and addr else None


class ApiServer:
    """A bound waitress server: ``run()`` blocks until ``stop()`` is called from another thread."""

    def __init__(
        self,
        app: Flask,
        host: str = "127.0.0.1",
        port: int = 8080,
        threads: int = 8,
        *,
        max_body: int | None = None,
        per_client: int | None = None,
    ):
        settings = app.extensions.get(SETTINGS)
        if max_body is None and settings is not None:
            # a part of a Score upload into the local store comes through songlake (20 MiB and
            # more); every other route is held to its own, smaller limit by Content-Length
            catalog = app.extensions.get(EXTENSION)
            part = getattr(getattr(catalog, "store", None), "part_size", 0)
            max_body = max(
                settings.api_max_body_bytes, settings.max_payload_bytes, part + (1 << 20)
            )
        server = waitress.create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="songlake",
            # a larger body is refused from its Content-Length, before it is read or spooled
            max_request_body_size=max_body or 16 << 20,
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
        server.channel_class = SongChannel
        server.per_client = (
            per_client
            if per_client is not None
            else (settings.api_max_connections_per_client if settings is not None else 0)
        )
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
        try:
            self._server.trigger.pull_trigger(lambda: _close_all(socket_map))
        except OSError:  # the loop has ended already, and closed its trigger with its sockets
            close_all(socket_map)


def _close_all(socket_map: dict) -> None:
    """Close every socket, and with each connection the files it was still sending."""
    for channel in list(socket_map.values()):
        if isinstance(channel, HTTPChannel):
            channel.handle_close()
    close_all(socket_map)


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
