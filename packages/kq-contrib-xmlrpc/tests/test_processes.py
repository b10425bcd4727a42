"""End to end with real processes: ``kq queuexmlrpc``, then ``kq consume`` calls the server in this test.

The worker loads the ``xmlrpc`` consumer through its entry point and a ``[[listeners]]`` module from the
workspace folder (on PYTHONPATH), which writes each ``message_consumed`` result to a file.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from kq.core.testing import Workspace

if TYPE_CHECKING:
    from conftest import RecordingServer

pytestmark = pytest.mark.slow

LISTENER = """
import json
import pathlib

def write_result(event):
    results = pathlib.Path(__file__).with_name("results.jsonl")
    line = json.dumps({"queue": event.delivery.queue, "result": event.result}) + "\\n"
    with results.open("a") as handle:
        handle.write(line)
"""


def _config(server: str) -> str:
    return f"""
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "queues.sqlite3"
poll_interval = 0.05

[queues.rpc]
consumer = "xmlrpc"

[allow.xmlrpc]
{json.dumps(server)} = ["add", 're:report\\..*']

[[listeners]]
event = "message_consumed"
handler = "xmlrpc_results:write_result"
"""


@pytest.fixture
def space(workspace: Workspace, rpc_server: RecordingServer) -> Workspace:
    workspace.write_config(_config(rpc_server.url), recorder=False)
    (workspace.root / "xmlrpc_results.py").write_text(LISTENER)
    return workspace


def _results(space: Workspace) -> list[dict[str, Any]]:
    path = space.root / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_queued_call_reaches_the_server_and_its_result_the_listener(
    space: Workspace, rpc_server: RecordingServer
) -> None:
    queued = space.kq_json("queuexmlrpc", "rpc", rpc_server.url, "add", "-j", "[2, 3]")
    assert queued["body"] == {"server": rpc_server.url, "method": "add", "arguments": [2, 3]}

    done = space.kq("consume", "rpc", "-m", "1", "--summary-interval", "0")  # a line per message

    assert rpc_server.calls == [("add", (2, 3))]
    assert _results(space) == [{"queue": "rpc", "result": 5}]
    assert "XML-RPC add on" in done.stderr
    assert space.kq_json("managequeue", "info", "rpc")["messages"] == 0


def test_a_running_worker_calls_and_dead_letters(space: Workspace, rpc_server: RecordingServer) -> None:
    worker = space.start_consumer("rpc", "worker")
    space.kq("queuexmlrpc", "rpc", rpc_server.url, "report.build")
    space.kq("queuexmlrpc", "rpc", rpc_server.url, "fail", "refused by the allow-list")
    space.kq("queuexmlrpc", "rpc", rpc_server.url, "add", "con", "cat")

    space.wait_for(lambda: len(_results(space)) >= 2, 60, "two results")
    space.wait_for(
        lambda: space.kq_json("managequeue", "info", "rpc.failed")["messages"] == 1, 30, "a dead letter"
    )
    assert space.stop(worker) == 0

    assert [r["result"] for r in _results(space)] == [{"ok": True, "items": [1, 2.5, "three"]}, "concat"]
    assert [name for name, _ in rpc_server.calls] == ["report.build", "add"]
    assert "method 'fail' of XML-RPC server" in space.output("worker")
