"""Bundled listeners, ``[[listeners]]`` in the configuration and ``kq.listeners`` plugins."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kq.core import (
    AllowList,
    App,
    CommandResult,
    ConfigError,
    ConsoleCommandHandler,
    ConsumeLoop,
    Delivery,
    Handler,
    Limits,
    Message,
    MessageConsumed,
    parse_config,
)
from kq.core import _registry as registry
from kq.core._config import ConsoleSettings
from kq.core.driver import DriverSpec
from kq.core.listeners import Accumulator, Monitor, RequeueFailedCommands, Stopwatch
from kq.core.testing import drain
from kq.drivers.memory import MemoryDriver

LISTENER_MODULE = """
order = []
instances = []

class Recorder:
    events = ("message_consumed",)

    def __init__(self, tag="untagged"):
        self.tag = tag
        self.seen = []
        instances.append(self)

    def __call__(self, event):
        self.seen.append(event.name)

def high(event):
    order.append("high")

def low(event):
    order.append("low")

def broken_plugin(dispatcher):
    raise RuntimeError("cannot register")

def good_plugin(dispatcher):
    dispatcher.add_listener("message_consumed", lambda event: order.append(("plugin", event.result)))
"""


class Picky(Handler):
    """Returns ``{"echo": body}``; fails on the body ``"bad"``."""

    kind = "picky"

    def consume(self, body: Any, delivery: Delivery) -> Any:
        if body == "bad":
            raise RuntimeError("picky says no")
        return {"echo": body}


@pytest.fixture
def mod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The module ``kqtest_listeners`` (listeners and plugin functions), imported."""
    (tmp_path / "kqtest_listeners.py").write_text(LISTENER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("kqtest_listeners", None)
    yield __import__("kqtest_listeners")
    sys.modules.pop("kqtest_listeners", None)


@pytest.fixture
def driver() -> Iterator[MemoryDriver]:
    MemoryDriver.reset()
    yield MemoryDriver(DriverSpec(name="mem", type="memory"))
    MemoryDriver.reset()


def publish(driver: MemoryDriver, *bodies: Any) -> list[Message]:
    messages = [Message(json.dumps(b).encode(), routing_key="k.x") for b in bodies]
    driver.producer("jobs").send_batch(messages)
    return messages


def loop(driver: MemoryDriver, handler: Handler, count: int, *listeners: Any) -> ConsumeLoop:
    consume = ConsumeLoop(driver, "jobs", handler, limits=Limits(messages=count), poll_interval=0.05)
    for listener in listeners:
        for event in listener.events:
            consume.dispatcher.add_listener(event, listener)
    consume.run()
    return consume


def waiting(driver: MemoryDriver, queue: str) -> list[Delivery]:
    with driver.consumer(queue) as consumer:
        return drain(consumer, idle=0)


def test_monitor_logs_received_consumed_and_failed(
    driver: MemoryDriver, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = publish(driver, "ok", "bad")
    with caplog.at_level(logging.INFO, logger="kq.monitor"):
        loop(driver, Picky(), 2, Monitor())
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "kq.monitor"]
    assert lines[0] == ("INFO", f"received queue jobs message {good.message_id} key 'k.x' delivery 1: ok")
    assert lines[1][0] == "INFO"
    assert lines[1][1].startswith(f"consumed queue jobs message {good.message_id} in ")
    assert lines[1][1].endswith("s: {'echo': 'ok'}")
    assert lines[2] == ("INFO", f"received queue jobs message {bad.message_id} key 'k.x' delivery 1: bad")
    assert lines[3] == (
        "WARNING",
        f"failed queue jobs message {bad.message_id} attempt 1 (failed, to be dead-lettered): picky says no",
    )
    assert len(lines) == 4


def test_monitor_cuts_previews_and_shows_command_results(caplog: pytest.LogCaptureFixture) -> None:
    delivery = Delivery(b"{}", "application/json", {}, "", "m1", "jobs")
    result = CommandResult(argv=("x",), exit_code=0, stdout="  hello world  \n", stderr="", duration=0.5)
    with caplog.at_level(logging.INFO, logger="kq.monitor"):
        Monitor(preview=5)(MessageConsumed(delivery, {}, None, result, 0.5))
        Monitor(preview=5)(MessageConsumed(delivery, {}, None, "0123456789", 0.5))
    assert [r.getMessage() for r in caplog.records] == [
        "consumed queue jobs message m1 in 0.500s: exit 0, stdout hello...",
        "consumed queue jobs message m1 in 0.500s: 01234...",
    ]


def test_stopwatch_logs_every_n_messages(driver: MemoryDriver, caplog: pytest.LogCaptureFixture) -> None:
    publish(driver, "a", "bad", "c", "d", "e")
    with caplog.at_level(logging.INFO, logger="kq.stopwatch"):
        loop(driver, Picky(), 5, Stopwatch(every=2))
    messages = [r.getMessage() for r in caplog.records if r.name == "kq.stopwatch"]
    assert len(messages) == 2  # after 2 and 4 messages, failures counted too
    assert all(m.startswith("2 messages in ") and m.endswith(" msg/s)") for m in messages)
    with pytest.raises(ValueError, match="every must be a whole number between 1 and"):
        Stopwatch(every=0)


def test_accumulator_keeps_results_and_failures(driver: MemoryDriver) -> None:
    accumulator = Accumulator()
    with pytest.raises(IndexError):
        accumulator.result()
    publish(driver, "a", "bad", "b")
    loop(driver, Picky(), 3, accumulator)
    assert accumulator.results == [{"echo": "a"}, {"echo": "b"}]
    assert (accumulator.result(), accumulator.result(0)) == ({"echo": "b"}, {"echo": "a"})
    assert [str(f.error) for f in accumulator.failures] == ["picky says no"]
    accumulator.reset()
    assert (accumulator.received, accumulator.results, accumulator.failures) == ([], [], [])


def _console(*allowed: str) -> ConsoleCommandHandler:
    false = shutil.which("false")
    assert false is not None
    return ConsoleCommandHandler(ConsoleSettings(prefix=(false,), timeout=10), AllowList(allowed))


def test_requeue_failed_commands_retries_up_to_max_attempts(driver: MemoryDriver) -> None:
    [message] = publish(driver, {"command": "flaky", "arguments": ["x"]})
    attempts: list[str | None] = []
    accumulator = Accumulator()
    consume = ConsumeLoop(driver, "jobs", _console("flaky"), limits=Limits(messages=3), poll_interval=0.05)
    consume.dispatcher.add_listener(
        "message_received", lambda e: attempts.append(e.delivery.headers.get("kq-attempt"))
    )
    consume.dispatcher.add_listener("message_consumption_failed", RequeueFailedCommands(max_attempts=3))
    consume.dispatcher.add_listener("message_consumption_failed", accumulator)
    consume.run()
    assert attempts == [None, "2", "3"]
    assert [(f.attempt, f.outcome) for f in accumulator.failures] == [
        (1, "retried"),
        (2, "retried"),
        (3, "dead-lettered"),
    ]
    assert (consume.stats.retried, consume.stats.dead_lettered) == (2, 1)
    assert waiting(driver, "jobs") == []
    [dead] = waiting(driver, "jobs.failed")
    assert (dead.message_id, dead.body) == (message.message_id, message.body)
    assert dead.headers["kq-attempt"] == "3"
    assert dead.headers["kq-dead-letter-reason"] == "failed"
    assert "exited with status 1" in dead.headers["kq-dead-letter-error"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"command": "forbidden"}, "not-allowed"),
        ({"command": "flaky", "options": {"-x;rm": None}}, "invalid"),
        ("not a command", "invalid"),
    ],
)
def test_requeue_failed_commands_never_retries_what_cannot_succeed(
    driver: MemoryDriver, body: Any, reason: str
) -> None:
    publish(driver, body)
    consume = loop(driver, _console("flaky"), 1, RequeueFailedCommands(max_attempts=5))
    assert (consume.stats.retried, consume.stats.dead_lettered) == (0, 1)
    assert waiting(driver, "jobs") == []
    assert [d.headers["kq-dead-letter-reason"] for d in waiting(driver, "jobs.failed")] == [reason]


def test_requeue_failed_commands_ignores_other_consumers_and_delays(driver: MemoryDriver) -> None:
    publish(driver, "bad")
    assert loop(driver, Picky(), 1, RequeueFailedCommands()).stats.retried == 0
    publish(driver, {"command": "flaky"})
    assert loop(driver, _console("flaky"), 1, RequeueFailedCommands(delay=30)).stats.retried == 1
    info = driver.queue_manager().info("jobs")
    assert (info["messages"], info["delayed"]) == (0, 1)
    with pytest.raises(ValueError, match="max_attempts must be a whole number between 1 and"):
        RequeueFailedCommands(max_attempts=0)


def _app(listeners: list[dict[str, Any]], **extra: Any) -> App:
    data = {"drivers": {"mem": {"type": "memory"}}, "default_driver": "mem", "listeners": listeners, **extra}
    return App(parse_config(data, source="kq.toml"))


@pytest.mark.usefixtures("driver")
def test_configured_listeners_events_options_queue_and_priority(mod: Any) -> None:
    listeners: list[dict[str, Any]] = [
        {"handler": "kqtest_listeners:Recorder", "options": {"tag": "default-events"}},
        {"handler": "kqtest_listeners:Recorder", "event": ["message_received", "message_consumed"]},
        {"handler": "kqtest_listeners:Recorder", "event": "message_consumed", "queue": "other"},
        {"handler": "kqtest_listeners:low", "event": "message_received", "priority": -5},
        {"handler": "kqtest_listeners:high", "event": "message_received", "priority": 5},
    ]
    with _app(listeners, queues={"jobs": {"consumer": "noop"}}) as app:
        app.producer("jobs").publish("{}")
        app.consume_loop("jobs", limits=Limits(messages=1), poll_interval=0.05).run()
    tags = [(r.tag, r.seen) for r in mod.instances]
    assert tags == [
        ("default-events", ["message_consumed"]),
        ("untagged", ["message_received", "message_consumed"]),
        ("untagged", []),  # bound to another queue
    ]
    assert mod.order == ["high", "low"]


@pytest.mark.usefixtures("driver")
def test_configured_requeue_listener_with_options() -> None:
    listener = {
        "handler": "kq.core.listeners:RequeueFailedCommands",
        "queue": "jobs",
        "options": {"max_attempts": 2},
    }
    console = {"prefix": [shutil.which("false") or "false"]}
    with _app([listener], queues={"jobs": {}}, console=console, allow={"commands": ["flaky"]}) as app:
        app.command_producer("jobs").publish("flaky")
        consume = app.consume_loop("jobs", limits=Limits(messages=2), poll_interval=0.05)
        consume.run()
        assert (consume.stats.retried, consume.stats.dead_lettered) == (1, 1)
        with app.driver().consumer("jobs.failed") as consumer:
            dead = consumer.receive(0)
            assert dead is not None
            assert dead.headers["kq-attempt"] == "2"


@pytest.mark.usefixtures("mod")
@pytest.mark.parametrize(
    ("listener", "key", "message"),
    [
        (
            {"handler": "kqtest_listeners:high"},
            "listeners[0].event",
            "say which events 'kqtest_listeners:high'",
        ),
        (
            {"handler": "kqtest_listeners:high", "event": "message_consumed", "options": {"a": 1}},
            "listeners[0].options",
            "is not a class",
        ),
        (
            {"handler": "kqtest_listeners:Recorder", "options": {"nope": 1}},
            "listeners[0].options",
            "cannot create listener",
        ),
        (
            {"handler": "kq.core.listeners:Stopwatch", "options": {"every": 0}},
            "listeners[0].options",
            "every must be a whole number between 1 and",
        ),
        (
            {"handler": "kqtest_nowhere:f", "event": "message_sent"},
            "listeners[0].handler",
            "cannot load listener",
        ),
    ],
)
def test_configured_listener_errors_name_the_key(listener: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _app([listener]).dispatcher  # noqa: B018 - listeners load on first use
    assert caught.value.key == key


@pytest.mark.usefixtures("driver")
def test_listener_plugin_that_fails_is_logged_and_skipped(
    mod: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = registry._entry_points
    group = registry.LISTENER_GROUP
    plugins = {
        name: importlib.metadata.EntryPoint(name=name, value=value, group=group)
        for name, value in {
            "a-broken": "kqtest_listeners:broken_plugin",
            "b-missing": "kqtest_no_such_plugin:register",
            "c-good": "kqtest_listeners:good_plugin",
        }.items()
    }
    monkeypatch.setattr(registry, "_entry_points", lambda name: plugins if name == group else real(name))
    with (
        caplog.at_level(logging.ERROR, logger="kq.core.app"),
        _app([], queues={"jobs": {"consumer": "noop"}}) as app,
    ):
        app.producer("jobs").publish('"payload"')
        app.consume_loop("jobs", limits=Limits(messages=1), poll_interval=0.05).run()
    assert mod.order == [("plugin", b'"payload"')]  # noop does not decode
    failures = [r.getMessage() for r in caplog.records if r.name == "kq.core.app"]
    assert len(failures) == 2
    assert failures[0].startswith("listener plugin a-broken (kqtest_listeners:broken_plugin")
    assert failures[0].endswith("failed to register; continuing without it")
    assert failures[1].startswith("listener plugin b-missing (kqtest_no_such_plugin:register")
