"""The driver contract as the core applies it (issue 11): capabilities per instance and per queue, two
delay maxima, delivery-count kinds and poison protection, leases of buffered deliveries, late settlement,
reserved header names, the group key, and dead letters refused for good."""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kq.core import (
    App,
    ConsumeLoop,
    Delivery,
    Handler,
    LeaseLostError,
    Limits,
    Message,
    MessageFormatError,
    RetryPolicy,
    UnsupportedOperationError,
    parse_config,
)
from kq.core._failure_policy import PARK_AFTER
from kq.core._failures import poison_protection_problem, printable
from kq.core._leases import LeaseKeeper
from kq.core._message import (
    DEAD_LETTER_ERROR,
    DEAD_LETTER_FOREIGN_HEADERS,
    DEAD_LETTER_REASON,
    GROUP,
    is_portable_header_name,
)
from kq.core._redrive import retry_dead_letters
from kq.core.driver import Capabilities, DriverSpec, Producer, QueueSpec
from kq.core.testing import drain, receive_within
from kq.drivers.memory import MemoryConsumer, MemoryDriver
from kq.drivers.sqlite import SqliteDriver


@pytest.fixture(autouse=True)
def _fresh_memory() -> Iterator[None]:
    MemoryDriver.reset()
    yield
    MemoryDriver.reset()


class _Failing(Handler):
    accepted_content_types = None

    def __init__(self) -> None:
        self.runs = 0

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.runs += 1
        raise RuntimeError("failed \x1b[31mred\x1b[0m\nsecond line")


class _Ok(Handler):
    accepted_content_types = None

    def consume(self, body: Any, delivery: Delivery) -> Any:
        return body


class _PerQueue(MemoryDriver):
    """A driver whose queues differ: ``fifo`` cannot delay a publish, ``std`` can (up to 900 s)."""

    def capabilities_for(self, queue: str | None = None) -> Capabilities:
        base = Capabilities(
            delayed_delivery=True, max_publish_delay=900, max_requeue_delay=43_200, lease_extension=True
        )
        if queue == "fifo":
            return Capabilities(delayed_delivery=True, max_publish_delay=0, max_requeue_delay=43_200)
        return base


def _driver(cls: type[MemoryDriver] = MemoryDriver, *queues: QueueSpec) -> MemoryDriver:
    return cls(DriverSpec(name="mem", type="memory", options={"visibility_timeout": 1.0}), queues)


# --- capabilities per queue, two delay maxima --------------------------------------------------------


def test_publish_and_requeue_delays_are_checked_against_the_queues_own_maxima() -> None:
    driver = _driver(_PerQueue)
    driver.producer("std").send(Message(b'"x"', delay=900))
    with pytest.raises(UnsupportedOperationError, match="queue 'std'"):
        driver.producer("std").send(Message(b'"x"', delay=901))
    with pytest.raises(UnsupportedOperationError, match=r"on queue 'fifo'.*asks for 1s"):
        driver.producer("fifo").send(Message(b'"x"', delay=1))
    driver.producer("fifo").send(Message(b'"y"'))
    with driver.consumer("fifo") as consumer:
        delivery = receive_within(consumer, 2)
        consumer.reject(delivery, delay=3600)  # a requeue may wait far longer than a publish
        assert driver.queue_manager().info("fifo")["delayed"] == 1


def test_a_retry_the_queue_cannot_delay_is_queued_at_once_and_said(caplog: pytest.LogCaptureFixture) -> None:
    driver = _driver(
        _PerQueue, QueueSpec(name="fifo", driver="mem", retry=RetryPolicy(max_attempts=2, delay=30))
    )
    driver.producer("fifo").send(Message(b'"x"'))
    with caplog.at_level(logging.WARNING):
        loop = ConsumeLoop(driver, "fifo", _Failing(), limits=Limits(messages=2, time=10), poll_interval=0.05)
        loop.run()
    assert (loop.stats.retried, loop.stats.dead_lettered) == (1, 1), "the retry ran at once, then gave up"
    assert re.search(r"at most 0s, so the retry planned in [\d.]+s is queued at once", caplog.text)


def test_a_retry_beyond_the_longest_publish_delay_is_clamped_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = _driver(
        _PerQueue,
        QueueSpec(
            name="std", driver="mem", retry=RetryPolicy(max_attempts=2, delay=5000, max_delay=5000, jitter=0)
        ),
    )
    driver.producer("std").send(Message(b'"x"'))
    with caplog.at_level(logging.WARNING):
        ConsumeLoop(driver, "std", _Failing(), limits=Limits(messages=1, time=10), poll_interval=0.05).run()
    assert "queued in 900s instead" in caplog.text
    assert driver.queue_manager().info("std")["delayed"] == 1


class _NoConsumerRouting(MemoryDriver):
    capabilities: ClassVar[Capabilities] = Capabilities(consumer_routing="none", delayed_delivery=True)


def test_a_consumer_cannot_narrow_routing_where_the_driver_cannot_filter() -> None:
    driver = _driver(_NoConsumerRouting, QueueSpec(name="q", driver="mem", routing_keys=("a.*",)))
    with pytest.raises(UnsupportedOperationError, match=r"cannot narrow queue 'q' to routing key 'a\.b'"):
        driver.consumer("q", routing_key="a.b")
    driver.consumer("q", routing_key="a.*").close()  # the queue's own key is no narrowing
    driver.consumer("q").close()
    anything = _driver(_NoConsumerRouting, QueueSpec(name="all", driver="mem"))
    anything.consumer("all", routing_key="#").close()  # no keys means every key: '#' narrows nothing


def test_capabilities_refuse_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="delivery_count must be one of"):
        Capabilities(delivery_count="sometimes")
    with pytest.raises(ValueError, match="consumer_routing must be one of"):
        Capabilities(consumer_routing="maybe")
    with pytest.raises(ValueError, match="max_publish_delay must be a finite number"):
        Capabilities(max_publish_delay=float("nan"))


# --- delivery counts and poison protection ----------------------------------------------------------


class _CountsReceives(MemoryDriver):
    capabilities: ClassVar[Capabilities] = Capabilities(delayed_delivery=True, delivery_count="receives")


class _FlagsRedelivery(MemoryDriver):
    capabilities: ClassVar[Capabilities] = Capabilities(delayed_delivery=True, delivery_count="flag")


def _release_times(driver: MemoryDriver, queue: str, times: int) -> None:
    """Receive and release (close) without handling, as a worker stopping with a full buffer does."""
    for _ in range(times):
        with driver.consumer(queue) as consumer:
            receive_within(consumer, 2)


def test_a_released_never_handled_message_is_not_poison_where_the_count_counts_receives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = _driver(_CountsReceives, QueueSpec(name="q", driver="mem", max_deliveries=2))
    driver.producer("q").send(Message(b'"x"'))
    _release_times(driver, "q", 3)
    with caplog.at_level(logging.WARNING):
        loop = ConsumeLoop(driver, "q", _Ok(), limits=Limits(messages=1, time=10), poll_interval=0.05)
        loop.run()
    assert (loop.stats.consumed, loop.stats.dead_lettered) == (1, 0)
    assert "max_deliveries = 2 is not applied: the broker counts receives" in caplog.text


def test_exact_counts_still_catch_poison() -> None:
    driver = _driver(MemoryDriver, QueueSpec(name="q", driver="mem", max_deliveries=2))
    driver.producer("q").send(Message(b'"x"'))
    _release_times(driver, "q", 2)
    handler = _Failing()
    loop = ConsumeLoop(driver, "q", handler, limits=Limits(messages=1, time=10), poll_interval=0.05)
    loop.run()
    assert handler.runs == 0
    with driver.consumer("q.failed") as consumer:
        assert receive_within(consumer, 2).headers[DEAD_LETTER_REASON] == "poison"


def test_a_flag_count_with_a_limit_above_one_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    driver = _driver(_FlagsRedelivery, QueueSpec(name="q", driver="mem", max_deliveries=10))
    with caplog.at_level(logging.WARNING):
        ConsumeLoop(driver, "q", _Ok(), limits=Limits(time=0.1), poll_interval=0.05).run()
    assert "max_deliveries = 10 cannot work: the broker only flags a redelivery" in caplog.text
    assert poison_protection_problem(1, "flag") is None
    assert poison_protection_problem(10, "exact") is None
    assert poison_protection_problem(0, "receives") is None


# --- leases -----------------------------------------------------------------------------------------


class _StaleBuffer(MemoryDriver):
    """Hands out deliveries whose lease lapsed while they waited in a (pretend) prefetch buffer."""

    def _create_consumer(
        self, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int
    ) -> MemoryConsumer:
        consumer = super()._create_consumer(queue, routing_keys, prefetch)
        original = consumer._receive

        def stale(timeout: float) -> Delivery | None:
            delivery = original(timeout)
            if delivery is not None:
                delivery.lease_expires = time.monotonic() - 0.1
            return delivery

        consumer._receive = stale  # type: ignore[method-assign]
        assert isinstance(consumer, MemoryConsumer)
        return consumer


def test_a_delivery_whose_lease_lapsed_in_a_buffer_is_never_handed_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = _driver(_StaleBuffer)
    driver.producer("q").send(Message(b'"x"'))
    with caplog.at_level(logging.WARNING), driver.consumer("q") as consumer:
        assert consumer.receive(1) is None
    assert "whose lease had already lapsed; skipping it" in caplog.text


def test_the_lease_keeper_extends_from_when_the_lease_started() -> None:
    calls: list[float] = []

    class _Recorder:
        lease_duration = 30.0

        def extend(self, delivery: Delivery, seconds: float) -> None:
            calls.append(time.monotonic())

    delivery = Delivery(b"", "application/json", {}, "", "m", "q")
    # Received 2 s ago from the broker (a buffered delivery): a third of its 3 s lease is long past.
    delivery.lease_expires = time.monotonic() + 5.0  # handed over 25 s ago, from a buffer
    keeper = LeaseKeeper()
    try:
        started = time.monotonic()
        keeper.watch(_Recorder(), delivery)  # type: ignore[arg-type]
        deadline = started + 2.5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        keeper.release()
        keeper.shutdown()

    assert calls, "not extended: scheduled from watch(), not from when the lease began"


def test_late_settlement_leaves_the_new_holders_copy_alone(caplog: pytest.LogCaptureFixture) -> None:
    _late_settlement(_driver(), caplog)


def test_late_settlement_on_sqlite(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    options = {"path": str(tmp_path / "q.db"), "visibility_timeout": 1.0, "poll_interval": 0.05}
    with SqliteDriver(DriverSpec(name="db", type="sqlite", options=options)) as driver:
        _late_settlement(driver, caplog)


def _late_settlement(driver: Any, caplog: pytest.LogCaptureFixture) -> None:
    driver.producer("q").send(Message(b'"x"'))
    with driver.consumer("q") as late, driver.consumer("q") as holder:
        first = receive_within(late, 2)
        second = receive_within(holder, 3)  # after the 1 s lease lapsed
        assert second.message_id == first.message_id
        with pytest.raises(LeaseLostError):
            late.extend(first, 5)
        with caplog.at_level(logging.WARNING):
            late.ack(first)  # does not raise, and does not delete the holder's copy
        assert "came after the lease had lapsed" in caplog.text
        holder.extend(second, 5)
        holder.ack(second)
    with driver.consumer("q") as consumer:
        assert consumer.receive(1.5) is None, "acked twice, yet redelivered"


# --- headers: reserved names, the group key ------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["priority", "Timestamp", "message-id", "expires", "JMSType", "x-death", "AWS.x"]
)
def test_reserved_header_names_are_refused_at_publish(name: str) -> None:
    with pytest.raises(MessageFormatError, match="reserved by message brokers"):
        Message(b"{}", headers={name: "1"})
    assert not is_portable_header_name(name)


def test_a_foreign_reserved_header_is_kept_when_dead_lettered(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with SqliteDriver(DriverSpec(name="db", type="sqlite", options={"path": str(path)})) as driver:
        driver.producer("q").send(Message(b'"warm-up"'))
        with driver.consumer("q") as consumer:
            consumer.ack(receive_within(consumer, 2))
        with contextlib.closing(sqlite3.connect(path)) as connection, connection:
            connection.execute(
                "INSERT INTO kq_messages (queue, message_id, body, content_type, headers, routing_key,"
                " available_at, enqueued_at) VALUES ('q', 'php', '\"x\"', 'application/json',"
                ' \'{"priority": "5", "x-ok": "y"}\', \'\', 0, 0)'
            )
        ConsumeLoop(driver, "q", _Failing(), limits=Limits(messages=1, time=10), poll_interval=0.05).run()
        with driver.consumer("q.failed") as consumer:
            dead = receive_within(consumer, 2)
    assert dead.headers["x-ok"] == "y"
    assert "priority" not in dead.headers
    assert '"priority": "5"' in dead.headers[DEAD_LETTER_FOREIGN_HEADERS]


def test_the_group_key_travels_with_retry_dead_letter_and_redrive_copies() -> None:
    app = App(
        parse_config(
            {
                "default_driver": "mem",
                "drivers": {"mem": {"type": "memory"}},
                "queues": {"q": {"consumer": "noop", "retry": {"max_attempts": 2, "delay": 0}}},
            },
            source="kq.toml",
        )
    )
    with app:
        driver, _ = app.queue("q")
        driver.producer("q").send(Message(b'"x"', headers={GROUP: "customer-42"}))
        loop = app.consume_loop(
            "q", handler=_Failing(), limits=Limits(messages=2, time=10), poll_interval=0.05
        )
        loop.run()
        assert (loop.stats.retried, loop.stats.dead_lettered) == (1, 1)
        with driver.consumer("q.failed") as consumer:
            dead = receive_within(consumer, 2)
            assert dead.headers[GROUP] == "customer-42"
            consumer.reject(dead)
        assert retry_dead_letters(app, "q", idle=0.3).done == (dead.message_id,)
        with driver.consumer("q") as consumer:
            again = receive_within(consumer, 2)
    assert again.headers[GROUP] == "customer-42"


# --- dead letters refused for good ----------------------------------------------------------------------


class _PickyDeadLetters(MemoryDriver):
    """Dead-letter queues refuse messages with more than ``allowed`` headers (as SQS does past 10)."""

    allowed = 6
    refusals = 0

    def producer(self, queue: str) -> Producer:
        producer = super().producer(queue)
        if queue.endswith(".failed"):
            original = producer._send_batch

            def picky(messages: Sequence[Message]) -> None:
                if any(len(m.headers) > self.allowed for m in messages):
                    type(self).refusals += 1
                    raise MessageFormatError("more headers than the queue allows")
                original(messages)

            producer._send_batch = picky  # type: ignore[method-assign]
        return producer


def test_a_dead_letter_refused_for_its_headers_goes_as_a_plain_copy() -> None:
    driver = _driver(_PickyDeadLetters)
    headers = {f"x-h{i}": str(i) for i in range(4)}
    driver.producer("q").send(Message(b'"x"', headers=headers))
    loop = ConsumeLoop(driver, "q", _Failing(), limits=Limits(messages=1, time=10), poll_interval=0.05)
    loop.run()
    assert (loop.stats.dead_lettered, loop.stats.parked) == (1, 0)
    with driver.consumer("q.failed") as consumer:
        dead = receive_within(consumer, 2)
    assert '"x-h3": "3"' in dead.headers[DEAD_LETTER_FOREIGN_HEADERS]
    assert "\x1b" not in dead.headers[DEAD_LETTER_ERROR]
    assert "\\x1b[31mred" in dead.headers[DEAD_LETTER_ERROR]


def test_a_dead_letter_refused_for_good_is_parked_not_requeued_every_few_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _PickyDeadLetters.allowed = 0
    try:
        driver = _driver(_PickyDeadLetters)
        driver.producer("q").send(Message(b'"x"'))
        with caplog.at_level(logging.ERROR):
            loop = ConsumeLoop(
                driver, "q", _Failing(), limits=Limits(messages=1, time=10), poll_interval=0.05
            )
            loop.run()
    finally:
        _PickyDeadLetters.allowed = 6
    assert (loop.stats.dead_lettered, loop.stats.parked, loop.stats.requeued) == (0, 1, 1)
    info = driver.queue_manager().info("q")
    assert (info["messages"], info["delayed"]) == (0, 1), "parked on its queue, not lost"
    assert "refuses it for good" in caplog.text
    assert f"{PARK_AFTER:g}s" in caplog.text


def test_printable_escapes_control_characters() -> None:
    assert printable("plain text") == "plain text"
    assert printable("a\x1b[1mb\nc\x00") == "a\\x1b[1mb\\nc\\x00"


def test_ack_many_and_extend_many_settle_and_report_lost_leases() -> None:
    driver = _driver()
    driver.producer("q").send_batch([Message(f'"{i}"'.encode()) for i in range(3)])
    with driver.consumer("q") as consumer:
        got = drain(consumer, idle=0.2, ack=False)
        assert len(got) == 3
        consumer.extend_many(got, 5)
        assert all(d.lease_expires and d.lease_expires > time.monotonic() + 4 for d in got)
        consumer.ack_many(got)
        assert all(d.settled for d in got)
    assert driver.queue_manager().info("q")["in_flight"] == 0
    # A lost lease in a batch: the others are still extended, and the lost one is named.
    driver.producer("q").send_batch([Message(b'"a"'), Message(b'"b"')])
    with driver.consumer("q") as consumer, driver.consumer("q") as other:
        a, b = drain(consumer, idle=0.2, ack=False)
        time.sleep(1.1)
        consumer.extend(a, 5)
        stolen = receive_within(other, 2)
        assert stolen.message_id == b.message_id
        with pytest.raises(LeaseLostError) as caught:
            consumer.extend_many([a, b], 5)
        assert [d.message_id for d in caught.value.deliveries] == [b.message_id]
        other.ack(stolen)
        consumer.ack(a)
