"""Waking: ``ConsumeLoop.stop`` cuts the consumer's wait short, so long idle waits do not delay a stop.

An idle loop waits ``max(poll_interval, consumer.idle_wait)`` only when the consumer is ``wakeable``;
a time limit still bounds every wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kq.core import ConsumeLoop, Delivery, Handler, Limits
from kq.core.driver import Driver, DriverSpec, QueueSpec
from kq.drivers.memory import MemoryConsumer, MemoryDriver
from kq.drivers.sqlite._driver import SqliteDriver


class _Nothing(Handler):
    accepted_content_types = None

    def consume(self, body: Any, delivery: Delivery) -> Any:
        return body


@pytest.fixture
def memory() -> Iterator[MemoryDriver]:
    MemoryDriver.reset()
    yield MemoryDriver(DriverSpec(name="mem", type="memory"), [QueueSpec(name="jobs", driver="mem")])
    MemoryDriver.reset()


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SqliteDriver]:
    spec = DriverSpec(
        name="lite", type="sqlite", options={"path": str(tmp_path / "q.db"), "poll_interval": 5.0}
    )
    driver = SqliteDriver(spec, [QueueSpec(name="jobs", driver="lite")])
    yield driver
    driver.close()


@pytest.mark.parametrize("name", ["memory", "sqlite"])
def test_stop_from_another_thread_ends_a_long_idle_wait_at_once(
    name: str, request: pytest.FixtureRequest
) -> None:
    driver: Driver = request.getfixturevalue(name)
    loop = ConsumeLoop(driver, "jobs", _Nothing(), poll_interval=30.0, handle_signals=False)
    timer = threading.Timer(0.5, loop.stop, args=("asked",))
    started = time.monotonic()
    timer.start()
    try:
        reason = loop.run()
    finally:
        timer.cancel()
    assert reason == "asked"
    assert time.monotonic() - started < 1.5


def test_a_wake_before_the_receive_is_not_lost(memory: MemoryDriver) -> None:
    with memory.consumer("jobs") as consumer:
        consumer.wake()
        started = time.monotonic()
        assert consumer.receive(30.0) is None
        assert time.monotonic() - started < 0.5
        # Only the one receive: the next waits its timeout again.
        started = time.monotonic()
        assert consumer.receive(0.3) is None
        assert time.monotonic() - started >= 0.25


def _record_timeouts(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    timeouts: list[float] = []
    original = MemoryConsumer.receive

    def recording(self: MemoryConsumer, timeout: float) -> Delivery | None:
        timeouts.append(timeout)
        return original(self, timeout)

    monkeypatch.setattr(MemoryConsumer, "receive", recording)
    return timeouts


def test_a_wakeable_consumer_waits_its_idle_wait_bounded_by_the_time_limit(
    memory: MemoryDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MemoryConsumer, "idle_wait", 20.0, raising=False)
    timeouts = _record_timeouts(monkeypatch)
    loop = ConsumeLoop(
        memory, "jobs", _Nothing(), poll_interval=1.0, limits=Limits(time=1.0), handle_signals=False
    )
    started = time.monotonic()
    assert loop.run() == "time limit of 1s reached"
    assert time.monotonic() - started < 1.8
    assert 0.5 < timeouts[0] <= 1.0  # 20 s wanted, bounded by what is left of the time limit


def test_a_wakeable_consumer_waits_its_idle_wait(
    memory: MemoryDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MemoryConsumer, "idle_wait", 20.0, raising=False)
    timeouts = _record_timeouts(monkeypatch)
    loop = ConsumeLoop(memory, "jobs", _Nothing(), poll_interval=1.0, handle_signals=False)
    timer = threading.Timer(0.3, loop.stop, args=("asked",))
    timer.start()
    started = time.monotonic()
    try:
        loop.run()
    finally:
        timer.cancel()
    assert timeouts == [20.0]
    assert time.monotonic() - started < 1.3


def test_a_consumer_that_cannot_be_woken_waits_the_poll_interval(
    memory: MemoryDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MemoryConsumer, "wakeable", False)
    monkeypatch.setattr(MemoryConsumer, "idle_wait", 20.0, raising=False)
    timeouts = _record_timeouts(monkeypatch)
    limits = Limits(time=0.5)
    loop = ConsumeLoop(memory, "jobs", _Nothing(), poll_interval=0.2, limits=limits, handle_signals=False)
    loop.run()
    assert timeouts
    assert timeouts[0] == pytest.approx(0.2)
