"""Real ``kq consume`` processes (issue 17): several queues in priority order, ``--burst``, the time
limit of in-process handlers, and the refusal of a worker that can execute nothing.

The queues live in one sqlite file; their consumers are functions of modules written into the
workspace (on the workers' PYTHONPATH) that append what they handle to the recorder's log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import pytest

from kq.core import DEAD_LETTER_ERROR, DEAD_LETTER_REASON, App
from kq.core.testing import Workspace

pytestmark = pytest.mark.slow

CONFIG = """
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "queues.sqlite3"
visibility_timeout = 2.0
poll_interval = 0.05

[queues.high]
consumer = "kq_priority:record"

[queues.low]
consumer = "kq_priority:record"
"""

#: ``record`` appends "<queue> <n>" to $RECORD_LOG; a body with "push" publishes that many messages to
#: the queue "high" first, so that the next message handled shows which queue the worker looked at.
PRIORITY_CONSUMER = """
import json, os

from kq.core import DEAD_LETTER_ERROR, DEAD_LETTER_REASON, App

def record(body, delivery):
    if body.get("push"):
        with App.from_config(os.environ["KQ_TEST_CONFIG"]) as app:
            app.producer("high").publish_batch(
                [json.dumps({"n": f"pushed{i}"}) for i in range(body["push"])]
            )
    fd = os.open(os.environ["RECORD_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{delivery.queue} {body['n']}\\n".encode())
    os.close(fd)
"""

#: A slow consumer (half a second a message) that records like ``record``.
SLOW_CONSUMER = """
import os, time

def slow(body, delivery):
    time.sleep(0.5)
    fd = os.open(os.environ["RECORD_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{delivery.queue} {body['n']}\\n".encode())
    os.close(fd)
"""

#: A service that hangs, for the time limit: ``kq_hang.forever`` sleeps far past any limit.
HANG_SERVICE = """
import os, time

def mark(word):
    fd = os.open(os.environ["RECORD_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{word}\\n".encode())
    os.close(fd)

def forever():
    mark("start")
    time.sleep(3600)
    mark("done")

def quick():
    mark("quick")
    return "ok"
"""


@pytest.fixture
def space(workspace: Workspace) -> Workspace:
    """A workspace with sqlite queues ``high`` and ``low`` handled by ``kq_priority:record``."""
    workspace.write_config(CONFIG, recorder=False)
    (workspace.root / "kq_priority.py").write_text(PRIORITY_CONSUMER)
    (workspace.root / "kq_hang.py").write_text(HANG_SERVICE)
    return workspace


def _publish(space: Workspace, queue: str, *bodies: Mapping[str, object]) -> None:
    with App.from_config(space.config) as app:
        app.producer(queue).publish_batch([json.dumps(body) for body in bodies])


def _consume(space: Workspace, *argv: str) -> tuple[int, str]:
    """Run ``kq consume`` in the foreground; its exit status and output."""
    done = space.kq("consume", *argv, "--poll-interval", "0.3", check=False)
    return done.returncode, done.stdout + done.stderr


def _info(space: Workspace, queue: str) -> dict[str, int]:
    info: dict[str, int] = space.kq_json("managequeue", "info", queue)
    return info


def _dead_letters(space: Workspace, queue: str) -> list[tuple[str, str]]:
    """The reason and error of each dead letter in ``queue`` (received, then released)."""
    letters: list[tuple[str, str]] = []
    with App.from_config(space.config) as app:
        consumer = app.driver().consumer(queue, prefetch=100)
        while (delivery := consumer.receive(0.5)) is not None:
            headers = delivery.headers
            letters.append((headers.get(DEAD_LETTER_REASON, ""), headers.get(DEAD_LETTER_ERROR, "")))
        consumer.close()
    return letters


def _env(space: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KQ_TEST_CONFIG", str(space.config))


def test_two_queues_are_consumed_in_priority_order(space: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """``kq consume high low``: high drains first; after each low message the worker looks at high
    again (the first low message pushes two high ones, handled before the second low one)."""
    _env(space, monkeypatch)
    _publish(space, "low", {"n": "low1", "push": 2}, {"n": "low2"}, {"n": "low3"})
    _publish(space, "high", {"n": "high1"}, {"n": "high2"})

    status, output = _consume(space, "high", "low", "--burst")

    assert status == 0, output
    assert "Stopped because: drained" in output
    assert [" ".join(words) for words in space.lines()] == [
        "high high1",
        "high high2",
        "low low1",
        "high pushed0",
        "high pushed1",
        "low low2",
        "low low3",
    ]
    for queue in ("high", "low"):
        info = _info(space, queue)
        assert (info["messages"], info["in_flight"]) == (0, 0)


def test_limits_count_across_the_queues(space: Workspace) -> None:
    """-m 3 with messages on both queues: three messages in all, the high ones first."""
    _publish(space, "low", {"n": "low1"}, {"n": "low2"})
    _publish(space, "high", {"n": "high1"}, {"n": "high2"})

    status, output = _consume(space, "high", "low", "-m", "3")

    assert status == 0, output
    assert "message limit of 3 reached" in output
    assert [" ".join(words) for words in space.lines()] == ["high high1", "high high2", "low low1"]
    assert _info(space, "low")["messages"] == 1


def test_each_queue_keeps_its_own_dead_letter_queue(space: Workspace) -> None:
    """A message the handler rejects on each queue lands in that queue's own dead-letter queue."""
    _publish(space, "high", {"no_n": 1})
    _publish(space, "low", {"no_n": 2}, {"n": "fine"})

    status, output = _consume(space, "high", "low", "--burst")

    assert status == 0, output
    assert _info(space, "high.failed")["messages"] == 1
    assert _info(space, "low.failed")["messages"] == 1
    assert [" ".join(words) for words in space.lines()] == ["low fine"]


def test_a_busy_worker_holds_no_message_of_a_lower_queue(
    space: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--prefetch 10`` applies to the first queue only: a worker kept busy on high after one low
    message holds none of the other low messages (no lease running out in a buffer), and a second
    worker takes them at once."""
    _env(space, monkeypatch)
    slow = CONFIG.replace('consumer = "kq_priority:record"', 'consumer = "kq_slow:slow"', 1)
    space.write_config(slow, recorder=False)
    (space.root / "kq_slow.py").write_text(SLOW_CONSUMER)
    _publish(space, "low", {"n": "low0", "push": 8}, {"n": "low1"}, {"n": "low2"})
    busy = space.start_consumer("high", "busy", "low", "--prefetch", "10")
    space.wait_for(lambda: ["low", "low0"] in space.lines(), 30, "the busy worker's low message")
    space.wait_for(lambda: any(words[0] == "high" for words in space.lines()), 30, "a high message")
    assert _info(space, "low")["in_flight"] == 0

    status, output = _consume(space, "low", "--burst")

    assert status == 0, output
    lines = [" ".join(words) for words in space.lines()]
    assert [line for line in lines if line.startswith("low ")][1:] == ["low low1", "low low2"]
    # The second worker handled both (had the busy one held them, the burst would find none); whether
    # the busy one wrote another line meanwhile depends on the machine's load, so it is not asserted.
    assert "2 consumed" in output, output
    space.wait_for(lambda: len(space.lines()) == 11, 60, "all the high messages")
    assert space.stop(busy) == 0


def test_sigterm_stops_a_worker_of_several_queues_after_the_current_message(space: Workspace) -> None:
    """SIGTERM while a low message is handled: it completes and is acknowledged, and the worker exits 0
    without taking the next message of either queue."""
    slow = CONFIG.replace('consumer = "kq_priority:record"', 'consumer = "kq_slow:slow"')
    space.write_config(slow, recorder=False)
    (space.root / "kq_slow.py").write_text(SLOW_CONSUMER.replace("0.5", "2"))
    _publish(space, "low", {"n": "low1"}, {"n": "low2"})
    worker = space.start_consumer("high", "worker", "low")
    space.wait_for(lambda: _info(space, "low")["in_flight"] == 1, 30, "the first low message")
    _publish(space, "high", {"n": "high1"})
    assert space.stop(worker) == 0
    assert "Stopped because: received SIGTERM" in space.output("worker")
    assert [" ".join(words) for words in space.lines()] == ["low low1"]
    assert (_info(space, "low")["messages"], _info(space, "high")["messages"]) == (1, 1)


def test_burst_exits_0_once_drained(space: Workspace) -> None:
    """--burst on one queue: every message handled, then exit 0 with the reason; on an empty queue,
    exit 0 at once (about one poll interval)."""
    _publish(space, "low", *({"n": i} for i in range(5)))

    status, output = _consume(space, "low", "--burst")
    assert status == 0, output
    assert "Stopped because: drained: no message ready" in output
    assert [words[1] for words in space.lines()] == ["0", "1", "2", "3", "4"]

    started = time.monotonic()
    status, output = _consume(space, "high", "low", "--burst")
    assert status == 0, output
    assert time.monotonic() - started < 15
    assert "drained" in output


SERVICE_CONFIG = """
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "queues.sqlite3"
visibility_timeout = 1.0
poll_interval = 0.05

[queues.calls]
consumer = "service"

[queues.commands]
consumer = "inprocess_console_command"

[allow]
commands = ["hang"]

[allow.services]
kq_hang = ["forever", "quick"]

[console]
callable = "kq_hang_cli:main"
timeout = 1.5
"""

HANG_CLI = """
import time

def main(argv):
    time.sleep(3600)
    return 0
"""


def test_a_hung_service_call_is_stopped_and_fails_with_reason_timeout(space: Workspace) -> None:
    """--handler-timeout 1: the service call sleeping for an hour is interrupted after about a second,
    its message is dead-lettered with reason timeout, and the next message runs (the worker goes on)."""
    space.write_config(SERVICE_CONFIG, recorder=False)
    with App.from_config(space.config) as app:
        producer = app.service_producer("calls")
        producer.publish("kq_hang", "forever")
        producer.publish("kq_hang", "quick")

    started = time.monotonic()
    status, output = _consume(space, "calls", "--burst", "--handler-timeout", "1")
    assert status == 0, output
    # The lease (1 s) was extended while the call ran, then the call stopped: nothing ran twice.
    assert [words[0] for words in space.lines()] == ["start", "quick"]
    assert time.monotonic() - started < 30
    [(reason, error)] = _dead_letters(space, "calls.failed")
    assert reason == "timeout", error
    assert "time limit of 1s" in error


def test_in_process_commands_take_the_console_timeout(space: Workspace) -> None:
    """An in-process command is bounded by [console] timeout, as the subprocess mode is."""
    space.write_config(SERVICE_CONFIG, recorder=False)
    (space.root / "kq_hang_cli.py").write_text(HANG_CLI)
    with App.from_config(space.config) as app:
        app.command_producer("commands").publish("hang")

    started = time.monotonic()
    status, output = _consume(space, "commands", "--burst")
    assert status == 0, output
    assert time.monotonic() - started < 30
    [(reason, error)] = _dead_letters(space, "commands.failed")
    assert reason == "timeout", error
    assert "time limit of 1.5s" in error


def test_a_worker_that_can_execute_nothing_refuses_to_start(space: Workspace) -> None:
    """A console-command queue with an empty [allow] commands: exit 78 and one line naming the key,
    before any message is received (the message stays on its queue)."""
    space.write_config(
        'default_driver = "local"\n\n[drivers.local]\ntype = "sqlite"\npath = "queues.sqlite3"\n\n'
        "[queues.jobs]\n\n[allow]\ncommands = []\n",
        recorder=False,
    )
    with App.from_config(space.config) as app:
        app.command_producer("jobs").publish("anything")

    status, output = _consume(space, "jobs", "--burst")

    assert status == 78, output
    errors = [line for line in output.splitlines() if line.strip()]
    assert len(errors) == 1, output
    assert "allow.commands" in errors[0]
    assert "cannot execute anything" in errors[0]
    assert _info(space, "jobs")["messages"] == 1


def test_several_queues_refuse_a_routing_key(space: Workspace) -> None:
    """--routing-key narrows one queue: with two, a usage error (exit 2)."""
    status, output = _consume(space, "high", "low", "-r", "a.b")
    assert status == 2, output
    assert "--routing-key" in output
