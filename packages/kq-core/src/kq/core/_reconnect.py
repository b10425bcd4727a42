"""The consume loop's connection: its consumer, which errors mean the connection is lost, and how long
to wait before building a new consumer."""

from __future__ import annotations

import logging
from collections.abc import Callable

from kq.core._driver import Driver
from kq.core._driver_consumer import Consumer
from kq.core._errors import BrokerUnavailableError
from kq.core._message import Delivery

logger = logging.getLogger(__name__.replace("._", "."))


def connection_errors(driver: Driver) -> tuple[type[BaseException], ...]:
    """The errors after which the loop rebuilds its consumer: the driver's declared
    ``connection_errors``, and :class:`~kq.core.BrokerUnavailableError` whatever the driver declares."""
    return (*driver.connection_errors, BrokerUnavailableError)


class Backoff:
    """Exponential backoff between reconnection attempts: 0.5 s, 1 s, 2 s, ... capped at ``maximum``."""

    def __init__(self, maximum: float) -> None:
        self.maximum = maximum
        self.attempt = 0

    def next(self) -> float:
        """The wait before the next attempt (each one twice the last, up to the maximum)."""
        wait: float = min(self.maximum, 0.5 * 2.0**self.attempt)
        self.attempt += 1
        return wait

    def reset(self) -> None:
        """Start again from the shortest wait (after a successful receive)."""
        self.attempt = 0


def log_reconnect(queue: str, driver: Driver, exc: BaseException, wait: float, *, driver_fault: bool) -> None:
    """Say why the consumer of ``queue`` is rebuilt in ``wait`` seconds."""
    if driver_fault:
        # Whatever the broker handed over must never stop the worker: a driver that could not turn it
        # into a delivery is rebuilt like a lost connection, and the error is kept for its author.
        logger.error(
            "queue %s: driver %s failed while receiving (%s: %s); this is a bug in the driver, which "
            "should hand over unreadable messages as malformed deliveries; rebuilding the consumer in %.1fs",
            queue,
            driver.name,
            type(exc).__name__,
            exc,
            wait,
            exc_info=exc,
        )
    else:
        logger.warning(
            "queue %s: connection to driver %s lost (%s: %s); reconnecting in %.1fs",
            queue,
            driver.name,
            type(exc).__name__,
            exc,
            wait,
        )


class ReceiveError(Exception):
    """A driver's ``receive`` raised something other than a connection error: a bug in the driver."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Connection:
    """The consumer of a consume loop: built on first use, rebuilt after a lost connection.

    Args:
        driver: The driver instance holding the queue.
        queue: Logical queue name.
        routing_key: Binding key overriding the queue's configured ones.
        prefetch: Deliveries the broker may hand out ahead of time.
        max_backoff: Longest wait between reconnection attempts, in seconds.
        wait: Waits a number of seconds unless the loop is asked to stop.
    """

    def __init__(
        self,
        driver: Driver,
        queue: str,
        *,
        routing_key: str | None,
        prefetch: int,
        max_backoff: float,
        wait: Callable[[float], object],
    ) -> None:
        self.driver = driver
        self.queue = queue
        self.routing_key = routing_key
        self.prefetch = prefetch
        self.errors = connection_errors(driver)
        self.backoff = Backoff(max_backoff)
        self._wait = wait
        self._consumer: Consumer | None = None

    def open(self) -> Consumer:
        """The consumer, built if there is none."""
        if self._consumer is None:
            self._consumer = self.driver.consumer(
                self.queue, routing_key=self.routing_key, prefetch=self.prefetch
            )
        return self._consumer

    def idle_wait(self, poll_interval: float) -> float:
        """How long one receive may wait: the consumer's ``idle_wait`` when it is longer and the
        consumer can be woken (a stop request is then still noticed at once), else ``poll_interval``."""
        consumer = self.open()
        if consumer.wakeable and consumer.idle_wait is not None:
            return max(poll_interval, consumer.idle_wait)
        return poll_interval

    def wake(self) -> None:
        """Cut the consumer's receive in progress short (safe from another thread or a signal handler)."""
        consumer = self._consumer
        if consumer is None:
            return
        try:
            consumer.wake()
        except Exception as exc:  # waking is a courtesy: the receive still ends at its timeout
            logger.debug("queue %s: waking the consumer failed: %s", self.queue, exc)

    def receive(self, timeout: float) -> Delivery | None:
        """The next delivery, or ``None``.

        Raises:
            ReceiveError: the driver raised something other than a connection error.
        """
        consumer = self.open()  # an error building it (a queue refused, a bad routing key) ends the loop
        try:
            return consumer.receive(timeout)
        except self.errors:
            raise
        except Exception as exc:
            raise ReceiveError(exc) from exc

    def lost(self, exc: BaseException, *, driver_fault: bool = False) -> None:
        """Close the consumer and wait before the next attempt builds a new one (the wait grows)."""
        self._wait(self.drop(exc, driver_fault=driver_fault))

    def drop(self, exc: BaseException, *, driver_fault: bool = False) -> float:
        """Close the consumer and return how long to wait before the next attempt (the wait grows)."""
        wait = self.backoff.next()
        log_reconnect(self.queue, self.driver, exc, wait, driver_fault=driver_fault)
        self.close()
        return wait

    def close(self) -> None:
        """Close the consumer, if any; a consumer that fails to close is dropped all the same."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            consumer.close()
        except Exception as exc:  # a dead connection often fails to close; the broker releases anyway
            logger.debug("queue %s: closing the consumer failed: %s", self.queue, exc)
