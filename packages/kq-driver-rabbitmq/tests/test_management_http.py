"""The management API client on the standard library's HTTP client (no requests): basic authentication,
JSON answers, 404 as "no such queue", other statuses and non-JSON answers as ManagementError."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kq.drivers.rabbitmq import ManagementError
from kq.drivers.rabbitmq._management import Management

QUEUES = [{"name": "jobs", "messages": 3}, {"name": "a/b", "messages": 0}]


class _Api(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]]  # (path, Authorization)

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        answers: dict[str, tuple[int, bytes]] = {
            "/api/queues/%2F": (200, json.dumps(QUEUES).encode()),
            "/api/queues/%2F/a%2Fb": (200, json.dumps(QUEUES[1]).encode()),
            "/api/queues/%2F/broken": (200, b"<html>proxy error</html>"),
            "/api/queues/%2F/boom": (500, b"{}"),
        }
        status, body = answers.get(self.path, (404, b'{"error": "Object Not Found"}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def api() -> Iterator[tuple[Management, list[tuple[str, str | None]]]]:
    seen: list[tuple[str, str | None]] = []
    handler = type("Api", (_Api,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Management(f"http://127.0.0.1:{server.server_port}/", "kq", "sécret", "/", timeout=30.0), seen
    finally:
        server.shutdown()
        server.server_close()


def test_queues_with_basic_authentication(api: tuple[Management, list[tuple[str, str | None]]]) -> None:
    management, seen = api
    assert management.queues() == QUEUES
    expected = "Basic " + base64.b64encode("kq:sécret".encode()).decode()
    assert seen == [("/api/queues/%2F", expected)]


def test_one_queue_and_a_missing_one(api: tuple[Management, list[tuple[str, str | None]]]) -> None:
    management, _ = api
    assert management.queue("a/b") == QUEUES[1]
    assert management.queue("nosuch") is None


def test_other_statuses_and_non_json_are_management_errors(
    api: tuple[Management, list[tuple[str, str | None]]],
) -> None:
    management, _ = api
    with pytest.raises(ManagementError, match=r"answered 500 for /api/queues/%2F/boom$"):
        management.queue("boom")
    with pytest.raises(
        ManagementError, match=r"answered /api/queues/%2F/broken with something that is not JSON"
    ):
        management.queue("broken")


def test_only_http_urls_are_requested() -> None:
    management = Management("file:///etc/passwd", "guest", "guest", "/", timeout=1.0)
    with pytest.raises(ManagementError, match=r"management_url 'file:///etc/passwd' must be an http"):
        management.queues()
