"""Several queues in priority order (kq.core._priority), in-process on the memory and sqlite drivers;
``kq consume a b`` as a real process is tested in kq-cli (test_consume_worker.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kq.core import (
    App,
    BrokerUnavailableError,
    ConfigError,
    Delivery,
    Handler,
    Limits,
    MessageConsumptionFailed,
    PriorityLoop,
    parse_config,
)
from kq.core._loop import DRAINED

QUEUES = {"high": {"consumer": "noop"}, "low": {"consumer": "noop"}}


class _Recorder(Handler):
    """Records "<queue> <body>"; a body naming a queue publishes one message there first."""

    accepted_content_types = None

    def __init__(self, app: App, seen: list[str], check: Any = None) -> None:
        self.app = app
        self.seen = seen
        self.check = check

    def decode(self, delivery: Delivery) -> Any:
        return delivery.body.decode()

    def consume(self, body: Any, delivery: Delivery) -> Any:
        if body.startswith("push:"):
            self.app.producer(body.split(":")[1]).publish('"pushed"')
        if self.check is not None:
            self.check(delivery)
        self.seen.append(f"{delivery.queue} {body}")
        return body


def _app(tmp_path: Path, kind: str = "memory") -> App:
    options = {"type": "sqlite", "path": str(tmp_path / "q.sqlite3"), "poll_interval": 0.02}
    if kind == "memory":
        options = {"type": "memory", "namespace": str(tmp_path)}
    return App(parse_config({"default_driver": "d", "drivers": {"d": options}, "queues": QUEUES}))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with _app(tmp_path) as app:
        yield app


def _publish(app: App, queue: str, *bodies: str) -> None:
    app.producer(queue).publish_batch([body.encode() for body in bodies])


def _loop(app: App, seen: list[str], check: Any = None, **options: Any) -> PriorityLoop:
    loop = app.priority_loop(["high", "low"], poll_interval=0.05, **options)
    for each in loop.loops:
        each.handler = _Recorder(app, seen, check)
        each._call = each.handler.consume
    return loop


def test_the_first_queue_goes_first_and_is_looked_at_after_each_message(app: App) -> None:
    _publish(app, "low", "push:high", "low2")
    _publish(app, "high", "high1")
    seen: list[str] = []
    loop = _loop(app, seen, burst=True)
    assert loop.run() == DRAINED
    assert seen == ["high high1", "low push:high", 'high "pushed"', "low low2"]
    assert (loop.stats.consumed, loop.stats.received) == (4, 4)
    assert [each.stats.consumed for each in loop.loops] == [2, 2]


def test_the_limits_count_across_the_queues(app: App) -> None:
    _publish(app, "low", "low1", "low2")
    _publish(app, "high", "high1")
    seen: list[str] = []
    reason = _loop(app, seen, limits=Limits(messages=2)).run()
    assert reason == "message limit of 2 reached"
    assert seen == ["high high1", "low low1"]


def test_an_idle_worker_waits_instead_of_spinning(app: App) -> None:
    """Nothing anywhere: about one receive per poll interval on the first queue, not a busy loop."""
    seen: list[str] = []
    loop = _loop(app, seen, limits=Limits(time=0.5))
    calls = {"high": 0, "low": 0}
    for each in loop.loops:
        original = each.receive_one

        def counted(wait: float, original: Any = original, queue: str = each.queue) -> Any:
            calls[queue] += 1
            return original(wait)

        each.receive_one = counted  # type: ignore[method-assign]
    assert loop.run() == "time limit of 0.5s reached"
    assert 5 <= calls["high"] <= 15, calls
    assert 5 <= calls["low"] <= 15, calls


def test_a_message_on_a_lower_queue_of_an_idle_worker_is_taken_within_a_poll_interval(app: App) -> None:
    seen: list[str] = []
    loop = _loop(app, seen, limits=Limits(messages=1, time=10))
    worker = threading.Thread(target=loop.run)
    worker.start()
    time.sleep(0.3)
    sent = time.monotonic()
    _publish(app, "low", "late")
    worker.join(10)
    assert seen == ["low late"]
    assert time.monotonic() - sent < 1.0


def test_stop_stops_every_queue(app: App) -> None:
    seen: list[str] = []
    loop = _loop(app, seen)
    worker = threading.Thread(target=loop.run)
    worker.start()
    time.sleep(0.2)
    loop.stop("asked")
    worker.join(5)
    assert not worker.is_alive()
    assert loop.stop_reason == "asked"


def test_a_lost_connection_of_one_queue_does_not_hold_up_the_others(app: App) -> None:
    """The low queue's receive fails: it is retried after its backoff, and high is served meanwhile."""
    seen: list[str] = []
    loop = _loop(app, seen, limits=Limits(messages=3, time=10))
    failing = loop.loops[1]

    def broken(wait: float) -> Delivery | None:
        raise BrokerUnavailableError("down")

    failing.receive_one = broken  # type: ignore[method-assign]
    worker = threading.Thread(target=loop.run)
    worker.start()
    for n in range(3):
        _publish(app, "high", f"h{n}")
        time.sleep(0.1)
    worker.join(10)
    assert seen == ["high h0", "high h1", "high h2"]
    assert failing.stats.reconnects >= 1


def test_burst_is_not_drained_while_a_queue_cannot_be_asked(app: App) -> None:
    seen: list[str] = []
    loop = _loop(app, seen, burst=True, limits=Limits(time=1.0))

    def broken(wait: float) -> Delivery | None:
        raise BrokerUnavailableError("down")

    loop.loops[1].receive_one = broken  # type: ignore[method-assign]
    assert loop.run() == "time limit of 1s reached"


def test_a_lower_queue_leased_ahead_is_released_before_a_higher_message(tmp_path: Path) -> None:
    """sqlite leases the next message when it acknowledges one: before a high message is handled,
    the low consumer is closed, so nothing of low is in flight while high is handled."""
    with _app(tmp_path, "sqlite") as app:
        _publish(app, "low", "push:high", "low2", "low3")
        in_flight: list[int] = []

        def check(delivery: Delivery) -> None:
            if delivery.queue == "high":
                in_flight.append(app.driver().queue_manager().info("low")["in_flight"])

        seen: list[str] = []
        loop = _loop(app, seen, check, burst=True)
        assert loop.run() == DRAINED
        assert seen == ["low push:high", 'high "pushed"', "low low2", "low low3"]
        assert in_flight == [0]
        assert app.driver().queue_manager().info("low")["messages"] == 0


def test_only_the_first_queue_gets_the_prefetch(app: App) -> None:
    loop = app.priority_loop(["high", "low"], prefetch=10)
    assert [each.prefetch for each in loop.loops] == [10, 1]


def test_two_queues_or_more_each_once(app: App) -> None:
    with pytest.raises(ValueError, match="two queues or more"):
        app.priority_loop(["high"])
    with pytest.raises(ValueError, match="each once"):
        app.priority_loop(["high", "high"])


def test_a_handler_with_an_empty_allow_list_is_refused(tmp_path: Path) -> None:
    """A console-command queue and a service queue with nothing allowed: the worker cannot execute
    anything, so it is not built; a queue whose handler reads no allow-list is fine."""
    config = parse_config(
        {
            "default_driver": "d",
            "drivers": {"d": {"type": "memory", "namespace": str(tmp_path)}},
            "queues": {"jobs": {}, "calls": {"consumer": "service"}, "free": {"consumer": "noop"}},
            "allow": {"commands": []},
        },
        source="kq.toml",
    )
    with App(config) as app:
        refused = r"cannot execute anything.*'allow\.commands' in kq\.toml"
        with pytest.raises(ConfigError, match=refused) as caught:
            app.consume_loop("jobs")
        assert "every message would be dead-lettered as not-allowed" in str(caught.value)
        with pytest.raises(ConfigError, match=r"\[allow\] services"):
            app.consume_loop("calls")
        with pytest.raises(ConfigError, match=r"allow\.commands"):
            app.priority_loop(["free", "jobs"])
        app.consume_loop("free").close()
        # A handler given by the caller is the caller's business.
        app.consume_loop("jobs", handler=_Recorder(app, [])).close()


class _HangsOnce(Handler):
    """Sleeps for a minute on its first message, returns at once on the others."""

    accepted_content_types = None

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def decode(self, delivery: Delivery) -> Any:
        return delivery.body.decode()

    def consume(self, body: Any, delivery: Delivery) -> Any:
        if not self.seen:
            self.seen.append("hung")
            time.sleep(60)
        self.seen.append(f"{delivery.queue} {body}")
        return body


def test_each_queue_keeps_its_own_handler_timeout(tmp_path: Path) -> None:
    """[queues.high] handler_timeout = 0.3: its hung call is stopped (reason timeout, dead-lettered to
    high.failed), and the low queue, which has no limit, is then served."""
    queues = {"high": {"consumer": "noop", "handler_timeout": 0.3}, "low": {"consumer": "noop"}}
    drivers = {"d": {"type": "memory", "namespace": str(tmp_path)}}
    with App(parse_config({"default_driver": "d", "drivers": drivers, "queues": queues})) as app:
        assert app.consume_loop("high").time_limit == 0.3
        assert app.consume_loop("high.failed").time_limit == 0.3  # runs high's messages again
        assert app.consume_loop("low").time_limit is None
        assert app.consume_loop("low", handler_timeout=2).time_limit == 2
        _publish(app, "high", "h1")
        _publish(app, "low", "l1")
        seen: list[str] = []
        loop = app.priority_loop(["high", "low"], poll_interval=0.05, burst=True)
        failures: list[MessageConsumptionFailed] = []
        app.dispatcher.add_listener(MessageConsumptionFailed.name, failures.append)
        for each in loop.loops:
            each.handler = _HangsOnce(seen)
            each._call = each.handler.consume
        started = time.monotonic()
        assert loop.run() == DRAINED
        assert time.monotonic() - started < 10
        assert seen == ["hung", "low l1"]
        [failure] = failures
        assert (failure.reason, failure.outcome, failure.delivery.queue) == (
            "timeout",
            "dead-lettered",
            "high",
        )
        assert app.driver().queue_manager().info("high.failed")["messages"] == 1


def test_each_queue_uses_its_own_driver(tmp_path: Path) -> None:
    """high on a memory driver, low on a sqlite one: one worker, each queue on its configured driver."""
    drivers = {
        "mem": {"type": "memory", "namespace": str(tmp_path)},
        "lite": {"type": "sqlite", "path": str(tmp_path / "q.sqlite3"), "poll_interval": 0.02},
    }
    queues = {"high": {"consumer": "noop", "driver": "mem"}, "low": {"consumer": "noop", "driver": "lite"}}
    with App(parse_config({"default_driver": "mem", "drivers": drivers, "queues": queues})) as app:
        _publish(app, "low", "l1")
        _publish(app, "high", "h1")
        seen: list[str] = []
        loop = _loop(app, seen, burst=True)
        assert [each.driver.name for each in loop.loops] == ["mem", "lite"]
        assert loop.run() == DRAINED
        assert seen == ["high h1", "low l1"]
        assert app.driver("lite").queue_manager().info("low")["messages"] == 0
