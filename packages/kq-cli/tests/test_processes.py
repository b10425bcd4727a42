"""Real `kq consume` processes on one sqlite queue: competition, crashes and signals.

The workers run kq.core.testing's recorder command (configured as the console prefix), which appends
"start/done <item> <worker label> <delivery count>" lines to a log and can sleep to outlive the
visibility timeout (1 s here), so these tests also prove that leases are extended while a command runs.
"""

from __future__ import annotations

import collections
import os
import signal

import psutil
import pytest

from kq.core import App
from kq.core.testing import Workspace

pytestmark = pytest.mark.slow

CONFIG = """
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "queues.sqlite3"
visibility_timeout = 1.0
poll_interval = 0.05

[queues.jobs]

[allow]
commands = ["record"]
"""


@pytest.fixture
def space(workspace: Workspace) -> Workspace:
    """A workspace with a sqlite queue ``jobs`` (1 s visibility timeout) whose workers run the recorder."""
    workspace.write_config(CONFIG)
    return workspace


def _info(space: Workspace, queue: str = "jobs") -> dict[str, int]:
    info: dict[str, int] = space.kq_json("managequeue", "info", queue)
    return info


def _done_lines(space: Workspace) -> int:
    return sum(1 for words in space.lines() if words[0] == "done")


def test_two_consumers_never_process_a_message_twice(space: Workspace) -> None:
    """40 messages, two live workers, some commands outliving the lease: each runs exactly once."""
    calls = [
        {"command": "record", "arguments": [f"item{i}"], "options": {"sleep": "2.5"} if i % 10 == 0 else {}}
        for i in range(40)
    ]
    with App.from_config(space.config) as app:
        app.command_producer("jobs").publish_batch(calls)
    first = space.start_consumer("jobs", "A")
    second = space.start_consumer("jobs", "B")

    space.wait_for(lambda: _done_lines(space) >= 40, 90, "40 done lines")
    assert space.stop(first) == 0
    assert space.stop(second) == 0

    lines = space.lines()
    starts = collections.Counter(words[1] for words in lines if words[0] == "start")
    assert starts == {f"item{i}": 1 for i in range(40)}, "some message was executed twice"
    assert all(words[3] == "1" for words in lines), "no message should have been redelivered"
    workers = collections.Counter(words[2] for words in lines if words[0] == "done")
    assert set(workers) == {"A", "B"}, f"both workers should have worked: {workers}"
    info = _info(space)
    assert (info["messages"], info["in_flight"]) == (0, 0)


def test_sigkill_mid_message_loses_nothing(space: Workspace) -> None:
    """A worker killed with SIGKILL while a command runs: the message comes back after the lease."""
    space.kq("queuecommand", "jobs", "record", "precious", "-o", "sleep-first=30")
    victim = space.start_consumer("jobs", "victim")
    space.wait_for(lambda: ["start", "precious", "victim", "1"] in space.lines(), 30, "the victim's start")
    orphans = psutil.Process(victim.pid).children(recursive=True)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    for child in orphans:  # the command survives its worker (own session); stop it, as a crashed host would
        child.kill()
    assert _info(space)["in_flight"] == 1

    rescuer = space.start_consumer("jobs", "rescuer", "-m", "1")
    assert rescuer.wait(timeout=30) == 0
    lines = space.lines()
    assert ["start", "precious", "rescuer", "2"] in lines
    assert ["done", "precious", "rescuer", "2"] in lines
    info = _info(space)
    assert (info["messages"], info["in_flight"]) == (0, 0)


def test_sigterm_finishes_the_current_message(space: Workspace) -> None:
    """SIGTERM during a 2-second command: the command completes, is acknowledged, the worker exits 0."""
    space.kq("queuecommand", "jobs", "record", "graceful", "-o", "sleep=2")
    worker = space.start_consumer("jobs", "worker")
    space.wait_for(lambda: ["start", "graceful", "worker", "1"] in space.lines(), 30, "the start")
    assert space.stop(worker) == 0
    assert "Stopped because: received SIGTERM" in space.output("worker")
    assert ["done", "graceful", "worker", "1"] in space.lines()
    info = _info(space)
    assert (info["messages"], info["in_flight"]) == (0, 0)
