"""``MemoryDriver.join``: waiting for a queue to drain in tests, and ``fail_fast``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kq.core import ConsumeLoop, Delivery, ExecutionFailedError, Handler, Limits, Message
from kq.core.driver import DriverSpec
from kq.drivers.memory import MemoryDriver


class _FailOn(Handler):
    accepted_content_types = None

    def consume(self, body: Any, delivery: Delivery) -> Any:
        if body == "boom":
            raise RuntimeError("the handler failed on purpose")
        return body


@pytest.fixture
def driver() -> Iterator[MemoryDriver]:
    MemoryDriver.reset()
    driver = MemoryDriver(DriverSpec(name="mem", type="memory", options={"namespace": "join"}))
    try:
        yield driver
    finally:
        driver.close()
        MemoryDriver.reset()


def _worker(driver: MemoryDriver, messages: int, *, after: float = 0.0) -> threading.Thread:
    """A consume loop in a thread, started ``after`` seconds from now (once ``join`` is waiting)."""
    loop = ConsumeLoop(driver, "jobs", _FailOn(), limits=Limits(messages=messages), poll_interval=0.05)
    thread = threading.Timer(after, loop.run)
    thread.daemon = True
    thread.start()
    return thread


def test_join_returns_once_the_queue_is_drained(driver: MemoryDriver) -> None:
    driver.producer("jobs").send_batch([Message(b'"a"'), Message(b'"b"')])
    worker = _worker(driver, 2)
    driver.join("jobs", timeout=10)
    worker.join(10)
    assert driver.queue_manager().info("jobs")["messages"] == 0


def test_join_times_out_naming_what_is_left(driver: MemoryDriver) -> None:
    driver.producer("jobs").send(Message(b'"nobody reads me"'))
    with pytest.raises(TimeoutError, match="1 waiting"):
        driver.join("jobs", timeout=0.1)


def test_a_dead_letter_passes_unnoticed_without_fail_fast(driver: MemoryDriver) -> None:
    driver.producer("jobs").send(Message(b'"boom"'))
    worker = _worker(driver, 1)
    driver.join("jobs", timeout=10)
    worker.join(10)
    assert driver.queue_manager().info("jobs.failed")["messages"] == 1


def test_fail_fast_raises_with_the_reason_and_error_of_the_dead_letter(driver: MemoryDriver) -> None:
    driver.producer("jobs").send_batch([Message(b'"boom"'), Message(b'"fine"')])
    worker = _worker(driver, 2, after=0.5)
    with pytest.raises(ExecutionFailedError, match=r"dead-lettered to 'jobs.failed' \(failed\).*on purpose"):
        driver.join("jobs", timeout=10, fail_fast=True)
    worker.join(10)


def test_fail_fast_ignores_dead_letters_from_before_the_join(driver: MemoryDriver) -> None:
    driver.producer("jobs").send(Message(b'"boom"'))
    first = _worker(driver, 1)
    driver.join("jobs", timeout=10)
    first.join(10)
    driver.producer("jobs").send(Message(b'"fine"'))
    second = _worker(driver, 1, after=0.5)
    driver.join("jobs", timeout=10, fail_fast=True)
    second.join(10)
