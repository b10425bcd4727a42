"""kq's reliability promises on STOMP, with real ``kq consume`` processes against ActiveMQ Classic and
RabbitMQ's STOMP plugin.

Issue 14's "Done when": a worker killed (SIGKILL) in the middle of a message loses nothing (the broker
sees the socket close and redelivers the unacknowledged message to the next worker); a broker restarted
while a producer publishes and a worker consumes ends with every message the producer saw confirmed
consumed, and both processes recover on their own (the worker's consume loop rebuilds its consumer, the
producer's driver reconnects on its next publish; a publish that was not confirmed raises, and the
producer script here tries it again).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psutil
import pytest

from kq.core.testing import Workspace, unique_queue_name

if TYPE_CHECKING:
    from integration.stomp_fixture import StompEndpoint

pytestmark = pytest.mark.stomp

#: Messages the producer of the restart test publishes, one at a time.
RESTART_MESSAGES = 600

#: Publishes ``count`` messages ``{"n": N}`` one by one through kq's producer, writing N to the
#: confirmed log once ``publish`` returned (the broker's receipt came). A publish that raises a kq error
#: was not confirmed: it is reported on stderr ("not confirmed") and tried again, with the same App and
#: producer (the driver must reconnect by itself), until a deadline.
PRODUCER = """
import json, sys, time
from kq.core import App, KqError
config, queue, count, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + float(sys.argv[5])
with App.from_config(config) as app, open(log, "a") as confirmed:
    producer = app.producer(queue)
    n = 0
    while n < count:
        try:
            producer.publish(json.dumps({"n": n}))
        except KqError as exc:
            print(f"publish {n} not confirmed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        confirmed.write(f"{n}\\n")
        confirmed.flush()
        n += 1
        time.sleep(0.02)
"""


def _config(stomp: StompEndpoint, queue: str, extra: str = "") -> str:
    """kq.toml for one queue on the broker; ``extra`` goes in the queue's table."""
    return f"""
default_driver = "mq"

{stomp.driver_table()}
[queues.{queue}]
{extra}
[allow]
commands = ["record"]
"""


@pytest.fixture
def queue() -> str:
    """A fresh logical queue name, so that runs on one broker stay apart."""
    return unique_queue_name("rel")


@pytest.fixture
def space(workspace: Workspace, stomp: StompEndpoint, queue: str) -> Iterator[Workspace]:
    """A workspace whose workers run the recorder command (``Workspace.RECORDER_COMMAND``)."""
    workspace.write_config(_config(stomp, queue))
    yield workspace
    if stomp.flavour == "rabbitmq":  # ActiveMQ cannot delete a queue over STOMP: unique names keep runs apart
        for name in (queue, f"{queue}.failed"):
            workspace.kq("managequeue", "delete", name, check=False)


def _wait_empty(space: Workspace, queue: str) -> None:
    """Nothing is left on the queue, waiting or in flight (RabbitMQ's counters lag: polled)."""

    def empty() -> bool:
        info = space.kq_json("managequeue", "info", queue)
        return bool(info["messages"] == 0 and info["in_flight"] == 0)

    space.wait_for(empty, 30, f"queue {queue} empty")


def test_sigkill_mid_message_loses_nothing(space: Workspace, queue: str) -> None:
    """A worker killed (SIGKILL) while its command runs: the broker redelivers the unacknowledged message
    to the next worker, flagged as a redelivery (delivery count 2), and it runs there to the end."""
    space.kq("queuecommand", queue, "record", "precious", "-o", "sleep-first=60")
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
    ], space.output("rescuer")
    _wait_empty(space, queue)


def test_broker_restart_loses_no_confirmed_message(
    workspace: Workspace, stomp: StompEndpoint, queue: str
) -> None:
    """Restart the broker while a producer publishes and a worker consumes: every message the producer
    saw confirmed is consumed, the worker reconnects by itself and the producer's driver too (its
    unconfirmed publishes raised and were tried again)."""
    workspace.write_config(_config(stomp, queue, 'consumer = "kq_recorder:record"\n'))
    (workspace.root / "producer.py").write_text(PRODUCER)
    confirmed_log = workspace.root / "confirmed.log"

    def confirmed() -> set[int]:
        return {int(n) for n in confirmed_log.read_text().split()} if confirmed_log.exists() else set()

    def consumed() -> set[int]:
        return {int(words[0]) for words in workspace.lines()}

    try:
        worker = workspace.start_consumer(queue, "worker")
        producer = workspace.start(
            "producer",
            sys.executable,
            str(workspace.root / "producer.py"),
            str(workspace.config),
            queue,
            str(RESTART_MESSAGES),
            str(confirmed_log),
            "150",
        )
        workspace.wait_for(lambda: len(consumed()) >= 100, 60, "100 messages consumed before the restart")
        before = len(confirmed())
        assert before < RESTART_MESSAGES, "the producer finished before the restart: nothing was tested"
        started = time.monotonic()
        stomp.restart()
        restarted = time.monotonic() - started
        assert producer.wait(timeout=180) == 0, workspace.output("producer")
        assert confirmed() == set(range(RESTART_MESSAGES)), workspace.output("producer")
        workspace.wait_for(lambda: consumed() >= confirmed(), 120, "every confirmed message consumed")
        assert workspace.stop(worker) == 0, workspace.output("worker")
        worker_output = workspace.output("worker")
        assert "reconnecting" in worker_output, f"the worker never lost its connection:\n{worker_output}"
        assert "not confirmed" in workspace.output("producer"), (
            f"no publish failed during the {restarted:.1f} s restart: the producer never saw it"
        )
        assert "Traceback" not in worker_output, worker_output
    finally:
        if stomp.flavour == "rabbitmq":
            workspace.kq("managequeue", "delete", queue, check=False)
