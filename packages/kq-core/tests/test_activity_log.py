"""What the consume loop logs per message: DEBUG lines and INFO summaries by default, INFO lines with 0."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kq.core import ConsumeLoop, Delivery, Handler, Limits, Message
from kq.core._activity import ActivityLog
from kq.core._stats import LoopStats
from kq.core.driver import DriverSpec, QueueSpec
from kq.drivers.memory import MemoryDriver


class _Echo(Handler):
    accepted_content_types = None

    def consume(self, body: Any, delivery: Delivery) -> Any:
        return body


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def memory() -> Iterator[MemoryDriver]:
    MemoryDriver.reset()
    yield MemoryDriver(DriverSpec(name="mem", type="memory"), [QueueSpec(name="jobs", driver="mem")])
    MemoryDriver.reset()


def _run(driver: MemoryDriver, count: int, **loop: Any) -> ConsumeLoop:
    producer = driver.producer("jobs")
    for number in range(count):
        producer.send(Message(f'{{"n": {number}}}'.encode()))
    consume = ConsumeLoop(
        driver,
        "jobs",
        _Echo(),
        poll_interval=0.1,
        handle_signals=False,
        **loop,
    )
    timer = threading.Timer(0.6, consume.stop, args=("enough",))  # after a few idle polls
    timer.start()
    try:
        consume.run()
    finally:
        timer.cancel()
    return consume


def _lines(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


def test_by_default_each_message_is_debug_and_a_summary_is_info(
    memory: MemoryDriver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="kq")
    _run(memory, 3)
    assert len(_lines(caplog, logging.DEBUG, "consumed in")) == 3
    assert _lines(caplog, logging.INFO, "consumed in") == []
    summaries = _lines(caplog, logging.INFO, "vetoed in the last")
    # The queue went idle once after the three: one summary, as soon as it did.
    assert len(summaries) == 1
    assert summaries[0].startswith("queue jobs: 3 consumed, 0 failed, 0 vetoed in the last ")
    assert summaries[0].endswith("; 3 consumed since the start")


def test_at_info_the_messages_are_not_described(
    memory: MemoryDriver, caplog: pytest.LogCaptureFixture
) -> None:
    described: list[Any] = []

    class Counting(_Echo):
        def describe(self, body: Any) -> str:
            described.append(body)
            return "counted"

    caplog.set_level(logging.INFO, logger="kq")
    memory.producer("jobs").send(Message(b"{}"))
    ConsumeLoop(memory, "jobs", Counting(), limits=Limits(messages=1), handle_signals=False).run()
    assert described == []  # the DEBUG line is not built when nobody reads it


def test_interval_zero_logs_each_message_at_info(
    memory: MemoryDriver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kq")
    _run(memory, 2, summary_interval=0)
    assert len(_lines(caplog, logging.INFO, "consumed in")) == 2
    assert _lines(caplog, logging.INFO, "vetoed in the last") == []


def test_a_summary_at_most_once_per_interval_under_load(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kq")
    clock = _Clock()
    activity = ActivityLog("jobs", 10.0, clock=clock)
    stats = LoopStats()
    for _ in range(100):  # 100 messages over 25 s, never idle
        stats.consumed += 1
        clock.now += 0.25
        activity.handled(stats)
    stats.failed += 1
    activity.idle(stats)
    lines = _lines(caplog, logging.INFO, "in the last")
    assert lines == [
        "queue jobs: 40 consumed, 0 failed, 0 vetoed in the last 10.0s (4.0/s); 40 consumed since the start",
        "queue jobs: 40 consumed, 0 failed, 0 vetoed in the last 10.0s (4.0/s); 80 consumed since the start",
        "queue jobs: 20 consumed, 1 failed, 0 vetoed in the last 5.0s (4.2/s); 100 consumed since the start",
    ]
    activity.idle(stats)  # nothing new: no line
    assert len(_lines(caplog, logging.INFO, "in the last")) == 3


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        ActivityLog("jobs", -1.0)
