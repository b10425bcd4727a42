"""Retries: a failure listener calls ``event.retry()``; the loop queues a copy via ``Consumer.retry``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kq.core import (
    ConsumeLoop,
    Delivery,
    DeliveryStateError,
    Handler,
    Limits,
    Message,
    MessageConsumptionFailed,
    MessageFormatError,
    NotAllowedError,
)
from kq.core._failures import attempt_of
from kq.core._signing import NONCE, Signer, Verifier
from kq.core.driver import ATTEMPT, Capabilities, Consumer, Driver, DriverSpec, QueueSpec
from kq.core.listeners import Accumulator
from kq.drivers.memory import MemoryDriver
from kq.drivers.memory._driver import MemoryConsumer
from kq.drivers.sqlite import SqliteDriver


class Failing(Handler):
    """Fails every message: as the body says (``"invalid"``, ``"not-allowed"``) or at run time."""

    accepted_content_types = None
    kind = "failing"

    def consume(self, body: Any, delivery: Delivery) -> Any:
        if body == "invalid":
            raise MessageFormatError("malformed")
        if body == "not-allowed":
            raise NotAllowedError("not in the allow-list")
        raise RuntimeError(f"attempt failed: {body}")


class _LimitedDelay(MemoryDriver):
    capabilities: ClassVar[Capabilities] = Capabilities(delayed_delivery=True, max_publish_delay=10)


class _InPlaceConsumer(MemoryConsumer):
    """Retries in place, as SQS FIFO does: the delivery goes back where it was, attempts counted from
    the delivery count."""

    def _retry(self, delivery: Delivery, headers: dict[str, str], delay: float) -> None:
        delivery.to_message(headers=headers)
        self._reject(delivery, True, delay)

    def _lease(self, queue: Any, entry: Any, now: float) -> Delivery:
        delivery = super()._lease(queue, entry, now)
        if delivery.delivery_count > 1:
            delivery.headers = {**delivery.headers, ATTEMPT: str(delivery.delivery_count)}
        return delivery


class _InPlace(MemoryDriver):
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed_delivery=True, max_publish_delay=0.0, max_requeue_delay=100.0, retry_in_place=True
    )

    def _create_consumer(self, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int) -> Consumer:
        return _InPlaceConsumer(self, queue, routing_keys, prefetch)


@pytest.fixture(params=["memory", "sqlite"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    MemoryDriver.reset()
    made: Driver
    if request.param == "memory":
        made = MemoryDriver(DriverSpec(name="d", type="memory"))
    else:
        made = SqliteDriver(DriverSpec(name="d", type="sqlite", options={"path": str(tmp_path / "q.db")}))
    yield made
    made.close()
    MemoryDriver.reset()


def retry_below(limit: int, delay: float = 0.0) -> Any:
    def listener(event: MessageConsumptionFailed) -> None:
        if event.attempt < limit:
            event.retry(delay)

    return listener


def run(driver: Driver, messages: int, *listeners: Any, **options: Any) -> tuple[ConsumeLoop, Accumulator]:
    accumulator = Accumulator()
    loop = ConsumeLoop(
        driver, "jobs", Failing(), limits=Limits(messages=messages), poll_interval=0.05, **options
    )
    for listener in (*listeners, accumulator):
        loop.dispatcher.add_listener("message_consumption_failed", listener)
    loop.run()
    return loop, accumulator


def drain(driver: Driver, queue: str) -> list[Delivery]:
    with driver.consumer(queue) as consumer:
        found = []
        while (delivery := consumer.receive(0.05)) is not None:
            consumer.ack(delivery)
            found.append(delivery)
        return found


@pytest.mark.parametrize(
    ("value", "attempt"),
    [(None, 1), ("1", 1), ("3", 3), ("12", 12), ("0", 1), ("-2", 1), ("x", 1), ("2.5", 1), ("", 1)],
)
def test_attempt_of(value: str | None, attempt: int) -> None:
    headers = {} if value is None else {"kq-attempt": value}
    assert attempt_of(Delivery(b"", "text/plain", headers, "", "m", "q")) == attempt


def test_retry_request_validates_the_delay() -> None:
    event = MessageConsumptionFailed(
        Delivery(b"", "text/plain", {}, "", "m", "q"), None, None, RuntimeError()
    )
    assert [event.retry_delay] == [None]  # (a list: mypy would keep the None narrowing)
    event.retry()
    assert event.retry_delay == 0.0
    event.retry(2.5)
    assert event.retry_delay == 2.5
    with pytest.raises(ValueError, match="delay must be a finite number between 0 and"):
        event.retry(-1)


def test_retried_copy_keeps_the_message_and_counts_attempts(driver: Driver) -> None:
    original = Message(b'"work"', headers={"trace": "t-1"}, routing_key="jobs.report")
    driver.producer("jobs").send(original)
    seen: list[Delivery] = []
    loop, accumulator = run(
        driver, 3, lambda event: seen.append(event.delivery), retry_below(3), routing_key="jobs.*"
    )
    assert [attempt_of(d) for d in seen] == [1, 2, 3]
    for delivery in seen:
        assert (delivery.message_id, delivery.body, delivery.content_type, delivery.routing_key) == (
            original.message_id,
            b'"work"',
            "application/json",
            "jobs.report",
        )
        assert delivery.headers["trace"] == "t-1"
        assert delivery.delivery_count == 1  # a new message each time, not a broker redelivery
    assert [e.outcome for e in accumulator.failures] == ["retried", "retried", "dead-lettered"]
    assert (loop.stats.failed, loop.stats.retried, loop.stats.dead_lettered) == (3, 2, 1)
    info = driver.queue_manager().info("jobs")
    assert (info["messages"], info.get("in_flight", 0)) == (0, 0)
    [dead] = drain(driver, "jobs.failed")
    assert (dead.headers["kq-attempt"], dead.headers["kq-dead-letter-reason"]) == ("3", "failed")
    assert dead.headers["kq-dead-letter-error"] == "RuntimeError: attempt failed: work"


def test_retry_with_a_delay_hides_the_copy(driver: Driver) -> None:
    driver.producer("jobs").send(Message(b'"later"'))
    loop, _ = run(driver, 1, retry_below(5, delay=60))
    assert loop.stats.retried == 1
    info = driver.queue_manager().info("jobs")
    assert (info["messages"], info["delayed"]) == (0, 1)
    assert drain(driver, "jobs") == []


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b'"invalid"', "application/json", "invalid"),
        (b'"not-allowed"', "application/json", "not-allowed"),
        (b"{broken", "application/json", "undecodable"),
    ],
)
def test_retry_of_a_message_that_can_never_succeed_is_ignored(
    driver: Driver, caplog: pytest.LogCaptureFixture, body: bytes, content_type: str, reason: str
) -> None:
    driver.producer("jobs").send(Message(body, content_type=content_type))
    with caplog.at_level(logging.WARNING, logger="kq.core.loop"):
        loop, accumulator = run(driver, 1, retry_below(5))
    assert [(e.reason, e.outcome) for e in accumulator.failures] == [(reason, "dead-lettered")]
    assert loop.stats.retried == 0
    assert any("can never succeed" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    assert drain(driver, "jobs") == []
    assert [d.headers["kq-dead-letter-reason"] for d in drain(driver, "jobs.failed")] == [reason]


def test_a_retry_delay_beyond_the_drivers_maximum_is_shortened_to_it() -> None:
    # Retrying as late as the driver allows beats giving up: the delay is capped, not refused.
    MemoryDriver.reset()
    driver = _LimitedDelay(DriverSpec(name="d", type="memory"))
    driver.producer("jobs").send(Message(b'"x"'))
    loop, accumulator = run(driver, 1, retry_below(5, delay=60))
    assert (loop.stats.retried, loop.stats.dead_lettered) == (1, 0)
    assert accumulator.failures[0].outcome == "retried"
    info = driver.queue_manager().info("jobs")
    assert (info["messages"], info["delayed"]) == (0, 1)
    MemoryDriver.reset()


def test_consumer_retry_settles_the_delivery_once(driver: Driver) -> None:
    driver.producer("jobs").send(Message(b'"x"', headers={"keep": "me"}))
    with driver.consumer("jobs") as consumer, driver.consumer("jobs") as other:
        delivery = consumer.receive(1)
        assert delivery is not None
        with pytest.raises(ValueError, match="delay must be a finite number between 0 and"):
            consumer.retry(delivery, {"kq-attempt": "2"}, delay=-1)
        with pytest.raises(DeliveryStateError):
            other.retry(delivery, {"kq-attempt": "2"})
        consumer.retry(delivery, {"kq-attempt": "2", "keep": "me"})
        assert delivery.settled
        with pytest.raises(DeliveryStateError):
            consumer.retry(delivery, {"kq-attempt": "3"})
        with pytest.raises(DeliveryStateError):
            consumer.ack(delivery)
    [copy] = drain(driver, "jobs")
    assert (copy.message_id, copy.headers) == (delivery.message_id, {"kq-attempt": "2", "keep": "me"})
    assert json.loads(copy.body) == "x"


def test_a_retry_in_place_keeps_the_signed_message_and_is_not_a_replay() -> None:
    """Where the driver retries in place, the message comes back as it was (same nonce, no new
    signature), is not refused as a replay, and counts its attempts."""
    MemoryDriver.reset()
    driver = _InPlace(DriverSpec(name="d", type="memory"))
    key = b"k" * 32
    signer = Signer("k1", key)
    driver.producer("jobs").send(signer.sign(Message(b'"work"'), "jobs"))
    seen: list[Delivery] = []
    loop, accumulator = run(
        driver,
        3,
        lambda event: seen.append(event.delivery),
        retry_below(3),
        signer=signer,
        verifier=Verifier({"k1": key}, max_age=3600),
    )
    assert [(e.reason, e.outcome) for e in accumulator.failures] == [
        ("failed", "retried"),
        ("failed", "retried"),
        ("failed", "dead-lettered"),
    ]
    assert [attempt_of(d) for d in seen] == [1, 2, 3]
    assert len({d.headers[NONCE] for d in seen}) == 1, "a retry in place must not be signed anew"
    assert loop.stats.retried == 2
    MemoryDriver.reset()


def test_a_retry_in_place_is_delayed_within_the_requeue_limit(caplog: pytest.LogCaptureFixture) -> None:
    """The publish limit (0 here) does not apply to a retry in place; the requeue limit (100 s) does."""
    MemoryDriver.reset()
    driver = _InPlace(DriverSpec(name="d", type="memory"))
    driver.producer("jobs").send(Message(b'"x"'))
    with caplog.at_level(logging.WARNING, logger="kq.core.failure_policy"):
        loop, _ = run(driver, 1, retry_below(5, delay=500))
    assert loop.stats.retried == 1
    [line] = [r.getMessage() for r in caplog.records if "queued in" in r.getMessage()]
    assert "delays a requeue by at most 100s, so the retry planned in 500s is queued in 100s instead" in line
    queued = [r.getMessage() for r in caplog.records if "attempt 2 queued again" in r.getMessage()]
    assert queued
    assert queued[0].endswith("visible in 100s, kept ahead of the messages queued after it")
    info = driver.queue_manager().info("jobs")
    assert (info["messages"], info["delayed"]) == (0, 1)
    MemoryDriver.reset()
