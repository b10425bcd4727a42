"""Real `kq consume` processes facing a malformed sqlite row and a database deleted under them.

Both stopped or stalled every worker before (issue 10): a row whose headers are not a JSON object
raised in the lease path and each worker exited 1 in turn; a deleted database left the worker polling
the deleted file while producers wrote to a new one.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time

import pytest

from kq.core import App
from kq.core.testing import Workspace

pytestmark = pytest.mark.slow

CONFIG = """
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "queues.sqlite3"
poll_interval = 0.05

[queues.jobs]

[allow]
commands = ["record"]
"""


@pytest.fixture
def space(workspace: Workspace) -> Workspace:
    workspace.write_config(CONFIG)
    return workspace


def _publish(space: Workspace, item: str) -> None:
    with App.from_config(space.config) as app:
        app.command_producer("jobs").publish("record", [item])


def _done(space: Workspace, item: str) -> bool:
    return any(words[:2] == ["done", item] for words in space.lines())


def test_a_malformed_row_is_dead_lettered_and_the_worker_goes_on(space: Workspace) -> None:
    _publish(space, "first")
    with contextlib.closing(sqlite3.connect(space.root / "queues.sqlite3")) as connection, connection:
        connection.execute(
            "INSERT INTO kq_messages (queue, message_id, body, content_type, headers, routing_key,"
            " available_at, enqueued_at) VALUES ('jobs', 'broken-row', ?, 'application/json', 'not json',"
            " '', 0, 0)",
            (b'{"command": "record", "arguments": ["never"]}',),
        )
    _publish(space, "behind")
    worker = space.start_consumer("jobs", "A")
    space.wait_for(lambda: _done(space, "behind"), 30, "the message behind the malformed row")
    assert worker.poll() is None, f"the worker stopped: {space.output('A')}"
    assert space.stop(worker) == 0
    assert not _done(space, "never")
    dead = space.kq_json("failed", "show", "jobs")
    rows = dead["messages"] if isinstance(dead, dict) else dead
    [row] = [r for r in rows if r["message_id"] == "broken-row"]
    assert row["reason"] == "malformed", row
    assert "headers column" in space.output("A")


def test_a_worker_follows_its_database_when_the_file_is_deleted(space: Workspace) -> None:
    _publish(space, "before")
    worker = space.start_consumer("jobs", "A")
    space.wait_for(lambda: _done(space, "before"), 30, "the first message")
    for path in space.root.glob("queues.sqlite3*"):
        path.unlink()
    started = time.monotonic()
    _publish(space, "after")  # a new file, as `kq queuecommand` makes it
    space.wait_for(lambda: _done(space, "after"), 15, "the message published to the new file")
    assert time.monotonic() - started < 15
    assert worker.poll() is None
    assert space.stop(worker) == 0
    assert "was deleted" in space.output("A")
