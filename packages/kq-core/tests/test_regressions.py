"""Regression tests for defects found in review; each failed before its fix."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kq.core import (
    App,
    CallableHandler,
    ConfigError,
    ConsoleCommandHandler,
    ConsumeLoop,
    Delivery,
    DeliveryStateError,
    Handler,
    Limits,
    Message,
    NoopHandler,
    UnsupportedOperationError,
    parse_config,
)
from kq.core._allow import AllowList
from kq.core._config import ConsoleSettings
from kq.core.driver import Capabilities, DriverSpec, Producer, QueueSpec
from kq.drivers.memory import MemoryDriver
from kq.drivers.sqlite import SqliteDriver


@pytest.fixture(autouse=True)
def _fresh_memory() -> Iterator[None]:
    MemoryDriver.reset()
    yield
    MemoryDriver.reset()


class _Failing(Handler):
    accepted_content_types = None

    def consume(self, body: Any, delivery: Delivery) -> Any:
        raise RuntimeError("handler failed")


class _NoDeadLetters(MemoryDriver):
    """A memory driver whose dead-letter queues cannot be published to."""

    def producer(self, queue: str) -> Producer:
        if queue.endswith(".failed"):
            raise RuntimeError("dead-letter queue unavailable")
        return super().producer(queue)


def test_undeliverable_dead_letter_is_requeued_with_a_delay_not_in_a_hot_loop() -> None:
    driver = _NoDeadLetters(DriverSpec(name="m", type="memory"))
    driver.producer("jobs").send(Message(b"x", content_type="text/plain"))
    loop = ConsumeLoop(driver, "jobs", _Failing(), limits=Limits(messages=1), poll_interval=0.1)
    loop.run()
    assert (loop.stats.failed, loop.stats.requeued, loop.stats.dead_lettered) == (1, 1, 0)
    info = driver.queue_manager().info("jobs")
    assert (info["messages"], info["delayed"]) == (0, 1)


class _NoTTL(MemoryDriver):
    capabilities: ClassVar[Capabilities] = Capabilities(delayed_delivery=True, message_ttl=False)


def test_ttl_on_a_driver_without_expiry_is_refused_not_ignored() -> None:
    driver = _NoTTL(DriverSpec(name="m", type="memory"))
    with pytest.raises(UnsupportedOperationError, match="cannot expire messages"):
        driver.producer("jobs").send(Message(b"x", ttl=5))


def test_queue_level_visibility_timeout_must_be_positive(tmp_path: Path) -> None:
    queue = QueueSpec(name="jobs", driver="d", options={"visibility_timeout": -5}, source="kq.toml")
    with pytest.raises(ConfigError, match=r"between 0 \(excluded\).*key 'queues\.jobs\.visibility_timeout'"):
        SqliteDriver(DriverSpec(name="d", type="sqlite", options={"path": str(tmp_path / "q.db")}), [queue])


@pytest.mark.parametrize("kind", [MemoryDriver, SqliteDriver])
def test_driver_visibility_timeout_must_be_positive(kind: type[MemoryDriver] | type[SqliteDriver]) -> None:
    with pytest.raises(ConfigError, match=r"between 0 \(excluded\)"):
        kind(DriverSpec(name="d", type="x", options={"visibility_timeout": 0}))


def test_extending_a_lost_sqlite_lease_is_reported(tmp_path: Path) -> None:
    spec = DriverSpec(
        name="d", type="sqlite", options={"path": str(tmp_path / "q.db"), "visibility_timeout": 0.2}
    )
    with SqliteDriver(spec) as driver:
        driver.producer("jobs").send(Message(b"x", content_type="text/plain"))
        with driver.consumer("jobs") as first, driver.consumer("jobs") as second:
            delivery = first.receive(1)
            assert delivery is not None
            time.sleep(0.3)
            taken = second.receive(1)  # the lease expired: another consumer takes the message
            assert taken is not None
            with pytest.raises(DeliveryStateError, match="already expired"):
                first.extend(delivery, 30)
            second.ack(taken)


def test_console_cwd_is_relative_to_the_configuration_file(tmp_path: Path) -> None:
    config = parse_config({"console": {"cwd": "work"}}, source="kq.toml", root=str(tmp_path))
    assert config.console.cwd == str(tmp_path / "work")
    absolute = parse_config({"console": {"cwd": "/srv/app"}}, source="kq.toml", root=str(tmp_path))
    assert absolute.console.cwd == "/srv/app"


def test_dead_letter_queue_is_consumed_with_the_original_queues_consumer() -> None:
    config = parse_config({"queues": {"events": {"consumer": "noop"}}}, source="kq.toml")
    with App(config) as app:
        assert isinstance(app.handler("events.failed"), NoopHandler)


def test_broken_listener_only_breaks_commands_that_need_listeners() -> None:
    config = parse_config(
        {"listeners": [{"event": "message_sent", "handler": "kq_no_such_module:listener"}]}, source="kq.toml"
    )
    app = App(config)
    assert app.driver().name == "default"  # nothing that needs listeners fails
    with pytest.raises(ConfigError, match=r"key 'listeners\[0\]\.handler' in kq\.toml"):
        app.producer("jobs")


def test_command_does_not_inherit_the_workers_kq_label(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KQ_LABEL", "the-parent")
    settings = ConsoleSettings(
        prefix=(sys.executable, "-c", "import os; print(repr(os.environ['KQ_LABEL']))")
    )
    consumer = ConsoleCommandHandler(settings, AllowList(["x"]), label=None)
    delivery = Delivery(
        body=b"", content_type="application/json", headers={}, routing_key="", message_id="m", queue="q"
    )
    result = consumer.consume({"command": "x"}, delivery)
    assert result.stdout.strip() == "''"


def test_deeply_nested_json_is_dead_lettered_and_the_loop_goes_on() -> None:
    driver = MemoryDriver(DriverSpec(name="m", type="memory"))
    bomb = b"[" * 100_000 + b"]" * 100_000
    driver.producer("jobs").send_batch([Message(bomb), Message(b'{"ok": true}')])
    echo = CallableHandler(lambda body, delivery: body, "echo")  # decodes (noop does not)
    loop = ConsumeLoop(driver, "jobs", echo, limits=Limits(messages=2), poll_interval=0.1)
    loop.run()
    assert (loop.stats.consumed, loop.stats.dead_lettered) == (1, 1)
    with driver.consumer("jobs.failed") as consumer:
        failed = consumer.receive(1)
        assert failed is not None
        assert failed.headers["kq-dead-letter-reason"] == "undecodable"
        assert "nested too deeply" in failed.headers["kq-dead-letter-error"]
        consumer.ack(failed)


@pytest.mark.parametrize("section", ["services", "xmlrpc"])
def test_invalid_regular_expression_as_allow_map_key_is_a_config_error(section: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"invalid regular expression.*key 'allow\.{section}\.re:\(unclosed'"
    ):
        parse_config({"allow": {section: {"re:(unclosed": ["x"]}}}, source="kq.toml")


def test_a_non_ascii_signature_is_a_bad_signature_not_a_crash() -> None:
    from kq.core import Signer, Verifier, new_key

    key = new_key().encode()
    signed = Signer("k1", key).sign(Message(b"{}"), "q")
    delivery = Delivery(
        body=signed.body,
        content_type=signed.content_type,
        headers={**signed.headers, "kq-signature": "é" * 64},
        routing_key="",
        message_id=signed.message_id,
        queue="q",
    )
    from kq.core import SignatureError

    with pytest.raises(SignatureError) as caught:
        Verifier({"k1": key}, max_age=60).verify(delivery, ["q"])
    assert caught.value.reason == "bad-signature"


def test_a_message_without_content_type_can_be_dead_lettered() -> None:
    driver = MemoryDriver(DriverSpec(name="m", type="memory"))
    delivery = Delivery(
        body=b"not json", content_type="", headers={}, routing_key="k", message_id="m1", queue="q"
    )
    assert delivery.to_message().content_type == "application/json"
    driver.producer("q").send(delivery.to_message())


class _AlwaysFailing(Handler):
    accepted_content_types = None

    def consume(self, body: Any, delivery: Delivery) -> Any:
        raise RuntimeError("failing on purpose")


@pytest.mark.parametrize("retry", [None, {"max_attempts": 3, "delay": 0}])
def test_a_foreign_header_name_neither_crashes_the_worker_nor_traps_the_message(
    retry: dict[str, Any] | None,
) -> None:
    """A header name kq cannot publish (a PHP producer's "X-Php Trace") made dead-lettering fail
    forever (requeued every 5 s) and, with a retry policy, crashed the worker."""
    queue: dict[str, Any] = {"consumer": "noop"} | ({"retry": retry} if retry else {})
    config = parse_config(
        {"default_driver": "m", "drivers": {"m": {"type": "memory"}}, "queues": {"jobs": queue}}
    )
    with App(config) as app:
        driver, _ = app.queue("jobs")
        message = Message(b'"x"', headers={"x-ok": "1"})
        object.__setattr__(message, "headers", {"x-ok": "1", "X-Php Trace": "abc", "a:b": "c"})
        driver.producer("jobs").send(message)
        loop = app.consume_loop("jobs", handler=_AlwaysFailing(), limits=Limits(messages=1, time=5))
        loop.run()  # must not raise
        # The memory driver cannot queue a copy with such headers either: the message is dead-lettered.
        assert (loop.stats.retried, loop.stats.dead_lettered, loop.stats.requeued) == (0, 1, 0)
        with driver.consumer("jobs.failed") as consumer:
            dead = consumer.receive(1)
            assert dead is not None
        assert dead.headers["x-ok"] == "1"
        assert "X-Php Trace" not in dead.headers
        assert json.loads(dead.headers["kq-dead-letter-foreign-headers"]) == {
            "X-Php Trace": "abc",
            "a:b": "c",
        }
        assert dead.headers["kq-dead-letter-reason"] == "failed"


def test_noop_acknowledges_without_decoding() -> None:
    """The no-op consumer decoded every body it then ignored (a tenth of a no-op worker's time), and
    dead-lettered a body that was not JSON instead of doing nothing with it."""
    driver = MemoryDriver(DriverSpec(name="mem", type="memory"), [QueueSpec(name="jobs", driver="mem")])
    driver.producer("jobs").send(Message(b"not json {"))
    loop = ConsumeLoop(driver, "jobs", NoopHandler(), limits=Limits(messages=1), handle_signals=False)
    loop.run()
    assert (loop.stats.consumed, loop.stats.failed) == (1, 0)
    assert driver.queue_manager().info("jobs")["messages"] == 0
