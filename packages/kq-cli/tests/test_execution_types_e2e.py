"""End to end, one test per execution type: a real producer process queues on sqlite, a real `kq consume`
process executes the message, and a `message_consumed` listener configured in kq.toml records the result."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from kq.core.testing import Workspace

pytestmark = pytest.mark.slow

CONFIG = """
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "queues.sqlite3"
poll_interval = 0.05

[queues.cmd]

[queues.inproc]
consumer = "inprocess_console_command"

[queues.svc]
consumer = "service"

[queues.web]
consumer = "http"

[allow]
commands = ["echoback"]
urls = ["127.0.0.1"]

[allow.services]
"e2e_service" = ["greet"]

[[listeners]]
event = "message_consumed"
handler = "mylistener:record"
"""

LISTENER = """
import json, os

def record(event):
    result = event.result.as_dict() if hasattr(event.result, "as_dict") else event.result
    line = json.dumps({"queue": event.delivery.queue, "kind": event.handler.kind, "pid": os.getpid(),
                       "result": result})
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.jsonl"), "a") as out:
        out.write(line + "\\n")
"""

SERVICE = """
import os

def greet(name, punctuation="!"):
    return {"greeting": f"Hello {name}{punctuation}", "pid": os.getpid()}
"""

ECHO = re.compile(r"It is .* and process with pid (\d+) on host .* says: (.*)\n")


@pytest.fixture
def space(workspace: Workspace) -> Workspace:
    workspace.write_config(CONFIG, recorder=False)
    (workspace.root / "mylistener.py").write_text(LISTENER)
    (workspace.root / "e2e_service.py").write_text(SERVICE)
    return workspace


def consume_one(space: Workspace, queue: str) -> dict[str, Any]:
    """Run one real worker for one message; return what the listener recorded in it."""
    worker = space.start_consumer(queue, f"e2e-{queue}", "-m", "1", "-t", "45")
    assert worker.wait(timeout=60) == 0, space.output(f"e2e-{queue}")
    assert "Stopped because: message limit of 1 reached" in space.output(f"e2e-{queue}")
    lines = (space.root / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1, lines
    record: dict[str, Any] = json.loads(lines[0])
    assert record["pid"] == worker.pid  # the listener ran in the worker process
    assert space.kq_json("managequeue", "info", f"{queue}.failed")["messages"] == 0
    return record


@pytest.mark.parametrize(
    ("queue", "kind", "in_worker"),
    [("cmd", "console_command", False), ("inproc", "inprocess_console_command", True)],
)
def test_console_command(space: Workspace, queue: str, kind: str, in_worker: bool) -> None:
    """The same `kq queuecommand` message, run as a child process or inside the worker."""
    space.kq("queuecommand", queue, "echoback", "hello e2e; $(touch PWNED)")
    record = consume_one(space, queue)
    result = record["result"]
    assert (record["queue"], record["kind"], result["exit_code"], result["stderr"]) == (queue, kind, 0, "")
    match = ECHO.fullmatch(result["stdout"])
    assert match, result["stdout"]
    assert match[2] == "hello e2e; $(touch PWNED)"
    assert (int(match[1]) == record["pid"]) is in_worker
    assert result["argv"][-2:] == ["echoback", "hello e2e; $(touch PWNED)"]
    assert not (space.root / "PWNED").exists()


def test_service_call(space: Workspace) -> None:
    space.kq("queueservice", "svc", "e2e_service", "greet", "World", "-k", "punctuation=?")
    record = consume_one(space, "svc")
    assert (record["queue"], record["kind"]) == ("svc", "service")
    assert record["result"] == {"greeting": "Hello World?", "pid": record["pid"]}


class _Hook(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, str, str]]] = []

    def log_message(self, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.seen.append((self.command, self.path, self.headers.get("X-Token", ""), body))
        reply = b'{"accepted": true}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture
def hook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_http_request(space: Workspace, hook: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{hook.server_address[1]}/jobs/report"
    space.kq("queuehttp", "web", url, "-X", "POST", "--json", '{"week": 47}', "-H", "X-Token=t1", "-p", "n=1")
    record = consume_one(space, "web")
    assert _Hook.seen == [("POST", "/jobs/report?n=1", "t1", '{"week": 47}')]
    assert (record["queue"], record["kind"]) == ("web", "http")
    result = record["result"]
    assert (result["url"], result["status"], result["body"]) == (url + "?n=1", 201, '{"accepted": true}')
    assert result["headers"]["Content-Type"] == "application/json"
