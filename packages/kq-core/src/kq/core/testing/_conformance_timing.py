"""Timing conformance: per-message TTL and delays (of published messages and of requeues)."""

from __future__ import annotations

import time
from typing import ClassVar

import pytest

from kq.core._driver import Driver
from kq.core._message import Message
from kq.core.testing._conformance_base import DriverTestBase, requires_for_class
from kq.core.testing._helpers import drain, receive_within


@requires_for_class(lambda caps: caps.message_ttl, "message_ttl=True")
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


@requires_for_class(lambda caps: caps.delayed_delivery, "delayed_delivery=True")
class DelayConformance(DriverTestBase):
    """Delayed messages and delayed requeues."""

    #: Delay used by the tests, in seconds.
    delay: ClassVar[float] = 2.0

    def skip_unless_delay(self, driver: Driver, queue: str, *, requeue: bool) -> None:
        """Skip when the queue cannot delay by :attr:`delay` (``max_publish_delay``/``max_requeue_delay``)."""
        problem = driver.capabilities_for(queue).delay_problem(self.delay, requeue=requeue)
        if problem:
            pytest.skip(f"driver type {self.driver_spec().type!r} {problem} on this queue")

    def test_delayed_message_waits(self, driver: Driver, queue: str) -> None:
        """A delayed message is invisible for its delay, then delivered."""
        self.skip_unless_delay(driver, queue, requeue=False)
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
        self.skip_unless_delay(driver, queue, requeue=True)
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
