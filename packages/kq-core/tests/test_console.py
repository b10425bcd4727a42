"""The console-command consumer's process handling: timeout, process group, session, exit-code fidelity."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from kq.core import (
    AllowList,
    CommandResult,
    ConsoleCommandHandler,
    ConsumeLoop,
    Delivery,
    ExecutionFailedError,
    HandlerTimeoutError,
    Limits,
    Message,
    MessageConsumptionFailed,
    encode_json,
)
from kq.core._config import ConsoleSettings
from kq.core.driver import DriverSpec
from kq.core.handlers import run_command
from kq.drivers.memory import MemoryDriver

# Starts a grandchild that sleeps, records both pids, then sleeps itself.
SPAWNER = """
import os, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(sys.argv[1], "w") as out:
    out.write(f"{os.getpid()} {grandchild.pid} {os.getsid(0)}")
time.sleep(60)
"""


@pytest.fixture(autouse=True)
def _fresh_memory() -> Iterator[None]:
    MemoryDriver.reset()
    yield
    MemoryDriver.reset()


def _delivery() -> Delivery:
    return Delivery(
        body=b"", content_type="application/json", headers={}, routing_key="", message_id="m1", queue="q"
    )


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(ExecutionFailedError, match=r"timed out after 1s and was killed") as caught:
        run_command((sys.executable, "-c", SPAWNER, str(pids)), timeout=1)
    assert time.monotonic() - started < 30
    result = caught.value.result
    assert isinstance(result, CommandResult)
    assert result.exit_code == -9
    child, grandchild, session = (int(word) for word in pids.read_text().split())
    deadline = time.monotonic() + 10
    while psutil.pid_exists(grandchild) and psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the grandchild survived the timeout"
        time.sleep(0.05)
    assert session == child, "the command must lead a session of its own"
    assert session != os.getsid(0)


def test_non_zero_exit_is_a_failure_with_code_and_output() -> None:
    code = "import sys; print('partial output'); print('it broke', file=sys.stderr); sys.exit(3)"
    with pytest.raises(ExecutionFailedError, match=r"exited with status 3: it broke") as caught:
        ConsoleCommandHandler(ConsoleSettings(prefix=(sys.executable, "-c", code)), AllowList(["x"])).consume(
            {"command": "x"}, _delivery()
        )
    result = caught.value.result
    assert isinstance(result, CommandResult)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "partial output\n", "it broke\n")


def test_failure_event_carries_the_result_and_the_message_is_dead_lettered() -> None:
    driver = MemoryDriver(DriverSpec(name="m", type="memory"))
    driver.producer("jobs").send(Message(encode_json({"command": "x", "arguments": ["slow"]})))
    settings = ConsoleSettings(prefix=(sys.executable, "-c", "import time; time.sleep(30)"), timeout=0.5)
    failures: list[MessageConsumptionFailed] = []
    loop = ConsumeLoop(
        driver, "jobs", ConsoleCommandHandler(settings, AllowList(["x"])), limits=Limits(messages=1)
    )
    loop.dispatcher.add_listener("message_consumption_failed", failures.append)
    loop.run()
    [event] = failures
    assert (event.reason, event.outcome, event.attempt) == ("timeout", "dead-lettered", 1)
    assert isinstance(event.error, HandlerTimeoutError)
    assert "timed out after 0.5s" in str(event.error)
    assert isinstance(event.error.result, CommandResult)
    assert event.error.result.exit_code == -9
    assert driver.queue_manager().info("jobs.failed")["messages"] == 1


def test_a_program_that_does_not_exist_is_a_failure_not_a_crash() -> None:
    consumer = ConsoleCommandHandler(ConsoleSettings(prefix=("/nonexistent/kq-program",)), AllowList(["x"]))
    with pytest.raises(ExecutionFailedError, match=r"cannot start '/nonexistent/kq-program'"):
        consumer.consume({"command": "x"}, _delivery())


def test_a_message_id_the_environment_cannot_hold_still_runs_the_command() -> None:
    """A NUL or a lone surrogate in a producer's message id made the environment unusable for the child."""
    code = "import os; print(os.environ['KQ_MESSAGE_ID'])"
    consumer = ConsoleCommandHandler(ConsoleSettings(prefix=(sys.executable, "-c", code)), AllowList(["x"]))
    delivery = Delivery(
        body=b"",
        content_type="application/json",
        headers={},
        routing_key="",
        message_id="a\x00b\ud800",
        queue="q",
    )
    assert consumer.consume({"command": "x"}, delivery).stdout == "a\\x00b\\ud800\n"
