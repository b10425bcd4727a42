"""The driver conformance suite: pytest classes that every driver's tests subclass.

A driver's test module combines the classes for the capabilities it has and tells the suite how to build
the driver::

    from kq.core import DriverSpec
    from kq.core.testing import BasicConformance, RoutingConformance


    class TestMyDriver(BasicConformance, RoutingConformance):
        def driver_spec(self) -> DriverSpec:
            return DriverSpec(name="test", type="mydriver", options={"url": "..."})

        def crash_consumer(self, consumer) -> None:
            consumer._connection.close()   # whatever drops it without a clean close

The driver is built through the ``kq.drivers`` entry point, so the suite also checks the registration.
Every test uses fresh queues (deleted afterwards) and settles what it receives. Timing knobs are class
attributes a slow broker may raise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest

from kq.core._consumers import MessageConsumer, NoopConsumer
from kq.core._driver import Consumer, Driver
from kq.core._errors import ConsumerClosedError, DeliveryStateError, UnsupportedOperationError
from kq.core._loop import ConsumeLoop, Limits
from kq.core._message import (
    DEAD_LETTER_ERROR,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_REASON,
    JSON,
    Delivery,
    Message,
)
from kq.core._registry import load_driver_class
from kq.core._retry import RetryPolicy
from kq.core._signing import SignatureError, Signer, Verifier, new_key
from kq.core._spec import DriverSpec, QueueSpec
from kq.core.testing._helpers import drain, receive_within, unique_queue_name, wait_for


class DriverTestBase:
    """Fixtures shared by the conformance classes; override :meth:`driver_spec` (required)."""

    #: Longest wait for a message that must arrive.
    receive_timeout: ClassVar[float] = 10.0
    #: How long nothing must arrive before a queue counts as empty.
    idle_timeout: ClassVar[float] = 1.0
    #: Longest wait for the message of a crashed consumer to come back.
    redelivery_timeout: ClassVar[float] = 20.0
    #: How long queue counters may lag behind (brokers report some statistics late).
    stats_timeout: ClassVar[float] = 10.0

    def driver_spec(self) -> DriverSpec:
        """The driver under test: its type (entry-point name) and options. Subclasses must override it."""
        raise NotImplementedError(
            f"{type(self).__name__} must override driver_spec() to return the DriverSpec of the driver "
            "under test, e.g. DriverSpec(name='test', type='sqlite', options={'path': ...})"
        )

    def queue_options(self) -> dict[str, Any]:
        """Broker-specific options given to every test queue (``[queues.<name>]`` keys)."""
        return {}

    def make_queue(self, name: str, *, routing_keys: Sequence[str] = (), **settings: Any) -> QueueSpec:
        """The settings of a test queue (``settings``: other QueueSpec fields, such as ``retry``)."""
        spec = self.driver_spec()
        return QueueSpec(
            name=name,
            driver=spec.name,
            routing_keys=tuple(routing_keys),
            options=self.queue_options(),
            **settings,
        )

    def build_driver(self, queues: Sequence[QueueSpec]) -> Driver:
        """Build the driver through its entry point, with ``queues`` configured."""
        spec = self.driver_spec()
        return load_driver_class(spec.type)(spec, queues)

    def crash_consumer(self, consumer: Consumer) -> None:
        """Make ``consumer`` vanish without settling or releasing anything, as a killed process would."""
        raise NotImplementedError(
            f"{type(self).__name__} must override crash_consumer() to drop a consumer the way a crash does "
            "(close its connection without releasing deliveries)"
        )

    def inject_malformed(self, driver: Driver, queue: str) -> int:
        """Put into ``queue`` what the broker accepts but kq's producers never send; return how many.

        Override it with your broker's plain client: headers of types kq does not use, missing or odd
        properties, rows or attributes written by another tool. The consume loop must dead-letter each
        of them (or consume it, if it is readable after all) and go on. The default puts nothing: say in
        your tests why, when your broker stores only what kq's producers can send.
        """
        return 0

    def cleanup(self, driver: Driver, queues: Sequence[str]) -> None:
        """Delete the test queues (best effort)."""
        manager = driver.queue_manager()
        for name in queues:
            # Best effort: a queue that was never created may not be deletable.
            with contextlib.suppress(Exception):
                manager.delete(name)

    @pytest.fixture
    def queue(self) -> str:
        """A fresh logical queue name."""
        return unique_queue_name()

    @pytest.fixture
    def driver(self, queue: str) -> Iterator[Driver]:
        """The driver under test with ``queue`` configured; its queues are deleted afterwards."""
        spec = self.make_queue(queue)
        driver = self.build_driver([spec])
        try:
            yield driver
        finally:
            self.cleanup(driver, [queue, spec.failed_queue])
            driver.close()

    def publish(self, driver: Driver, queue: str, *messages: Message) -> None:
        """Publish ``messages`` as one batch."""
        driver.producer(queue).publish_batch(messages)


class BasicConformance(DriverTestBase):
    """What every driver must do: round trips, bounded waits, ack, reject, release, batches."""

    @pytest.mark.parametrize(
        ("body", "content_type"),
        [
            (b'{"hello": "world"}', "application/json"),
            ("héllo wörld ✓".encode(), "text/plain; charset=utf-8"),
            (bytes(range(256)) * 4, "application/octet-stream"),
            (b"\x00\xff\x00", "application/octet-stream"),
            (b"", "application/octet-stream"),
        ],
        ids=["json", "text", "binary", "nul-bytes", "empty"],
    )
    def test_round_trip(self, driver: Driver, queue: str, body: bytes, content_type: str) -> None:
        """Body, content type, headers, routing key and message id survive the trip unchanged."""
        headers = {"x-custom": "ünïcode ✓", "kq-attempt": "1", "trace.id": "abc-123"}
        sent = Message(body=body, content_type=content_type, headers=headers, routing_key="hello.world")
        consumer = driver.consumer(queue)
        try:
            self.publish(driver, queue, sent)
            got = receive_within(consumer, self.receive_timeout)
            assert got.body == body
            assert got.content_type == content_type
            assert {k: got.headers.get(k) for k in headers} == headers
            assert got.routing_key == "hello.world"
            assert got.message_id == sent.message_id
            assert got.queue == queue
            assert got.delivery_count == 1
            assert not got.redelivered
            consumer.ack(got)
        finally:
            consumer.close()

    def test_publish_before_any_consumer(self, driver: Driver, queue: str) -> None:
        """Messages published before a consumer ever existed are kept and delivered."""
        self.publish(driver, queue, Message(b"early", content_type="text/plain"))
        with driver.consumer(queue) as consumer:
            got = receive_within(consumer, self.receive_timeout)
            assert got.body == b"early"
            consumer.ack(got)

    def test_receive_on_empty_queue_returns_none_in_bounded_time(self, driver: Driver, queue: str) -> None:
        """An empty queue makes ``receive`` return ``None`` after about the timeout, not hang."""
        with driver.consumer(queue) as consumer:
            started = time.monotonic()
            assert consumer.receive(self.idle_timeout) is None
            assert time.monotonic() - started < self.idle_timeout + 5.0

    def test_ack_removes_the_message(self, driver: Driver, queue: str) -> None:
        """An acknowledged message is never delivered again, even to a new consumer."""
        self.publish(driver, queue, Message(b"once", content_type="text/plain"))
        with driver.consumer(queue) as consumer:
            consumer.ack(receive_within(consumer, self.receive_timeout))
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None

    def test_reject_with_requeue_redelivers_with_higher_count(self, driver: Driver, queue: str) -> None:
        """A requeued message comes back, same id, with its delivery count increased."""
        sent = Message(b"again", content_type="text/plain")
        self.publish(driver, queue, sent)
        with driver.consumer(queue) as consumer:
            first = receive_within(consumer, self.receive_timeout)
            assert first.delivery_count == 1
            consumer.reject(first, requeue=True)
            second = receive_within(consumer, self.receive_timeout)
            assert second.message_id == sent.message_id
            assert second.body == b"again"
            assert second.delivery_count >= 2
            assert second.redelivered
            consumer.ack(second)

    def test_reject_without_requeue_drops(self, driver: Driver, queue: str) -> None:
        """A message rejected without requeue is not delivered again on that queue."""
        self.publish(driver, queue, Message(b"drop me", content_type="text/plain"))
        with driver.consumer(queue) as consumer:
            consumer.reject(receive_within(consumer, self.receive_timeout), requeue=False)
            assert consumer.receive(self.idle_timeout) is None

    def test_retry_puts_a_copy_back_on_this_queue(self, driver: Driver, queue: str) -> None:
        """``retry`` queues a copy with new headers (same id, body, routing key) and settles the original."""
        sent = Message(b"again", content_type="text/plain", routing_key="hello.world", headers={"x-a": "1"})
        self.publish(driver, queue, sent)
        with driver.consumer(queue) as consumer:
            first = receive_within(consumer, self.receive_timeout)
            consumer.retry(first, {**first.headers, "kq-attempt": "2"})
            with pytest.raises(DeliveryStateError):
                consumer.ack(first)
            second = receive_within(consumer, self.receive_timeout)
            assert (second.message_id, second.body, second.routing_key) == (
                sent.message_id,
                b"again",
                "hello.world",
            )
            assert second.headers["kq-attempt"] == "2"
            assert second.headers["x-a"] == "1"
            consumer.ack(second)
            assert consumer.receive(self.idle_timeout) is None

    def test_close_releases_unacknowledged(self, driver: Driver, queue: str) -> None:
        """Closing a consumer gives its unsettled deliveries back at once, to the next consumer."""
        self.publish(driver, queue, Message(b"released", content_type="text/plain"))
        first = driver.consumer(queue)
        got = receive_within(first, self.receive_timeout)
        first.close()
        with driver.consumer(queue) as second:
            again = receive_within(second, self.receive_timeout)
            assert again.message_id == got.message_id
            assert again.delivery_count >= 2
            second.ack(again)

    def test_crashed_consumer_loses_nothing(self, driver: Driver, queue: str) -> None:
        """The unacknowledged message of a consumer that vanished is delivered again."""
        self.publish(driver, queue, Message(b"survivor", content_type="text/plain"))
        victim = driver.consumer(queue)
        got = receive_within(victim, self.receive_timeout)
        self.crash_consumer(victim)
        with driver.consumer(queue) as survivor:
            again = receive_within(survivor, self.redelivery_timeout)
            assert again.message_id == got.message_id
            assert again.body == b"survivor"
            assert again.delivery_count >= 2
            survivor.ack(again)

    def test_batch_publish(self, driver: Driver, queue: str) -> None:
        """A batch of messages arrives whole."""
        sent = [Message(f"message {i}".encode(), content_type="text/plain") for i in range(25)]
        self.publish(driver, queue, *sent)
        with driver.consumer(queue) as consumer:
            got = drain(consumer, idle=self.idle_timeout * 2)
        assert sorted(d.message_id for d in got) == sorted(m.message_id for m in sent)

    def test_settling_twice_is_an_error(self, driver: Driver, queue: str) -> None:
        """A delivery is settled once, by the consumer that received it."""
        self.publish(driver, queue, Message(b"x", content_type="text/plain"))
        with driver.consumer(queue) as consumer, driver.consumer(queue) as other:
            got = receive_within(consumer, self.receive_timeout)
            with pytest.raises(DeliveryStateError):
                other.ack(got)
            consumer.ack(got)
            with pytest.raises(DeliveryStateError):
                consumer.ack(got)
            with pytest.raises(DeliveryStateError):
                consumer.reject(got)

    def test_closed_consumer_refuses_to_receive(self, driver: Driver, queue: str) -> None:
        """Using a closed consumer raises instead of silently doing nothing."""
        consumer = driver.consumer(queue)
        consumer.close()
        with pytest.raises(ConsumerClosedError):
            consumer.receive(0.1)

    def test_unknown_queue_action_is_refused(self, driver: Driver) -> None:
        """The queue manager names the actions it has when asked for another one."""
        with pytest.raises(UnsupportedOperationError, match="available"):
            driver.queue_manager().execute("no-such-action")


class OrderingConformance(DriverTestBase):
    """For drivers that deliver one queue's messages in publication order to a single consumer."""

    def test_order_is_kept(self, driver: Driver, queue: str) -> None:
        """Messages published in order are received in that order."""
        sent = [Message(str(i).encode(), content_type="text/plain") for i in range(20)]
        self.publish(driver, queue, *sent[:10])
        for message in sent[10:]:
            self.publish(driver, queue, message)
        with driver.consumer(queue) as consumer:
            got = drain(consumer, idle=self.idle_timeout)
        assert [d.body for d in got] == [m.body for m in sent]


#: (binding pattern, routing keys of the messages it must receive) for the keys
#: hello.world, bonjour.monde, hello, a.b.world and hello.big.world.
ROUTING_CASES = [
    ("hello.world", {"hello.world"}),
    ("bonjour.monde", {"bonjour.monde"}),
    ("hello.*", {"hello.world"}),
    ("*.world", {"hello.world"}),
    ("hello.#", {"hello.world", "hello", "hello.big.world"}),
    ("#.world", {"hello.world", "a.b.world", "hello.big.world"}),
    ("#", {"hello.world", "bonjour.monde", "hello", "a.b.world", "hello.big.world"}),
]
ROUTING_KEYS = ["hello.world", "bonjour.monde", "hello", "a.b.world", "hello.big.world"]


class RoutingConformance(DriverTestBase):
    """AMQP topic routing by the queue's configured binding keys, natively or emulated."""

    @pytest.mark.parametrize(("pattern", "expected"), ROUTING_CASES, ids=[c[0] for c in ROUTING_CASES])
    def test_configured_binding_selects_messages(self, queue: str, pattern: str, expected: set[str]) -> None:
        """A consumer of a queue bound to ``pattern`` gets exactly the matching messages."""
        spec = self.make_queue(queue, routing_keys=[pattern])
        driver = self.build_driver([spec])
        try:
            with driver.consumer(queue) as consumer:
                self.publish(
                    driver,
                    queue,
                    *(Message(k.encode(), content_type="text/plain", routing_key=k) for k in ROUTING_KEYS),
                )
                got = drain(consumer, idle=self.idle_timeout * 2)
            assert sorted(d.routing_key for d in got) == sorted(expected)
        finally:
            self.cleanup(driver, [queue, spec.failed_queue])
            driver.close()

    def test_consumer_binding_overrides_configuration(self, driver: Driver, queue: str) -> None:
        """``kq consume -r`` narrows what a consumer takes (the queue is configured for every key)."""
        with driver.consumer(queue, routing_key="*.world") as consumer:
            self.publish(
                driver,
                queue,
                *(Message(k.encode(), content_type="text/plain", routing_key=k) for k in ROUTING_KEYS),
            )
            got = drain(consumer, idle=self.idle_timeout * 2)
        assert sorted(d.routing_key for d in got) == ["hello.world"]


class TTLConformance(DriverTestBase):
    """Per-message time-to-live."""

    #: TTL given to the expiring message, in seconds.
    ttl: ClassVar[float] = 1.0

    def test_expired_message_is_not_delivered(self, driver: Driver, queue: str) -> None:
        """A message past its TTL is never delivered; one without TTL still is."""
        expiring = Message(b"expiring", content_type="text/plain", ttl=self.ttl)
        lasting = Message(b"lasting", content_type="text/plain")
        self.publish(driver, queue, expiring, lasting)
        time.sleep(self.ttl + 1.5)
        with driver.consumer(queue) as consumer:
            got = drain(consumer, idle=self.idle_timeout)
        assert [d.body for d in got] == [b"lasting"]

    def test_unexpired_message_is_delivered(self, driver: Driver, queue: str) -> None:
        """A TTL long enough does not prevent delivery."""
        self.publish(driver, queue, Message(b"fresh", content_type="text/plain", ttl=60))
        with driver.consumer(queue) as consumer:
            got = receive_within(consumer, self.receive_timeout)
            assert got.body == b"fresh"
            consumer.ack(got)


class DelayConformance(DriverTestBase):
    """Delayed messages and delayed requeues."""

    #: Delay used by the tests, in seconds.
    delay: ClassVar[float] = 2.0

    def test_delayed_message_waits(self, driver: Driver, queue: str) -> None:
        """A delayed message is invisible for its delay, then delivered."""
        started = time.monotonic()
        self.publish(driver, queue, Message(b"later", content_type="text/plain", delay=self.delay))
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.delay / 4) is None
            got = receive_within(consumer, self.receive_timeout + self.delay)
            assert time.monotonic() - started >= self.delay * 0.8
            assert got.body == b"later"
            consumer.ack(got)

    def test_delayed_requeue(self, driver: Driver, queue: str) -> None:
        """A message requeued with a delay comes back only after it."""
        self.publish(driver, queue, Message(b"retry", content_type="text/plain"))
        with driver.consumer(queue) as consumer:
            first = receive_within(consumer, self.receive_timeout)
            rejected_at = time.monotonic()
            consumer.reject(first, requeue=True, delay=self.delay)
            assert consumer.receive(self.delay / 4) is None
            again = receive_within(consumer, self.receive_timeout + self.delay)
            assert time.monotonic() - rejected_at >= self.delay * 0.8
            assert again.message_id == first.message_id
            assert again.delivery_count >= 2
            consumer.ack(again)


class LeaseConformance(DriverTestBase):
    """Drivers with visibility timeouts: an extended delivery stays reserved, an expired one comes back.

    Configure the driver with a short visibility timeout (a second or two) for these tests.
    """

    def test_extended_delivery_stays_reserved(self, driver: Driver, queue: str) -> None:
        """While the holder extends its lease, no other consumer receives the message."""
        self.publish(driver, queue, Message(b"long job", content_type="text/plain"))
        with driver.consumer(queue) as holder, driver.consumer(queue) as other:
            lease = holder.lease_duration
            assert lease is not None, "a driver with lease_extension must set Consumer.lease_duration"
            got = receive_within(holder, self.receive_timeout)
            deadline = time.monotonic() + lease * 2.5
            while time.monotonic() < deadline:
                holder.extend(got, lease)
                assert other.receive(lease / 3) is None
            holder.ack(got)

    def test_expired_lease_redelivers(self, driver: Driver, queue: str) -> None:
        """A delivery neither settled nor extended goes to another consumer once its lease expires."""
        self.publish(driver, queue, Message(b"slow", content_type="text/plain"))
        with driver.consumer(queue) as holder, driver.consumer(queue) as other:
            lease = holder.lease_duration
            assert lease is not None
            got = receive_within(holder, self.receive_timeout)
            again = receive_within(other, lease + self.receive_timeout)
            assert again.message_id == got.message_id
            assert again.delivery_count == got.delivery_count + 1
            other.ack(again)


class QueueManagerConformance(DriverTestBase):
    """``kq managequeue``: list-configured, list-available, info, purge, delete."""

    def _messages(self, driver: Driver, queue: str) -> int:
        info = driver.queue_manager().info(queue)
        assert "messages" in info, "info() must report 'messages'"
        return int(info["messages"])

    def test_info_counts_waiting_messages(self, driver: Driver, queue: str) -> None:
        """``info`` reports the number of waiting messages."""
        self.publish(driver, queue, *(Message(b"m", content_type="text/plain") for _ in range(3)))
        wait_for(
            lambda: self._messages(driver, queue) == 3,
            timeout=self.stats_timeout,
            message="info() reports 3 messages",
        )

    def test_purge_empties_the_queue(self, driver: Driver, queue: str) -> None:
        """``purge`` deletes waiting messages, and reports how many where the broker says."""
        self.publish(driver, queue, *(Message(b"m", content_type="text/plain") for _ in range(4)))
        wait_for(
            lambda: self._messages(driver, queue) == 4,
            timeout=self.stats_timeout,
            message="info() reports 4 messages",
        )
        purged = driver.queue_manager().purge(queue)
        assert purged in (4, None)
        wait_for(
            lambda: self._messages(driver, queue) == 0,
            timeout=self.stats_timeout,
            message="info() reports 0 messages after purge",
        )
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None

    def test_list_available_and_delete(self, driver: Driver, queue: str) -> None:
        """A used queue is listed; once deleted it is not."""
        self.publish(driver, queue, Message(b"m", content_type="text/plain"))
        manager = driver.queue_manager()
        wait_for(
            lambda: queue in manager.list_available(),
            timeout=self.stats_timeout,
            message=f"list_available() contains {queue}",
        )
        manager.delete(queue)
        wait_for(
            lambda: queue not in manager.list_available(),
            timeout=self.stats_timeout,
            message=f"list_available() no longer contains {queue}",
        )

    def test_list_configured(self, driver: Driver, queue: str) -> None:
        """The configured test queue is listed with its driver."""
        listed = {item["queue"]: item for item in driver.queue_manager().list_configured()}
        assert listed[queue]["driver"] == driver.name

    def test_execute_dispatches_by_name(self, driver: Driver, queue: str) -> None:
        """``execute`` runs an action by its CLI name and needs a queue where the action does."""
        manager = driver.queue_manager()
        self.publish(driver, queue, Message(b"m", content_type="text/plain"))
        wait_for(
            lambda: manager.execute("info", queue)["messages"] == 1,
            timeout=self.stats_timeout,
            message="execute('info') reports 1 message",
        )
        with pytest.raises(UnsupportedOperationError, match="needs a queue"):
            manager.execute("purge")


class _Failing(MessageConsumer):
    accepted_content_types = None
    kind = "failing"

    def consume(self, body: Any, delivery: Delivery) -> Any:
        raise RuntimeError(f"cannot handle {body!r}")


class ConsumeLoopConformance(DriverTestBase):
    """The core's consume loop on this driver: acknowledge after success, dead-letter failures."""

    def test_loop_consumes_and_acknowledges(self, driver: Driver, queue: str) -> None:
        """The loop handles each message once and leaves the queue empty."""
        self.publish(driver, queue, *(Message(f"{i}".encode(), content_type="text/plain") for i in range(5)))
        loop = ConsumeLoop(
            driver,
            queue,
            NoopConsumer(),
            limits=Limits(messages=5, time=self.receive_timeout * 3),
            poll_interval=0.5,
        )
        reason = loop.run()
        assert loop.stats.consumed == 5, reason
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None

    def test_failed_message_goes_to_dead_letter_queue_with_reason(self, driver: Driver, queue: str) -> None:
        """A handler failure moves the message to ``<queue>.failed`` with the reason; nothing is lost."""
        sent = Message(
            b"poison", content_type="text/plain", routing_key="bad.news", headers={"x-origin": "test"}
        )
        self.publish(driver, queue, sent)
        loop = ConsumeLoop(
            driver,
            queue,
            _Failing(),
            limits=Limits(messages=1, time=self.receive_timeout * 3),
            poll_interval=0.5,
        )
        loop.run()
        assert loop.stats.failed == 1
        failed_queue = driver.queue(queue).failed_queue
        with driver.consumer(failed_queue) as consumer:
            got = receive_within(consumer, self.receive_timeout)
            consumer.ack(got)
        assert got.message_id == sent.message_id
        assert got.body == b"poison"
        assert got.routing_key == "bad.news"
        assert got.headers["x-origin"] == "test"
        assert got.headers[DEAD_LETTER_REASON] == "failed"
        assert got.headers[DEAD_LETTER_QUEUE] == queue
        assert "cannot handle" in got.headers[DEAD_LETTER_ERROR]
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None

    def test_nothing_a_broker_hands_over_crashes_the_loop(self, driver: Driver, queue: str) -> None:
        """Hostile bodies and whatever :meth:`inject_malformed` puts in are dead-lettered, the loop goes on,
        and a good message behind them is consumed: nothing is lost, nothing stops the worker."""
        hostile = [
            Message(b"\xff\xfe not UTF-8 \x00", content_type=JSON),
            Message(b"", content_type=JSON),
            Message(b"[" * 50_000 + b"]" * 50_000, content_type=JSON),  # deeper than json can parse
            Message(b"{}", content_type="application/x-unknown-to-kq"),
            Message(b"\x00" * 1000, content_type="application/json; charset=utf-16"),
        ]
        self.publish(driver, queue, *hostile)
        injected = self.inject_malformed(driver, queue)
        good = Message(b'"behind them"', content_type=JSON)
        self.publish(driver, queue, good)
        total = len(hostile) + injected + 1
        handler = _Recording()
        loop = ConsumeLoop(
            driver,
            queue,
            handler,
            limits=Limits(messages=total, time=self.receive_timeout * 3),
            poll_interval=0.5,
        )
        reason = loop.run()  # must return, not raise
        assert loop.stats.received == total, reason
        assert good.message_id in handler.ids, "the good message behind the hostile ones was not consumed"
        failed_queue = driver.queue(queue).failed_queue
        with driver.consumer(failed_queue) as consumer:
            dead = drain(consumer, idle=self.idle_timeout * 2)
        reasons = {d.message_id: d.headers.get(DEAD_LETTER_REASON) for d in dead}
        for message in hostile:
            assert reasons.get(message.message_id) == "undecodable", (message, reasons)
        assert len(dead) + loop.stats.consumed == total, "a message was lost or handled twice"
        assert all(reasons.values()), f"a dead letter has no reason: {reasons}"
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None


class _Recording(MessageConsumer):
    """Accepts JSON only and records the ids of what it consumed."""

    accepted_content_types = frozenset({JSON})
    kind = "recording"

    def __init__(self) -> None:
        self.ids: list[str] = []

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.ids.append(delivery.message_id)
        return body


class _FailingTwice(MessageConsumer):
    """Fails the first two executions of each message, then succeeds; records when each one ran."""

    accepted_content_types = None
    kind = "failing-twice"

    def __init__(self) -> None:
        self.runs: list[tuple[str, float]] = []

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.runs.append((delivery.message_id, time.monotonic()))
        if sum(1 for message_id, _ in self.runs if message_id == delivery.message_id) <= 2:
            raise RuntimeError("not yet")
        return body


class FailureHandlingConformance(DriverTestBase):
    """Retries with backoff, poison messages, dead letters, on this driver (needs delayed delivery)."""

    #: First retry delay used by the test, in seconds (the second is twice as long).
    retry_delay: ClassVar[float] = 1.0

    def _driver_with(self, queue: str, **settings: Any) -> tuple[Driver, QueueSpec]:
        spec = self.make_queue(queue, **settings)
        return self.build_driver([spec]), spec

    def test_a_handler_failing_twice_is_retried_with_backoff_and_consumed_once(self, queue: str) -> None:
        """max_attempts 3, delay d then 2d: three executions spaced by the delays, then an ack."""
        policy = RetryPolicy(max_attempts=3, delay=self.retry_delay, multiplier=2, jitter=0)
        driver, spec = self._driver_with(queue, retry=policy)
        try:
            self.publish(driver, queue, Message(b'"job"', routing_key="retry.me"))
            handler = _FailingTwice()
            loop = ConsumeLoop(
                driver,
                queue,
                handler,
                limits=Limits(messages=3, time=self.receive_timeout * 4),
                poll_interval=0.2,
            )
            loop.run()
            assert (loop.stats.consumed, loop.stats.failed, loop.stats.retried) == (1, 2, 2)
            times = [at for _, at in handler.runs]
            first, second = times[1] - times[0], times[2] - times[1]
            assert first >= self.retry_delay * 0.9, f"first retry after {first:.2f}s"
            assert second >= self.retry_delay * 2 * 0.9, f"second retry after {second:.2f}s"
            assert second < self.retry_delay * 2 + self.receive_timeout
            with driver.consumer(queue) as consumer:
                assert consumer.receive(self.idle_timeout) is None
        finally:
            self.cleanup(driver, [queue, spec.failed_queue])
            driver.close()

    def test_a_message_that_always_fails_is_dead_lettered_after_its_attempts(self, queue: str) -> None:
        """After max_attempts executions the message goes to the dead-letter queue, with the reason."""
        driver, spec = self._driver_with(queue, retry=RetryPolicy(max_attempts=2, delay=0.2, jitter=0))
        try:
            self.publish(driver, queue, Message(b'"doomed"'))
            loop = ConsumeLoop(
                driver,
                queue,
                _Failing(),
                limits=Limits(messages=2, time=self.receive_timeout * 3),
                poll_interval=0.2,
            )
            loop.run()
            assert (loop.stats.failed, loop.stats.retried, loop.stats.dead_lettered) == (2, 1, 1)
            with driver.consumer(spec.failed_queue) as consumer:
                dead = receive_within(consumer, self.receive_timeout)
                consumer.ack(dead)
            assert dead.headers[DEAD_LETTER_REASON] == "failed"
            assert dead.headers["kq-attempt"] == "2"
        finally:
            self.cleanup(driver, [queue, spec.failed_queue])
            driver.close()

    def test_a_message_redelivered_past_the_limit_is_dead_lettered_as_poison(self, queue: str) -> None:
        """A message whose workers keep dying is kept aside instead of killing the next one."""
        driver, spec = self._driver_with(queue, max_deliveries=1)
        try:
            self.publish(driver, queue, Message(b'"poison"'))
            victim = driver.consumer(queue)
            receive_within(victim, self.receive_timeout)
            self.crash_consumer(victim)  # the first worker died while handling it
            handler = _FailingTwice()
            loop = ConsumeLoop(
                driver,
                queue,
                handler,
                limits=Limits(messages=1, time=self.redelivery_timeout * 2),
                poll_interval=0.2,
            )
            loop.run()
            assert handler.runs == [], "a poison message must not be handled again"
            assert loop.stats.dead_lettered == 1
            with driver.consumer(spec.failed_queue) as consumer:
                dead = receive_within(consumer, self.receive_timeout)
                consumer.ack(dead)
            assert dead.headers[DEAD_LETTER_REASON] == "poison"
        finally:
            self.cleanup(driver, [queue, spec.failed_queue])
            driver.close()


class SigningConformance(DriverTestBase):
    """Signed messages survive the trip: the driver keeps body, headers, routing key and content type
    exactly, so that a signature made by the producer is still valid at the consumer."""

    def test_a_signed_message_still_verifies_after_the_trip(self, driver: Driver, queue: str) -> None:
        key = new_key().encode()
        message = Message(
            "héllo ✓ signed".encode(),
            content_type="text/plain; charset=utf-8",
            routing_key="signed.trip",
            headers={"x-user": "ops ✓", "x-empty": ""},
        )
        signed = Signer("k1", key).sign(message, queue)
        self.publish(driver, queue, signed)
        with driver.consumer(queue) as consumer:
            got = receive_within(consumer, self.receive_timeout)
            consumer.ack(got)
        Verifier({"k1": key}, max_age=600).verify(got, [queue])  # raises SignatureError if altered

    def test_a_retried_copy_verifies_where_it_comes_back(self, queue: str) -> None:
        """A worker's retried copy (through the driver's retry, and its delay where it has one) is signed
        again and accepted by the same worker: nothing the driver or the broker adds on the way, such as
        RabbitMQ's x-death headers, may break it."""
        key = new_key().encode()
        spec = self.make_queue(queue, retry=RetryPolicy(max_attempts=3, delay=0.2, jitter=0))
        driver = self.build_driver([spec])
        try:
            self.publish(driver, queue, Signer("k1", key).sign(Message(b'"signed"'), queue))
            loop = ConsumeLoop(
                driver,
                queue,
                _FailingTwice(),
                limits=Limits(messages=3, time=self.receive_timeout * 3),
                poll_interval=0.2,
                verifier=Verifier({"k1": key}, max_age=600),
                signer=Signer("k1", key),
            )
            loop.run()
            stats = loop.stats
            assert (stats.consumed, stats.failed, stats.retried, stats.dead_lettered) == (1, 2, 2, 0)
        finally:
            self.cleanup(driver, [queue, spec.failed_queue])
            driver.close()

    def test_a_tampered_message_does_not_verify(self, driver: Driver, queue: str) -> None:
        key = new_key().encode()
        signed = Signer("k1", key).sign(Message(b"original", content_type="text/plain"), queue)
        self.publish(driver, queue, dataclasses.replace(signed, body=b"tampered"))
        with driver.consumer(queue) as consumer:
            got = receive_within(consumer, self.receive_timeout)
            consumer.ack(got)
        with pytest.raises(SignatureError, match="does not match"):
            Verifier({"k1": key}, max_age=600).verify(got, [queue])
