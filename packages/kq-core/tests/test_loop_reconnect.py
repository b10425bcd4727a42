"""Reconnection: the loop retries ``BrokerUnavailableError`` whatever the driver declares as its connection
errors (the memory driver declares none), and grows its waits between attempts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from kq.core import BrokerUnavailableError, ConsumeLoop, Delivery, Handler, Limits, Message
from kq.core._reconnect import Backoff, connection_errors
from kq.core.driver import DriverSpec, QueueSpec
from kq.drivers.memory import MemoryConsumer, MemoryDriver


class _Recording(Handler):
    accepted_content_types = None

    def __init__(self) -> None:
        self.bodies: list[Any] = []

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.bodies.append(body)
        return body


@pytest.fixture
def driver() -> Iterator[MemoryDriver]:
    MemoryDriver.reset()
    driver = MemoryDriver(DriverSpec(name="mem", type="memory"), [QueueSpec(name="jobs", driver="mem")])
    driver.producer("jobs").send(Message(b'"ok"'))
    yield driver
    MemoryDriver.reset()


def _once(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
    """Make ``owner.name`` raise BrokerUnavailableError on its first call only."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise BrokerUnavailableError("broker at memory:// unreachable")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing_once)


def _run(driver: MemoryDriver, handler: _Recording, messages: int = 1) -> ConsumeLoop:
    loop = ConsumeLoop(driver, "jobs", handler, limits=Limits(messages=messages, time=10), poll_interval=0.1)
    loop.run()
    return loop


def test_the_driver_declares_no_connection_error() -> None:
    assert MemoryDriver.connection_errors == ()
    assert BrokerUnavailableError in connection_errors(MemoryDriver(DriverSpec(name="m", type="memory")))


def test_a_receive_raising_broker_unavailable_is_a_lost_connection(
    driver: MemoryDriver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _once(monkeypatch, MemoryConsumer, "_receive")
    handler = _Recording()
    with caplog.at_level(logging.WARNING):
        loop = _run(driver, handler)
    assert handler.bodies == ["ok"]
    assert loop.stats.reconnects == 1
    assert "connection to driver mem lost (BrokerUnavailableError" in caplog.text
    assert "bug in the driver" not in caplog.text  # not taken for a driver that cannot read a message


def test_building_the_consumer_raising_broker_unavailable_is_retried(
    driver: MemoryDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _once(monkeypatch, driver, "consumer")  # the broker is down when the worker starts
    handler = _Recording()
    loop = _run(driver, handler)
    assert handler.bodies == ["ok"]
    assert loop.stats.reconnects == 1


def test_an_ack_raising_broker_unavailable_is_retried_and_the_message_redelivered(
    driver: MemoryDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _once(monkeypatch, MemoryConsumer, "_ack")
    handler = _Recording()
    loop = _run(driver, handler, messages=2)
    assert handler.bodies == ["ok", "ok"]  # the ack never arrived: at least once
    assert (loop.stats.reconnects, loop.stats.consumed) == (1, 1)
    with driver.consumer("jobs") as consumer:
        assert consumer.receive(0) is None


def test_backoff_doubles_up_to_the_maximum_and_resets() -> None:
    backoff = Backoff(3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5
