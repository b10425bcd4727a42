"""The failure policy of the consume loop: what happens to a delivery that could not be handled.

A message whose execution fails (reason ``failed``) is retried as its queue's retry policy says: a copy
with ``kq-attempt`` increased, visible after a backoff delay that the queue can honour (clamped, or at
once, and logged). After its last attempt, or at once when it can never succeed (every other reason), it
is published to the queue's dead-letter queue with ``kq-dead-letter-*`` headers saying why, then
acknowledged. If that publish fails, the message goes back on its queue so that nothing is lost: after a
few seconds when the failure is transient, *parked* for an hour when the dead-letter queue refuses it for
good (a plain copy, every header packed into one, is tried first).

The reasons are named once, here; signature problems add their own (:mod:`kq.core._signing`). Re-drive
and metrics read them from this module, never from the loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kq.core._consumers import Handler
from kq.core._driver import Capabilities, Consumer, Driver
from kq.core._errors import (
    ConfigError,
    MessageFormatError,
    UnknownQueueError,
    UnsupportedOperationError,
)
from kq.core._events import EventDispatcher, MessageConsumptionFailed
from kq.core._message import (
    ATTEMPT,
    DEAD_LETTER_DELIVERIES,
    DEAD_LETTER_ERROR,
    DEAD_LETTER_FOREIGN_HEADERS,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_REASON,
    DEAD_LETTER_TIME,
    Delivery,
    is_portable_header_name,
)
from kq.core._signing import Signer, Verifier
from kq.core._spec import QueueSpec

if TYPE_CHECKING:
    from kq.core._loop import LoopStats

logger = logging.getLogger(__name__)

# The reasons a delivery fails for (``kq-dead-letter-reason``, ``MessageConsumptionFailed.reason``, the
# metrics' ``reason`` label), besides the signature ones.
#: The work ran and failed: the handler raised, a command exited non-zero or timed out.
FAILED = "failed"
#: The driver could not read what the broker handed over (``Delivery.defect``).
MALFORMED = "malformed"
#: The body does not decode for its content type.
UNDECODABLE = "undecodable"
#: It decodes but is not a valid message for its handler.
INVALID = "invalid"
#: It asks for something outside the allow-lists.
NOT_ALLOWED = "not-allowed"
#: Delivered more than ``max_deliveries`` times without being settled.
POISON = "poison"
#: Every reason above; a signature problem adds its own (``SignatureError.reason``).
REASONS = (FAILED, MALFORMED, UNDECODABLE, INVALID, NOT_ALLOWED, POISON)

#: Failure reasons of messages that were decoded and announced (``message_received``) first; the
#: others (undecodable, poison, signature problems) failed before that.
RECEIVED_FAILURE_REASONS = frozenset({FAILED, INVALID, NOT_ALLOWED})

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
#: Longest error text kept in a dead-letter header.
MAX_ERROR_HEADER = 1000


@dataclass(frozen=True)
class Failure:
    """Why a delivery could not be handled: its decoded body (``None`` if it failed before decoding), the
    error, and the reason (one of :data:`REASONS` or a signature reason)."""

    body: Any
    error: Exception
    reason: str


class FailurePolicy:
    """Retries, dead-letters or parks the deliveries of one queue that could not be handled.

    Args:
        driver: The driver instance holding the queue (its producers publish copies and dead letters).
        spec: The queue's settings: retry policy, dead-letter queue.
        capabilities: What the driver can do for this queue (delays and their maxima).
        handler: The queue's message consumer, for log lines and events.
        dispatcher: Where ``message_consumption_failed`` is announced.
        signer: Signs retried copies (``None``: they are not signed).
        verifier: Told to forget a requeued delivery, which is not a replay when it comes back.
        wait: Waits a number of seconds unless the worker is asked to stop (a requeue without delay).
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
    ) -> None:
        self.driver = driver
        self.spec = spec
        self.capabilities = capabilities
        self.handler = handler
        self.dispatcher = dispatcher
        self.signer = signer
        self.verifier = verifier
        self._wait = wait

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
        if failure.reason == FAILED and policy.retries_after(event.attempt):
            event.retry(policy.delay_after(event.attempt))  # planned before listeners, who may change it
        if self.dispatcher.has_listeners(MessageConsumptionFailed.name):
            self.dispatcher.dispatch(event)
        what = self.handler.describe(failure.body) if failure.body is not None else "message"
        if event.retry_delay is not None:
            if failure.reason == FAILED and self._retry(consumer, delivery, event, what, stats):
                return
            if failure.reason != FAILED:
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
        delay = self._retry_delay(delivery, event.retry_delay or 0.0)
        headers = dict(delivery.headers)
        headers[ATTEMPT] = str(event.attempt + 1)
        try:
            if self.signer is not None:
                # A copy is a new message for the replay cache: a new nonce, valid from when it is due.
                # (A message with header names kq cannot publish fails here, or in the driver's retry:
                # it is dead-lettered below, those headers kept.)
                copy = delivery.to_message(headers=headers, delay=delay)
                headers = dict(self.signer.sign(copy, delivery.queue, valid_from=time.time() + delay).headers)
            consumer.retry(delivery, headers, delay=delay)
        except self.driver.connection_errors:
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
            f", visible in {delay:g}s" if delay else "",
        )
        return True

    def _retry_delay(self, delivery: Delivery, wanted: float) -> float:
        """The delay a retry copy gets: ``wanted``, or as close as the queue allows (logged)."""
        caps = self.capabilities
        problem = caps.delay_problem(wanted, requeue=False)
        if problem is None:
            return wanted
        # The rule (docs/failures.md): the longest delay the queue allows, else at once; never a lost retry.
        longest = caps.max_publish_delay if caps.delayed_delivery and caps.max_publish_delay else 0.0
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
            self._dead_letter(delivery, reason, error, target)
        except self.driver.connection_errors:
            raise
        except PERMANENT_PUBLISH_ERRORS as refused:
            # The dead-letter queue refuses this copy and always will (its headers, its size, a queue
            # that cannot exist): a plainer copy, with every original header packed into one, may pass.
            try:
                self._dead_letter(delivery, reason, error, target, plain=True)
            except self.driver.connection_errors:
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
            "rejected" if reason != FAILED else FAILED,
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

    def _dead_letter(
        self, delivery: Delivery, reason: str, error: Exception, target: str, *, plain: bool = False
    ) -> None:
        headers: dict[str, str] = {}
        # Names a foreign producer may send but kq cannot publish ("X-Php Trace") are kept, in one header;
        # a plain copy keeps every header there.
        foreign: dict[str, str] = {}
        for name, value in delivery.headers.items():
            keep = not plain and is_portable_header_name(name) and isinstance(value, str)
            (headers if keep else foreign)[name] = value
        if foreign:
            headers[DEAD_LETTER_FOREIGN_HEADERS] = json.dumps(foreign, ensure_ascii=False, default=str)
        headers[DEAD_LETTER_REASON] = reason
        # A command's last line of output often carries terminal escapes: brokers refuse control characters.
        headers[DEAD_LETTER_ERROR] = printable(f"{type(error).__name__}: {error}")[:MAX_ERROR_HEADER]
        headers[DEAD_LETTER_QUEUE] = delivery.queue
        headers[DEAD_LETTER_TIME] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        headers[DEAD_LETTER_DELIVERIES] = str(delivery.delivery_count)
        self.driver.producer(target).send(delivery.to_message(headers=headers))


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes, NUL, line breaks) written as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def poison_protection_problem(max_deliveries: int, delivery_count: str) -> str | None:
    """Why ``max_deliveries`` cannot protect a queue whose driver counts deliveries as ``delivery_count``
    says (``Capabilities.delivery_count``), or ``None`` when it works."""
    if not max_deliveries or delivery_count == "exact":
        return None
    if delivery_count == "flag" and max_deliveries > 1:
        return (
            f"max_deliveries = {max_deliveries} cannot work: the broker only flags a redelivery (the count "
            "is 1 or 2), so poison protection is off; max_deliveries = 1 dead-letters every redelivered "
            "message instead (a RabbitMQ quorum queue counts exactly)"
        )
    if delivery_count == "receives":
        return (
            f"max_deliveries = {max_deliveries} is not applied: the broker counts receives, which releases "
            "and browses raise too, so a message that never ran could look like poison; use the broker's "
            "own redrive limit if you accept that"
        )
    return None


def attempt_of(delivery: Delivery) -> int:
    """The execution attempt a delivery is (``kq-attempt`` header; 1 when absent or malformed)."""
    try:
        return max(1, int(delivery.headers.get(ATTEMPT, "1")))
    except ValueError:
        return 1
