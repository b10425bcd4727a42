"""The failure policy of the consume loop: what happens to a delivery that could not be handled.

A message whose execution fails (reason ``failed``, or ``timeout`` when it ran past its time limit) is
retried as its queue's retry policy says: a copy with ``kq-attempt`` increased, visible after a backoff
delay that the queue can honour (clamped, or at once, and logged); where the driver declares
``retry_in_place`` (SQS FIFO), the delivery itself, made visible again after the delay, so that it stays
ahead of the messages queued after it. After its last
attempt, or at once when it can never succeed (every other reason), it is published to the queue's
dead-letter queue with ``kq-dead-letter-*`` headers saying why
(:func:`~kq.core._failures.dead_letter_message`), then acknowledged. If that publish fails, the message
goes back on its queue so that nothing is lost: after a few seconds when the failure is transient,
*parked* for an hour when the dead-letter queue refuses it for good (a plain copy, every header packed
into one, is tried first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kq.core._capabilities import Capabilities
from kq.core._driver import Driver
from kq.core._driver_consumer import Consumer
from kq.core._errors import (
    ConfigError,
    MessageFormatError,
    UnknownQueueError,
    UnsupportedOperationError,
)
from kq.core._events import EventDispatcher, MessageConsumptionFailed
from kq.core._failures import (
    RETRIED_REASONS,
    Failure,
    attempt_of,
    dead_letter_message,
    poison_protection_problem,
)
from kq.core._message import ATTEMPT, Delivery
from kq.core._signing import Signer, Verifier
from kq.core._spec import QueueSpec
from kq.core._stats import LoopStats
from kq.core.handlers._base import Handler

logger = logging.getLogger(__name__.replace("._", "."))

#: Seconds before a message that could not be dead-lettered is tried again.
RETRY_DEAD_LETTER_AFTER = 5.0
#: Seconds a message stays parked on its queue when its dead-letter queue refuses it for good.
PARK_AFTER = 3600.0
#: Errors after which publishing the same dead letter again cannot succeed (its format, an operation
#: or a queue the driver does not support, configuration).
PERMANENT_PUBLISH_ERRORS: tuple[type[Exception], ...] = (
    MessageFormatError,
    UnsupportedOperationError,
    ConfigError,
    UnknownQueueError,
)


class FailurePolicy:
    """Retries, dead-letters or parks the deliveries of one queue that could not be handled.

    Args:
        driver: The driver instance holding the queue (its producers publish copies and dead letters).
        spec: The queue's settings: retry policy, dead-letter queue.
        capabilities: What the driver can do for this queue (delays and their maxima).
        handler: The queue's handler, for log lines and events.
        dispatcher: Where ``message_consumption_failed`` is announced.
        signer: Signs retried copies (``None``: they are not signed).
        verifier: Told to forget a requeued delivery, which is not a replay when it comes back.
        wait: Waits a number of seconds unless the worker is asked to stop (a requeue without delay).
        connection_errors: The errors that mean the connection is lost: they are not failures of the
            message, and go up to the loop, which reconnects (default: the driver's).
    """

    def __init__(
        self,
        driver: Driver,
        spec: QueueSpec,
        capabilities: Capabilities,
        handler: Handler,
        dispatcher: EventDispatcher,
        *,
        signer: Signer | None,
        verifier: Verifier | None,
        wait: Callable[[float], object],
        connection_errors: tuple[type[BaseException], ...] | None = None,
    ) -> None:
        self.driver = driver
        self.spec = spec
        self.capabilities = capabilities
        self.handler = handler
        self.dispatcher = dispatcher
        self.signer = signer
        self.verifier = verifier
        self._wait = wait
        self.connection_errors = driver.connection_errors if connection_errors is None else connection_errors

    def warn_if_unprotected(self) -> None:
        """Warn when ``max_deliveries`` cannot protect this queue, given how its driver counts deliveries."""
        problem = poison_protection_problem(self.spec.max_deliveries, self.capabilities.delivery_count)
        if problem:
            logger.warning("queue %s on driver %s: %s", self.spec.name, self.driver.name, problem)

    def handle(
        self, consumer: Consumer, delivery: Delivery, failure: Failure, started: float, stats: LoopStats
    ) -> None:
        """Count, announce (``message_consumption_failed``), then retry, dead-letter or park ``delivery``."""
        stats.failed += 1
        event = MessageConsumptionFailed(
            delivery=delivery,
            body=failure.body,
            handler=self.handler,
            error=failure.error,
            reason=failure.reason,
            attempt=attempt_of(delivery),
            duration=time.monotonic() - started,
        )
        policy = self.spec.retry
        if failure.reason in RETRIED_REASONS and policy.retries_after(event.attempt):
            event.retry(policy.delay_after(event.attempt))  # planned before listeners, who may change it
        if self.dispatcher.has_listeners(MessageConsumptionFailed.name):
            self.dispatcher.dispatch(event)
        what = self.handler.describe(failure.body) if failure.body is not None else "message"
        if event.retry_delay is not None:
            if failure.reason in RETRIED_REASONS and self._retry(consumer, delivery, event, what, stats):
                return
            if failure.reason not in RETRIED_REASONS:
                logger.warning(
                    "queue %s message %s: a listener asked to retry a message that can never succeed "
                    "(%s); dead-lettering it instead",
                    delivery.queue,
                    delivery.message_id,
                    failure.reason,
                )
        event.outcome = self._dead_letter_or_requeue(consumer, delivery, failure, what, stats)

    def _retry(
        self,
        consumer: Consumer,
        delivery: Delivery,
        event: MessageConsumptionFailed,
        what: str,
        stats: LoopStats,
    ) -> bool:
        in_place = self.capabilities.retry_in_place
        delay = self._retry_delay(delivery, event.retry_delay or 0.0, in_place=in_place)
        headers = dict(delivery.headers)
        headers[ATTEMPT] = str(event.attempt + 1)
        try:
            if self.signer is not None and not in_place:
                # A copy is a new message for the replay cache: a new nonce, valid from when it is due.
                # (A message with header names kq cannot publish fails here, or in the driver's retry:
                # it is dead-lettered below, those headers kept.)
                copy = delivery.to_message(headers=headers, delay=delay)
                headers = dict(self.signer.sign(copy, delivery.queue, valid_from=time.time() + delay).headers)
            consumer.retry(delivery, headers, delay=delay)
            if in_place and self.verifier is not None:
                self.verifier.forget(delivery)  # it comes back with its nonce: not a replay
        except self.connection_errors:
            raise
        except Exception as exc:
            logger.error(
                "queue %s message %s: %s failed and could not be queued again (%s: %s)",
                delivery.queue,
                delivery.message_id,
                what,
                type(exc).__name__,
                exc,
            )
            return False
        stats.retried += 1
        event.outcome = "retried"
        logger.warning(
            "queue %s message %s: %s failed (%s: %s); attempt %d queued again%s",
            delivery.queue,
            delivery.message_id,
            what,
            type(event.error).__name__,
            event.error,
            event.attempt + 1,
            (f", visible in {delay:g}s" if delay else "")
            + (", kept ahead of the messages queued after it" if in_place else ""),
        )
        return True

    def _retry_delay(self, delivery: Delivery, wanted: float, *, in_place: bool) -> float:
        """The delay a retry gets: ``wanted``, or as close as the queue allows (logged). A retry in place
        is bounded as a requeue, a copy as a publish."""
        caps = self.capabilities
        problem = caps.delay_problem(wanted, requeue=in_place)
        if problem is None:
            return wanted
        # The rule (docs/failures.md): the longest delay the queue allows, else at once; never a lost retry.
        limit = caps.max_requeue_delay if in_place else caps.max_publish_delay
        longest = limit if caps.delayed_delivery and limit else 0.0
        logger.warning(
            "queue %s message %s: driver %s %s, so the retry planned in %gs is queued %s",
            delivery.queue,
            delivery.message_id,
            self.driver.name,
            problem,
            wanted,
            f"in {longest:g}s instead" if longest else "at once",
        )
        return longest

    def _dead_letter_or_requeue(
        self, consumer: Consumer, delivery: Delivery, failure: Failure, what: str, stats: LoopStats
    ) -> str:
        error, reason = failure.error, failure.reason
        target = self.spec.dead_letter_queue
        try:
            self._dead_letter(delivery, failure, target)
        except self.connection_errors:
            raise
        except PERMANENT_PUBLISH_ERRORS as refused:
            # The dead-letter queue refuses this copy and always will (its headers, its size, a queue
            # that cannot exist): a plainer copy, with every original header packed into one, may pass.
            try:
                self._dead_letter(delivery, failure, target, plain=True)
            except self.connection_errors:
                raise
            except Exception as still_refused:
                return self._requeue(consumer, delivery, error, what, target, still_refused, refused, stats)
        except Exception as publish_error:
            return self._requeue(consumer, delivery, error, what, target, publish_error, None, stats)
        consumer.ack(delivery)
        stats.dead_lettered += 1
        logger.error(
            "queue %s message %s: %s %s (%s: %s); moved to dead-letter queue %s",
            delivery.queue,
            delivery.message_id,
            what,
            "rejected" if reason not in RETRIED_REASONS else "failed",
            type(error).__name__,
            error,
            target,
        )
        return "dead-lettered"

    def _requeue(
        self,
        consumer: Consumer,
        delivery: Delivery,
        error: Exception,
        what: str,
        target: str,
        publish_error: Exception,
        permanent: Exception | None,
        stats: LoopStats,
    ) -> str:
        """Keep a message the dead-letter queue would not take: back on its queue, never lost.

        A transient failure is tried again in RETRY_DEAD_LETTER_AFTER seconds; a permanent one (the
        plain copy refused too) is parked for PARK_AFTER seconds, or as long as the queue can delay a
        requeue, so that it does not come back every few seconds forever.
        """
        caps = self.capabilities
        wanted = PARK_AFTER if permanent is not None else RETRY_DEAD_LETTER_AFTER
        limit = caps.max_requeue_delay
        delay = (min(wanted, limit) if limit is not None else wanted) if caps.delayed_delivery else 0.0
        consumer.reject(delivery, requeue=True, delay=delay)
        if self.verifier is not None:
            self.verifier.forget(delivery)  # it comes back as it was: not a replay
        stats.requeued += 1
        if permanent is not None:
            stats.parked += 1
        if not delay:
            self._wait(RETRY_DEAD_LETTER_AFTER)
        logger.error(
            "queue %s message %s: %s failed (%s: %s) and could not be dead-lettered to %s (%s: %s); %s",
            delivery.queue,
            delivery.message_id,
            what,
            type(error).__name__,
            error,
            target,
            type(publish_error).__name__,
            publish_error,
            (
                f"the dead-letter queue refuses it for good ({permanent}): parked back on its queue for "
                f"{delay or RETRY_DEAD_LETTER_AFTER:g}s; fix the dead-letter queue and it is dead-lettered "
                "when it comes back"
                if permanent is not None
                else f"requeued, to be tried again in {delay or RETRY_DEAD_LETTER_AFTER:g}s"
            ),
        )
        return "parked" if permanent is not None else "requeued"

    def _dead_letter(self, delivery: Delivery, failure: Failure, target: str, *, plain: bool = False) -> None:
        self.driver.producer(target).send(dead_letter_message(delivery, failure, plain=plain))
