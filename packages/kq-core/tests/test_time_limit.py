"""The time limit of in-process handler calls (kq.core._time_limit): interrupted in the main thread,
failed with reason ``timeout``, retried or dead-lettered by the queue's failure policy."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kq.core import (
    ConsumeLoop,
    Delivery,
    Handler,
    HandlerTimeoutError,
    Limits,
    Message,
    MessageConsumptionFailed,
    RetryPolicy,
)
from kq.core._time_limit import CallTimer, TimeLimitExceeded
from kq.core.driver import DriverSpec, QueueSpec
from kq.drivers.memory import MemoryDriver

DELIVERY = Delivery(
    body=b"", content_type="application/json", headers={}, routing_key="", message_id="m1", queue="q"
)


def _sleep(seconds: float) -> Any:
    def call(body: Any, delivery: Delivery) -> Any:
        time.sleep(seconds)
        return "slept"

    return call


def test_a_sleeping_call_is_interrupted_after_its_limit() -> None:
    with CallTimer(0.3) as timer:
        started = time.monotonic()
        with pytest.raises(HandlerTimeoutError, match=r"time limit of 0.3s"):
            timer.wrap(_sleep(30), 0.3)(None, DELIVERY)
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2


def test_a_quick_call_returns_and_the_previous_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGALRM)
    with CallTimer(0.2) as timer:
        assert signal.getsignal(signal.SIGALRM) != before
        assert [timer.wrap(_sleep(0.01), 0.2)(None, DELIVERY) for _ in range(3)] == ["slept"] * 3
        time.sleep(0.4)  # past the limits of the calls that ended: nothing fires
    assert signal.getsignal(signal.SIGALRM) == before


def test_a_call_that_swallows_the_interruption_still_fails() -> None:
    """``except BaseException`` catches the interruption; the call returns, and the message still fails."""
    caught: list[BaseException] = []

    def stubborn(body: Any, delivery: Delivery) -> Any:
        try:
            time.sleep(30)
        except BaseException as exc:
            caught.append(exc)
        return "finished anyway"

    with CallTimer(0.2) as timer, pytest.raises(HandlerTimeoutError):
        timer.wrap(stubborn, 0.2)(None, DELIVERY)
    assert len(caught) == 1
    assert isinstance(caught[0], TimeLimitExceeded)
    assert not isinstance(caught[0], Exception)  # so that ``except Exception`` does not swallow it


def test_a_python_loop_is_interrupted_too() -> None:
    def busy(body: Any, delivery: Delivery) -> Any:
        while True:
            pass

    with CallTimer(0.2) as timer, pytest.raises(HandlerTimeoutError):
        timer.wrap(busy, 0.2)(None, DELIVERY)


def test_an_alarm_that_is_not_for_a_call_goes_to_the_previous_handler() -> None:
    """The grace period of a stop signal uses SIGALRM too: it still reaches its handler."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: seen.append(signum))
    try:
        with CallTimer(1.0):
            signal.raise_signal(signal.SIGALRM)
        assert seen == [signal.SIGALRM]
    finally:
        signal.signal(signal.SIGALRM, previous)


class _Hanging(Handler):
    """Sleeps for a minute on the first message, returns at once on the others."""

    accepted_content_types = None

    def __init__(self, time_limit: float | None = None) -> None:
        self.calls = 0
        self.time_limit = time_limit

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.calls += 1
        if self.calls == 1:
            time.sleep(60)
        return "done"


@pytest.fixture
def driver() -> Iterator[MemoryDriver]:
    MemoryDriver.reset()
    spec = QueueSpec(name="jobs", driver="mem", retry=RetryPolicy(max_attempts=2, delay=0))
    driver = MemoryDriver(DriverSpec(name="mem", type="memory"), [spec])
    driver.producer("jobs").send_batch([Message(b'"first"'), Message(b'"second"')])
    yield driver
    MemoryDriver.reset()


def _failures(loop: ConsumeLoop) -> list[MessageConsumptionFailed]:
    failures: list[MessageConsumptionFailed] = []
    loop.dispatcher.add_listener(MessageConsumptionFailed.name, failures.append)
    return failures


def test_the_loop_fails_a_hung_call_with_reason_timeout_and_retries_it(driver: MemoryDriver) -> None:
    """--handler-timeout: the first call hangs and is interrupted; the message is retried (the queue's
    retry policy applies to timeouts), and the retry succeeds."""
    handler = _Hanging()
    loop = ConsumeLoop(
        driver, "jobs", handler, limits=Limits(messages=3, time=30), poll_interval=0.05, handler_timeout=0.5
    )
    failures = _failures(loop)
    started = time.monotonic()
    loop.run()
    assert time.monotonic() - started < 10
    [failure] = failures
    assert (failure.reason, failure.outcome, failure.attempt) == ("timeout", "retried", 1)
    assert isinstance(failure.error, HandlerTimeoutError)
    assert (loop.stats.consumed, loop.stats.failed, handler.calls) == (2, 1, 3)


def test_the_handler_s_own_limit_applies_and_the_last_attempt_is_dead_lettered(driver: MemoryDriver) -> None:
    MemoryDriver.reset()  # a queue without retries
    single = MemoryDriver(DriverSpec(name="mem", type="memory"), [QueueSpec(name="jobs", driver="mem")])
    single.producer("jobs").send(Message(b'"first"'))
    loop = ConsumeLoop(
        single, "jobs", _Hanging(time_limit=0.3), limits=Limits(messages=1), poll_interval=0.05
    )
    assert loop.time_limit == 0.3
    failures = _failures(loop)
    loop.run()
    [failure] = failures
    assert (failure.reason, failure.outcome) == ("timeout", "dead-lettered")
    assert single.queue_manager().info("jobs.failed")["messages"] == 1


def test_no_limit_leaves_the_call_alone(driver: MemoryDriver) -> None:
    loop = ConsumeLoop(driver, "jobs", _Hanging(), poll_interval=0.05)
    assert loop.time_limit is None
    assert loop._call == loop.handler.consume  # no wrapper on the hot path


def test_off_the_main_thread_the_limit_is_not_enforced_and_it_is_said(
    driver: MemoryDriver, caplog: pytest.LogCaptureFixture
) -> None:
    class Quick(Handler):
        accepted_content_types = None
        time_limit = 5.0

        def consume(self, body: Any, delivery: Delivery) -> Any:
            return body

    loop = ConsumeLoop(driver, "jobs", Quick(), limits=Limits(messages=2), poll_interval=0.05)
    with caplog.at_level(logging.WARNING, logger="kq.core.loop"):
        worker = threading.Thread(target=loop.run)
        worker.start()
        worker.join(10)
    assert loop.stats.consumed == 2
    assert "time limit of 5s cannot be enforced" in caplog.text
