"""kq's reliability promises on SQS, with real ``kq consume`` processes against moto and LocalStack.

Issue 13's "Done when": a command running for three times the visibility timeout runs exactly once
(the lease keeper extends the visibility); two workers with prefetch 10 and slow commands run no
message twice and lose none (the buffer never hands out a lapsed lease); a worker killed with SIGKILL
loses nothing (the message comes back after the visibility timeout); FIFO order within a group holds
across a retry. The visibility timeout is 2 s throughout, so that each test takes seconds.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psutil
import pytest

from kq.core import App
from kq.core.testing import Workspace, unique_queue_name

if TYPE_CHECKING:
    from integration.sqs_fixture import SqsEndpoint

pytestmark = pytest.mark.sqs

#: Seconds a received message stays invisible: short, so that a lapse shows within the test.
VISIBILITY = 2

#: A command for the FIFO test: appends "start|fail|done <item> <label> <delivery count>" to
#: $RECORD_LOG; with --fail-once it fails (status 3) the first time it runs for an item.
FLAKY_COMMAND = """
import os, sys
args = sys.argv[2:]
item = [arg for arg in args if not arg.startswith("--")][0]
log = os.environ["RECORD_LOG"]
def write(word):
    line = f"{word} {item} {os.environ['KQ_LABEL']} {os.environ['KQ_DELIVERY_COUNT']}\\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, line.encode())
    os.close(fd)
write("start")
marker = os.path.join(os.path.dirname(log), "failed-" + item)
if "--fail-once" in args and not os.path.exists(marker):
    open(marker, "w").close()
    write("fail")
    sys.exit(3)
write("done")
"""


def _config(sqs: SqsEndpoint, queue: str, extra: str = "") -> str:
    """kq.toml for one queue on the endpoint, with the short visibility timeout; ``extra`` goes in the
    queue's table."""
    return f"""
default_driver = "aws"

{sqs.driver_table(wait_time=1, visibility_timeout=VISIBILITY)}
[queues.{queue}]
{extra}
[allow]
commands = ["record"]
"""


@pytest.fixture
def queue() -> str:
    """A fresh logical queue name, so that runs on one emulator stay apart."""
    return unique_queue_name("rel")


@pytest.fixture
def space(workspace: Workspace, sqs: SqsEndpoint, queue: str) -> Iterator[Workspace]:
    """A workspace whose workers run the recorder command (``Workspace.RECORDER_COMMAND``)."""
    workspace.write_config(_config(sqs, queue))
    yield workspace
    for name in (queue, f"{queue}.failed"):
        workspace.kq("managequeue", "delete", name, check=False)


def _publish(space: Workspace, queue: str, items: list[str], **options: str) -> None:
    """Queue ``record <item> --option=value...`` for each item, in this order, in one batch call."""
    with App.from_config(space.config) as app:
        app.command_producer(queue).publish_batch(
            [{"command": "record", "arguments": [item], "options": options} for item in items]
        )


def _runs(space: Workspace, word: str = "start") -> collections.Counter[str]:
    """How many recorder lines with ``word`` each item has."""
    return collections.Counter(line[1] for line in space.lines() if line[0] == word)


def _assert_empty(space: Workspace, queue: str) -> None:
    """Nothing is left on the queue: not waiting, not in flight, not delayed."""
    info = space.kq_json("managequeue", "info", queue)
    counts = {key: info.get(key, 0) for key in ("messages", "in_flight", "delayed")}
    assert counts == {"messages": 0, "in_flight": 0, "delayed": 0}, info


def _assert_no_lapsed_settlement(space: Workspace, *labels: str) -> None:
    """No worker settled a message after its lease lapsed (the warning the driver consumer logs then)."""
    for label in labels:
        output = space.output(label)
        assert "may run again" not in output, f"{label} settled a message after its lease lapsed:\n{output}"


def test_command_three_times_the_visibility_timeout_runs_once(space: Workspace, queue: str) -> None:
    """A 6 s command on a 2 s visibility timeout, with a second worker waiting: the lease keeper
    extends the visibility, so the waiting worker never gets the message, which runs exactly once."""
    _publish(space, queue, ["long"], sleep=str(3 * VISIBILITY))
    started = time.monotonic()
    first = space.start_consumer(queue, "first")
    space.wait_for(lambda: _runs(space)["long"] >= 1, 30, "the long command's start")
    second = space.start_consumer(queue, "second")  # would receive the message if its visibility lapsed
    space.wait_for(lambda: _runs(space, "done")["long"] >= 1, 30, "the long command's end")
    assert time.monotonic() - started >= 3 * VISIBILITY
    time.sleep(VISIBILITY + 1)  # a redelivery, had the delete come too late, would show now
    assert space.stop(first) == 0, space.output("first")
    assert space.stop(second) == 0, space.output("second")
    starts = [line for line in space.lines() if line[0] == "start"]
    assert len(starts) == 1, space.lines()
    assert starts[0][2:] == ["first", "1"], starts  # received once: never lapsed and came back
    _assert_no_lapsed_settlement(space, "first", "second")
    _assert_empty(space, queue)


def test_two_prefetching_workers_run_each_message_once(space: Workspace, queue: str) -> None:
    """30 messages, two workers with --prefetch 10, each command about 0.5 s: a worker's tenth buffered
    message waits far longer than the 2 s visibility timeout, so the buffer must renew or drop what it
    holds. Every message runs exactly once and none is lost."""
    items = [f"m{n:02d}" for n in range(30)]
    _publish(space, queue, items, sleep="0.4")
    workers = [space.start_consumer(queue, label, "--prefetch", "10") for label in ("one", "two")]
    space.wait_for(lambda: set(_runs(space, "done")) >= set(items), 50, "every message done")
    time.sleep(VISIBILITY + 1)  # a message handed out twice would start again by now
    for worker in workers:
        assert space.stop(worker) == 0
    starts = _runs(space)
    assert {item: count for item, count in starts.items() if count != 1} == {}, space.lines()
    assert set(starts) == set(items), space.lines()
    assert {line[2] for line in space.lines()} == {"one", "two"}, "both workers should have run messages"
    _assert_no_lapsed_settlement(space, "one", "two")
    _assert_empty(space, queue)


def test_sigkill_mid_command_loses_nothing(space: Workspace, queue: str) -> None:
    """A worker killed (SIGKILL) while its command runs: the message comes back once its visibility
    ends, and another worker runs it, with ApproximateReceiveCount 2."""
    _publish(space, queue, ["precious"], **{"sleep-first": "60"})
    victim = space.start_consumer(queue, "victim")
    space.wait_for(lambda: ["start", "precious", "victim", "1"] in space.lines(), 30, "the victim's start")
    orphans = psutil.Process(victim.pid).children(recursive=True)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    for child in orphans:  # the command itself, which would otherwise go on and record "done"
        child.kill()
    killed = time.monotonic()
    rescuer = space.start_consumer(queue, "rescuer", "-m", "1", "-t", "50")
    assert rescuer.wait(timeout=60) == 0, space.output("rescuer")
    assert time.monotonic() - killed < 30, "the message took too long to come back"
    assert space.lines() == [
        ["start", "precious", "victim", "1"],
        ["start", "precious", "rescuer", "2"],
        ["done", "precious", "rescuer", "2"],
    ]
    _assert_empty(space, queue)


def test_fifo_order_within_a_group_holds_across_a_retry(
    workspace: Workspace, sqs: SqsEndpoint, queue: str
) -> None:
    """A FIFO queue with a retry policy of two attempts; four messages in one group, the first failing
    once: it runs again before the second one, so the group's order is first, first, second, third,
    fourth: the retry stays at the head of its group (retry_in_place), its attempt counted from the
    receive count; the retry delay (about 1 s) is honoured as a visibility change."""
    (workspace.root / "flaky.py").write_text(FLAKY_COMMAND)
    extra = "fifo = true\nretry = { max_attempts = 2, delay = 1 }\n"
    workspace.write_config(
        _config(sqs, queue, extra)
        + f"""
[console]
prefix = [{json.dumps(sys.executable)}, {json.dumps(str(workspace.root / "flaky.py"))}]
env = {{ RECORD_LOG = {json.dumps(str(workspace.log))} }}
""",
        recorder=False,
    )
    try:
        with App.from_config(workspace.config) as app:
            producer = app.command_producer(queue)
            producer.publish_batch(
                [
                    {"command": "record", "arguments": ["first"], "options": {"fail-once": None}},
                    *({"command": "record", "arguments": [item]} for item in ("second", "third", "fourth")),
                ]
            )
        worker = workspace.start_consumer(queue, "fifo")
        workspace.wait_for(
            lambda: set(_runs(workspace, "done")) >= {"first", "second", "third", "fourth"},
            40,
            "every message done",
        )
        assert workspace.stop(worker) == 0
        output = workspace.output("fifo")
        assert "attempt 2 queued again" in output, output
        assert "kept ahead of the messages queued after it" in output, output
        outcomes = [(line[0], line[1]) for line in workspace.lines() if line[0] != "start"]
        assert outcomes == [
            ("fail", "first"),
            ("done", "first"),
            ("done", "second"),
            ("done", "third"),
            ("done", "fourth"),
        ], f"the group's order did not hold across the retry: {outcomes}"
        _assert_empty(workspace, queue)
    finally:
        for name in (queue, f"{queue}.failed"):
            workspace.kq("managequeue", "delete", name, check=False)
