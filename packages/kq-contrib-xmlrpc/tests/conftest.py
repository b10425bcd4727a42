"""Fixtures: a real XML-RPC server that records every request, and HTTP servers with canned answers.

Every server listens on 127.0.0.1 on a free port, serves from a thread, and is stopped at teardown.
(The workspace fixture, for tests with real kq processes, lives in kq.core.testing.)
"""

from __future__ import annotations

import datetime
import http.server
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

import pytest

from kq.core.testing import workspace

__all__ = ["Canned", "RecordingServer", "canned_server", "rpc_server", "silent_port", "workspace"]


class _RecordingHandler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/", "/RPC2")

    def do_POST(self) -> None:  # noqa: N802 - the standard library's name
        server = self.server
        assert isinstance(server, RecordingServer)
        server.requests.append(self.path)
        super().do_POST()


class RecordingServer(SimpleXMLRPCServer):
    """An XML-RPC server with a few methods; ``requests`` holds every HTTP request's path, ``calls``
    every method called (those inside system.multicall included)."""

    def __init__(self) -> None:
        super().__init__(
            ("127.0.0.1", 0),
            requestHandler=_RecordingHandler,
            logRequests=False,
            allow_none=True,
            use_builtin_types=True,
        )
        self.requests: list[str] = []
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.register_introspection_functions()
        self.register_multicall_functions()
        self.register_function(lambda a, b: a + b, "add")
        self.register_function(lambda *args: list(args), "echo")
        self.register_function(_fail, "fail")
        self.register_function(lambda size: "x" * size, "big")
        self.register_function(lambda: b"\x00\xffbytes", "binary")
        self.register_function(lambda: datetime.datetime(2026, 1, 2, 3, 4, 5), "when")
        self.register_function(lambda: None, "nothing")
        self.register_function(lambda: {"ok": True, "items": [1, 2.5, "three"]}, "report.build")

    @property
    def url(self) -> str:
        """The server's URL (path ``/``)."""
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def _dispatch(self, method: str, params: Iterable[Any]) -> Any:
        arguments = tuple(params)
        self.calls.append((method, arguments))
        return super()._dispatch(method, arguments)


def _fail(message: Any) -> None:
    raise ValueError(message)


def _serve(server: Any) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def rpc_server() -> Iterator[RecordingServer]:
    """A running :class:`RecordingServer`."""
    server = RecordingServer()
    thread = _serve(server)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class Canned:
    """What a canned HTTP server answers to every POST; ``hits`` counts the requests."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.hits = 0
        self.url = ""


@pytest.fixture
def canned_server() -> Iterator[Callable[..., Canned]]:
    """Start HTTP servers answering every POST with a fixed status, headers and body."""
    started: list[tuple[http.server.HTTPServer, threading.Thread]] = []

    def start(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> Canned:
        canned = Canned(status, body, dict(headers or {}))

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                canned.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(canned.status)
                for name, value in canned.headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in canned.headers:
                    self.send_header("Content-Length", str(len(canned.body)))
                self.end_headers()
                self.wfile.write(canned.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        started.append((server, _serve(server)))
        canned.url = f"http://127.0.0.1:{server.server_address[1]}/RPC2"
        return canned

    try:
        yield start
    finally:
        for server, thread in started:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
