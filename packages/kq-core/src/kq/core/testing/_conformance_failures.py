"""Failure-handling conformance: retries with measured backoff, dead letters after the last attempt,
poison messages after crashes."""

from __future__ import annotations

from typing import ClassVar

import pytest

from kq.core._limits import Limits
from kq.core._loop import ConsumeLoop
from kq.core._message import DEAD_LETTER_REASON, Message
from kq.core._retry import RetryPolicy
from kq.core.testing._conformance_base import DriverTestBase, requires
from kq.core.testing._handlers import Failing, FailingTwice
from kq.core.testing._helpers import receive_within


class FailureHandlingConformance(DriverTestBase):
    """Retries with backoff (where the driver delays messages), dead letters, and poison messages
    (where the delivery count is not a count of receives)."""

    #: First retry delay used by the test, in seconds (the second is twice as long).
    retry_delay: ClassVar[float] = 1.0

    def test_a_handler_failing_twice_is_retried_with_backoff_and_consumed_once(self, queue: str) -> None:
        """max_attempts 3, delay d then 2d: three executions spaced by the delays, then an ack."""
        policy = RetryPolicy(max_attempts=3, delay=self.retry_delay, multiplier=2, jitter=0)
        with self.driver_with(queue, retry=policy) as driver:
            problem = driver.capabilities_for(queue).delay_problem(self.retry_delay * 2, requeue=False)
            if problem:
                pytest.skip(f"measured backoff needs delayed retries: driver {driver.name!r} {problem}")
            self.publish(driver, queue, Message(b'"job"', routing_key="retry.me"))
            handler = FailingTwice()
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

    def test_a_message_that_always_fails_is_dead_lettered_after_its_attempts(self, queue: str) -> None:
        """After max_attempts executions the message goes to the dead-letter queue, with the reason."""
        with self.driver_with(queue, retry=RetryPolicy(max_attempts=2, delay=0.2, jitter=0)) as driver:
            self.publish(driver, queue, Message(b'"doomed"'))
            loop = ConsumeLoop(
                driver,
                queue,
                Failing(),
                limits=Limits(messages=2, time=self.receive_timeout * 3),
                poll_interval=0.2,
            )
            loop.run()
            assert (loop.stats.failed, loop.stats.retried, loop.stats.dead_lettered) == (2, 1, 1)
            with driver.consumer(driver.queue(queue).dead_letter_queue) as consumer:
                dead = receive_within(consumer, self.receive_timeout)
                consumer.ack(dead)
            assert dead.headers[DEAD_LETTER_REASON] == "failed"
            assert dead.headers["kq-attempt"] == "2"

    @requires(
        lambda caps: caps.delivery_count != "receives",
        "poison protection (a delivery count that is 'exact' or a 'flag'; the loop does not apply "
        "max_deliveries to a count of receives)",
    )
    def test_a_message_redelivered_past_the_limit_is_dead_lettered_as_poison(self, queue: str) -> None:
        """A message whose workers keep dying is kept aside instead of killing the next one."""
        with self.driver_with(queue, max_deliveries=1) as driver:
            self.publish(driver, queue, Message(b'"poison"'))
            victim = driver.consumer(queue)
            receive_within(victim, self.receive_timeout)
            self.crash_consumer(victim)  # the first worker died while handling it
            handler = FailingTwice()
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
            with driver.consumer(driver.queue(queue).dead_letter_queue) as consumer:
                dead = receive_within(consumer, self.receive_timeout)
                consumer.ack(dead)
            assert dead.headers[DEAD_LETTER_REASON] == "poison"
