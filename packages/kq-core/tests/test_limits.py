"""Worker limits, checked between messages: failures, memory, custom checks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from kq.core import ConfigError, ConsumeLoop, Delivery, Handler, Limits, Message, NoopHandler
from kq.core.driver import DriverSpec
from kq.core.plugins import load_check
from kq.drivers.memory import MemoryDriver


@pytest.fixture
def driver() -> Iterator[MemoryDriver]:
    MemoryDriver.reset()
    yield MemoryDriver(DriverSpec(name="m", type="memory"))
    MemoryDriver.reset()


def _fill(driver: MemoryDriver, count: int, body: bytes = b'"x"') -> None:
    driver.producer("jobs").send_batch([Message(body) for _ in range(count)])


class _Failing(Handler):
    accepted_content_types = None

    def consume(self, body: Any, delivery: Delivery) -> Any:
        raise RuntimeError("no")


class _Hungry(Handler):
    """Keeps 20 MB per message: the worker's memory grows like a leaking one's."""

    accepted_content_types = None

    def __init__(self) -> None:
        self.kept: list[bytearray] = []

    def consume(self, body: Any, delivery: Delivery) -> Any:
        chunk = bytearray(20 * 1024 * 1024)
        chunk[::4096] = b"x" * len(chunk[::4096])  # touch every page so that it is resident
        self.kept.append(chunk)
        return len(self.kept)


def test_failure_limit_stops_after_that_many_failures(driver: MemoryDriver) -> None:
    _fill(driver, 5)
    loop = ConsumeLoop(driver, "jobs", _Failing(), limits=Limits(failures=2), poll_interval=0.1)
    assert loop.run() == "failure limit of 2 reached"
    assert loop.stats.failed == 2
    assert driver.queue_manager().info("jobs")["messages"] == 3


def test_memory_limit_stops_a_growing_worker(driver: MemoryDriver, record_property: Any) -> None:
    from kq.core._resources import MemoryGauge

    baseline = MemoryGauge().megabytes()
    _fill(driver, 20)
    handler = _Hungry()
    limit = baseline + 70
    loop = ConsumeLoop(driver, "jobs", handler, limits=Limits(memory=limit), poll_interval=0.1)
    reason = loop.run()
    record_property("rss_baseline_mb", round(baseline, 1))
    record_property("stop_reason", reason)
    print(f"baseline RSS {baseline:.1f} MB; {reason}")
    assert reason.startswith(f"memory limit of {limit:g} MB reached (RSS ")
    rss = float(reason.rsplit("RSS ", 1)[1].split()[0])
    assert rss > limit
    # 20 MB per message: the limit is crossed after about 4 messages, and noticed before the next one.
    assert 3 <= loop.stats.consumed <= 6, loop.stats.consumed


def test_custom_check_stops_with_its_reason_and_a_failing_check_is_ignored(
    driver: MemoryDriver, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(driver, 5)
    calls = {"n": 0}

    def broken() -> str | None:
        raise ValueError("check bug")

    def third() -> str | None:
        calls["n"] += 1
        return "the maintenance window opened" if calls["n"] > 3 else None

    loop = ConsumeLoop(
        driver, "jobs", NoopHandler(), limits=Limits(checks=(broken, third)), poll_interval=0.1
    )
    with caplog.at_level(logging.ERROR):
        assert loop.run() == "the maintenance window opened"
    assert loop.stats.consumed == 3
    assert "the stop check" in caplog.text


class MaintenanceCheck:
    """A check class, as --check names one (the PHP Watchdog listener's check())."""

    def check(self) -> str | None:
        return "maintenance"


def check_function() -> str | None:
    return None


def test_load_check_accepts_functions_classes_and_objects() -> None:
    module = __name__
    assert load_check(f"{module}:check_function")() is None
    assert load_check(f"{module}:MaintenanceCheck")() == "maintenance"
    with pytest.raises(ConfigError, match="cannot load stop check"):
        load_check(f"{module}:missing")


@pytest.mark.parametrize("field", ["messages", "time", "memory", "failures"])
def test_negative_limits_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} limit must be a (finite|whole) number between 0 and"):
        Limits(**{field: -1})  # type: ignore[arg-type]
