"""The conformance tests every driver passes: round trips, bounded waits, ack, reject, release,
crashes, batches, settle-once rules, delivery counts, headers and competing consumers; and ordering."""

from __future__ import annotations

import threading
import time

import pytest

from kq.core._driver import Driver
from kq.core._errors import ClosedError, DeliveryStateError, UnsupportedOperationError
from kq.core._message import Message
from kq.core.testing._conformance_base import DriverTestBase, requires
from kq.core.testing._conformance_competing import CompetingConsumerTests
from kq.core.testing._conformance_headers import HeaderTests
from kq.core.testing._helpers import drain, receive_within


class BasicConformance(HeaderTests, CompetingConsumerTests, DriverTestBase):
    """What every driver must do: round trips, bounded waits, ack, reject, release, batches, headers,
    competing consumers; the exact delivery count where the driver declares one."""

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

    def test_wake_cuts_a_blocked_receive_short(self, driver: Driver, queue: str) -> None:
        """A ``wakeable`` consumer's ``receive``, blocked in one thread with a long timeout, returns
        within about a second of ``wake()`` from another thread; the consumer works on afterwards."""
        with driver.consumer(queue) as consumer:
            if not consumer.wakeable:
                pytest.skip("the consumer does not declare Consumer.wakeable")
            returned: list[float] = []

            def receive() -> None:
                if consumer.receive(30.0) is None:
                    returned.append(time.monotonic())

            thread = threading.Thread(target=receive, daemon=True)
            thread.start()
            time.sleep(1.0)  # let the receive block (a long poll on a network broker)
            woken = time.monotonic()
            consumer.wake()
            thread.join(30.0)
            assert returned, "the receive handed out a delivery from an empty queue or never returned"
            assert returned[0] - woken < 1.5, f"receive returned {returned[0] - woken:.1f}s after wake()"
            self.publish(driver, queue, Message(b"after", content_type="text/plain"))
            got = receive_within(consumer, self.receive_timeout)
            assert got.body == b"after"
            consumer.ack(got)

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

    def test_acks_among_prefetched_deliveries_hold_after_close(self, driver: Driver, queue: str) -> None:
        """Acknowledging some of what a consumer prefetched, then closing it, removes exactly those: a
        driver that holds acks back to send them together sends them before it releases the rest."""
        sent = [Message(f"prefetched {i}".encode(), content_type="text/plain") for i in range(6)]
        self.publish(driver, queue, *sent)
        with driver.consumer(queue, prefetch=len(sent)) as first:
            acked = []
            for _ in range(3):
                got = receive_within(first, self.receive_timeout)
                first.ack(got)
                acked.append(got.message_id)
        with driver.consumer(queue) as second:
            rest = drain(second, idle=self.idle_timeout * 2)
        assert sorted(d.message_id for d in rest) == sorted(
            m.message_id for m in sent if m.message_id not in acked
        ), "an acknowledged message came back, or an unacknowledged one was lost"

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

    @requires(
        lambda caps: caps.delivery_count != "flag",
        "a delivery count that counts (delivery_count 'exact' or 'receives', not 'flag')",
    )
    def test_two_crashes_give_a_third_delivery_counted_three(self, driver: Driver, queue: str) -> None:
        """Two consumers crash while holding a message; the third delivery counts at least 3, which is
        what poison protection (``max_deliveries``) relies on. ("receives" counts pass too: they count
        at least every hand-out.)"""
        self.publish(driver, queue, Message(b"crashes twice", content_type="text/plain"))
        counts = []
        for _ in range(2):
            victim = driver.consumer(queue)
            counts.append(receive_within(victim, self.redelivery_timeout).delivery_count)
            self.crash_consumer(victim)
        with driver.consumer(queue) as survivor:
            third = receive_within(survivor, self.redelivery_timeout)
            survivor.ack(third)
        counts.append(third.delivery_count)
        assert counts[0] == 1, f"delivery counts were {counts}"
        assert counts[1] >= 2, f"delivery counts were {counts}"
        assert counts[2] >= 3, f"delivery counts were {counts}"

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
        with pytest.raises(ClosedError):
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

    @requires(lambda caps: caps.retry_in_place, "retries in place (Capabilities.retry_in_place)")
    @pytest.mark.parametrize("delay", [0.0, 2.0], ids=["at-once", "delayed"])
    def test_a_retry_in_place_runs_before_later_messages(
        self, driver: Driver, queue: str, delay: float
    ) -> None:
        """A retried delivery comes back, attempt counted, before the messages published after it, even
        those the consumer had prefetched; while its delay runs, they wait."""
        sent = [
            Message(str(i).encode(), content_type="text/plain", headers={"x-n": str(i)}) for i in range(3)
        ]
        self.publish(driver, queue, *sent)
        with driver.consumer(queue, prefetch=10) as consumer:
            first = receive_within(consumer, self.receive_timeout)
            assert first.body == b"0"
            consumer.retry(first, {**first.headers, "kq-attempt": "2"}, delay=delay)
            assert first.settled
            if delay:
                early = consumer.receive(delay / 2)
                assert early is None, f"{early!r} ran while the retried message was waiting for its delay"
            again = receive_within(consumer, self.receive_timeout + delay)
            assert (again.message_id, again.body) == (sent[0].message_id, b"0")
            assert again.headers["kq-attempt"] == "2"
            assert again.headers["x-n"] == "0"
            consumer.ack(again)
            # (A driver may hold prefetched messages back a little longer, until the retried one is
            # surely back in the broker's queue: each may take up to receive_timeout.)
            rest = [receive_within(consumer, self.receive_timeout) for _ in range(2)]
            for delivery in rest:
                consumer.ack(delivery)
            assert consumer.receive(self.idle_timeout) is None
        assert [d.body for d in rest] == [b"1", b"2"]
