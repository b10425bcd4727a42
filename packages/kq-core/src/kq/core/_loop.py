"""The consume loop: receive, decode, announce, handle, settle; repeat until a limit or a stop request.

The loop owns everything drivers should not have to re-implement: limits (message count, total time),
stop requests (signals), events, acknowledgement after the handler returns, the failure policy, lease
extension for long handlers, and reconnection after the driver's declared connection errors.

Failure policy: a message whose execution fails is retried as the queue's retry policy says (a copy
with ``kq-attempt`` increased, visible after a backoff delay); after its last attempt, or at once when
it can never succeed, it is published to the queue's dead-letter queue (``<queue>.failed`` unless
configured) with ``kq-dead-letter-*`` headers saying why, then acknowledged. If even that publish fails,
the message is requeued so that nothing is lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kq.core._consumers import MessageConsumer
from kq.core._driver import Consumer, Driver
from kq.core._errors import (
    ConfigError,
    KqError,
    LeaseLostError,
    MessageFormatError,
    NotAllowedError,
    UnknownQueueError,
    UnsupportedOperationError,
)
from kq.core._events import (
    EventDispatcher,
    MessageConsumed,
    MessageConsumptionFailed,
    MessageReceived,
    describe_callable,
)
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
from kq.core._numbers import check_number, check_whole_number
from kq.core._resources import MemoryGauge
from kq.core._signing import SignatureError, Signer, Verifier

logger = logging.getLogger(__name__)

#: Failure reasons of messages that were decoded and announced (``message_received``) first; the
#: others (undecodable, poison, signature problems) failed before that.
RECEIVED_FAILURE_REASONS = frozenset({"failed", "invalid", "not-allowed"})

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
#: Largest memory limit accepted, in MB (a petabyte: only there to refuse nonsense).
MAX_MEGABYTES = 1e9
#: Longest error text kept in a dead-letter header.
MAX_ERROR_HEADER = 1000


@dataclass(frozen=True)
class Limits:
    """When a consume loop stops by itself; zero means no limit. All are checked between messages.

    Attributes:
        messages: Stop after this many messages were handled (consumed, failed or vetoed).
        time: Stop after this many seconds; a long handler overruns it.
        memory: Stop once the RSS of the worker and its children exceeds this many MB.
        failures: Stop after this many failed messages.
        checks: Callables returning a reason to stop, or ``None`` to go on (the PHP library's
            ``Watchdog::check()``); one that raises is logged and ignored.
    """

    messages: int = 0
    time: float = 0.0
    memory: float = 0.0
    failures: int = 0
    checks: tuple[Callable[[], str | None], ...] = ()

    def __post_init__(self) -> None:
        # Finite and bounded: nan passes "< 0", and an infinite time limit overflows the deadline.
        for name in ("messages", "failures"):
            check_whole_number(getattr(self, name), f"{name} limit")
        check_number(self.time, "time limit")
        check_number(self.memory, "memory limit", maximum=MAX_MEGABYTES)


@dataclass
class LoopStats:
    """Counters of one consume loop run."""

    received: int = 0
    consumed: int = 0
    failed: int = 0
    vetoed: int = 0
    dead_lettered: int = 0
    requeued: int = 0
    parked: int = 0
    retried: int = 0
    reconnects: int = 0
    started_at: float = field(default_factory=time.monotonic)


class ConsumeLoop:
    """Consumes one logical queue with one message consumer.

    Args:
        driver: The driver instance holding the queue.
        queue: Logical queue name.
        handler: The message consumer that does the work.
        dispatcher: Event dispatcher (listeners); optional.
        routing_key: Binding key overriding the queue's configured ones.
        limits: Message-count and total-time limits.
        poll_interval: Longest single wait in ``receive``; bounds how late a stop request is noticed.
        prefetch: Deliveries the broker may hand out ahead of time.
        max_backoff: Longest wait between reconnection attempts, in seconds.
        verifier: When given, every message must carry a valid signature for one of ``signed_for``
            (checked before the body is decoded).
        signed_for: The queues a message may be signed for (default: this one).
        signer: Signs the copies of retried messages (new nonce, valid from when they are due).
    """

    def __init__(
        self,
        driver: Driver,
        queue: str,
        handler: MessageConsumer,
        *,
        dispatcher: EventDispatcher | None = None,
        routing_key: str | None = None,
        limits: Limits | None = None,
        poll_interval: float = 1.0,
        prefetch: int = 1,
        max_backoff: float = 30.0,
        verifier: Verifier | None = None,
        signed_for: Collection[str] = (),
        signer: Signer | None = None,
    ) -> None:
        self.driver = driver
        self.queue = queue
        self.spec = driver.queue(queue)
        self.capabilities = driver.capabilities_for(queue)
        self.handler = handler
        self.dispatcher = dispatcher or EventDispatcher()
        self.routing_key = routing_key
        self.limits = limits or Limits()
        self.poll_interval = poll_interval
        self.prefetch = prefetch
        self.max_backoff = max_backoff
        self.verifier = verifier
        self.signed_for = tuple(signed_for) or (queue,)
        self.signer = signer
        self.stats = LoopStats()
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._memory: MemoryGauge | None = None
        self._check_errors: dict[int, str] = {}

    def stop(self, reason: str) -> None:
        """Ask the loop to stop after the current message (safe from signal handlers and threads)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    def run(self) -> str:
        """Consume until a limit is reached or :meth:`stop` is called; return the stop reason."""
        self.stats = LoopStats()
        self._memory = MemoryGauge() if self.limits.memory else None
        deadline = time.monotonic() + self.limits.time if self.limits.time else None
        keeper = _LeaseKeeper() if self.capabilities.lease_extension else None
        backoff = _Backoff(self.max_backoff)
        logger.info(
            "consuming queue %s on driver %s with the %s consumer",
            self.queue,
            self.driver.name,
            self.handler.kind or type(self.handler).__name__,
        )
        problem = poison_protection_problem(self.spec.max_deliveries, self.capabilities.delivery_count)
        if problem:
            logger.warning("queue %s on driver %s: %s", self.queue, self.driver.name, problem)
        try:
            while True:
                reason = self._limit_reached(deadline)
                if reason is not None:
                    self.stop(reason)
                    break
                try:
                    if self._consumer is None:
                        self._consumer = self.driver.consumer(
                            self.queue, routing_key=self.routing_key, prefetch=self.prefetch
                        )
                    timeout = self.poll_interval
                    if deadline is not None:
                        timeout = max(0.0, min(timeout, deadline - time.monotonic()))
                    delivery = self._receive(self._consumer, timeout)
                    if delivery is not None:
                        self.stats.received += 1
                        self._handle(self._consumer, delivery, keeper)
                    backoff.reset()
                except self.driver.connection_errors as exc:
                    self._reconnect(exc, backoff)
                except _ReceiveError as failed:
                    self._reconnect(failed.error, backoff, driver_fault=True)
        finally:
            if keeper is not None:
                keeper.shutdown()
            self._close_consumer()
            self.handler.close()
        reason = self.stop_reason or "stop requested"
        logger.info(
            "stopped consuming queue %s because: %s (%d consumed, %d failed, %d vetoed)",
            self.queue,
            reason,
            self.stats.consumed,
            self.stats.failed,
            self.stats.vetoed,
        )
        return reason

    def _limit_reached(self, deadline: float | None) -> str | None:
        limits = self.limits
        if self._stop.is_set():
            return self.stop_reason or "stop requested"
        if limits.messages and self.stats.received >= limits.messages:
            return f"message limit of {limits.messages} reached"
        if deadline is not None and time.monotonic() >= deadline:
            return f"time limit of {limits.time:g}s reached"
        if limits.failures and self.stats.failed >= limits.failures:
            return f"failure limit of {limits.failures} reached"
        if self._memory is not None:
            used = self._memory.megabytes()
            if used > limits.memory:
                return f"memory limit of {limits.memory:g} MB reached (RSS {used:.1f} MB)"
        for check in limits.checks:
            try:
                reason = check()
            except Exception as exc:
                self._check_failed(check, exc)
                continue
            if reason:
                return reason
        return None

    def _check_failed(self, check: Callable[[], str | None], exc: Exception) -> None:
        # Checks run at every poll: an error is said once (again only when it changes), not every second.
        error = f"{type(exc).__name__}: {exc}"
        repeated = self._check_errors.get(id(check)) == error
        self._check_errors[id(check)] = error
        logger.log(
            logging.DEBUG if repeated else logging.ERROR,
            "queue %s: the stop check %s failed (%s); ignoring it%s",
            self.queue,
            describe_callable(check),
            error,
            "" if repeated else " (the same failure again is logged at DEBUG only)",
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )

    def _receive(self, consumer: Consumer, timeout: float) -> Delivery | None:
        """The driver's next delivery; anything but a connection error is wrapped in _ReceiveError."""
        try:
            return consumer.receive(timeout)
        except self.driver.connection_errors:
            raise
        except Exception as exc:
            raise _ReceiveError(exc) from exc

    def _reconnect(self, exc: BaseException, backoff: _Backoff, *, driver_fault: bool = False) -> None:
        self.stats.reconnects += 1
        wait = backoff.next()
        if driver_fault:
            # Whatever the broker handed over must never stop the worker: a driver that could not turn
            # it into a delivery is rebuilt like a lost connection, and the error is kept for its author.
            logger.error(
                "queue %s: driver %s failed while receiving (%s: %s); this is a bug in the driver, "
                "which should hand over unreadable messages as malformed deliveries; rebuilding the "
                "consumer in %.1fs",
                self.queue,
                self.driver.name,
                type(exc).__name__,
                exc,
                wait,
                exc_info=exc,
            )
        else:
            logger.warning(
                "queue %s: connection to driver %s lost (%s: %s); reconnecting in %.1fs",
                self.queue,
                self.driver.name,
                type(exc).__name__,
                exc,
                wait,
            )
        self._close_consumer()
        self._stop.wait(wait)

    def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            consumer.close()
        except Exception as exc:  # a dead connection often fails to close; the broker releases anyway
            logger.debug("queue %s: closing the consumer failed: %s", self.queue, exc)

    def _handle(self, consumer: Consumer, delivery: Delivery, keeper: _LeaseKeeper | None) -> None:
        started = time.monotonic()
        if keeper is not None:
            keeper.watch(consumer, delivery)
        try:
            self._handle_once(consumer, delivery, keeper, started)
        except BaseException as exc:
            # Not settled, or settled on a connection that broke (the ack may never have reached the
            # broker): the broker will deliver it again, and that is not a replay.
            if self.verifier is not None and (
                not delivery.settled or isinstance(exc, self.driver.connection_errors)
            ):
                self.verifier.forget(delivery)
            raise

    def _handle_once(
        self, consumer: Consumer, delivery: Delivery, keeper: _LeaseKeeper | None, started: float
    ) -> None:
        try:
            outcome = self._process(delivery)
        finally:
            # Settle only once the keeper has let go of the delivery, so no extension races the ack.
            if keeper is not None:
                keeper.release()
        if isinstance(outcome, _Failure):
            self._fail(consumer, delivery, outcome, started)
        elif isinstance(outcome, _Vetoed):
            consumer.ack(delivery)
            self.stats.vetoed += 1
            logger.info(
                "queue %s message %s: skipped and acknowledged, vetoed: %s",
                delivery.queue,
                delivery.message_id,
                outcome.reason,
            )
        else:
            consumer.ack(delivery)
            duration = time.monotonic() - started
            self.stats.consumed += 1
            logger.info(
                "queue %s message %s: %s consumed in %.3fs",
                delivery.queue,
                delivery.message_id,
                self.handler.describe(outcome.body),
                duration,
            )
            if self.dispatcher.has_listeners(MessageConsumed.name):
                self.dispatcher.dispatch(
                    MessageConsumed(
                        delivery=delivery,
                        body=outcome.body,
                        consumer=self.handler,
                        result=outcome.result,
                        duration=duration,
                    )
                )

    def _process(self, delivery: Delivery) -> _Success | _Vetoed | _Failure:
        if delivery.defect is not None:
            # The driver could not read all of it: nothing about it can be trusted, so nothing runs.
            return _Failure(None, MessageFormatError(delivery.defect), "malformed")
        # Authenticity first: a forged delivery count must not decide why a forged message is refused.
        if self.verifier is not None:
            try:
                self.verifier.verify(delivery, self.signed_for)
            except SignatureError as exc:
                return _Failure(None, exc, exc.reason)
        limit = self.spec.max_deliveries
        # A count of receives also grows with releases and browses: it cannot prove a handler crashed.
        if limit and delivery.delivery_count > limit and self.capabilities.delivery_count != "receives":
            # Delivered again and again without being settled: its handler kills or hangs the worker.
            # Handling it once more would do the same; keep it aside instead.
            error = KqError(
                f"delivered {delivery.delivery_count} times, more than max_deliveries = {limit}: a worker "
                "died or lost its connection while handling it each time"
            )
            return _Failure(None, error, "poison")
        try:
            body = self.handler.decode(delivery)
        except MessageFormatError as exc:
            return _Failure(None, exc, "undecodable")
        except Exception as exc:  # a consumer's own decode() may fail in other ways: still never a crash
            return _Failure(None, exc, "undecodable")
        if self.dispatcher.has_listeners(MessageReceived.name):
            event = self.dispatcher.dispatch(
                MessageReceived(delivery=delivery, body=body, consumer=self.handler)
            )
            if event.vetoed_by is not None:
                return _Vetoed(event.vetoed_by)
        try:
            return _Success(body, self.handler.consume(body, delivery))
        except MessageFormatError as exc:
            return _Failure(body, exc, "invalid")
        except NotAllowedError as exc:
            return _Failure(body, exc, "not-allowed")
        except Exception as exc:
            return _Failure(body, exc, "failed")

    def _fail(self, consumer: Consumer, delivery: Delivery, failure: _Failure, started: float) -> None:
        self.stats.failed += 1
        event = MessageConsumptionFailed(
            delivery=delivery,
            body=failure.body,
            consumer=self.handler,
            error=failure.error,
            reason=failure.reason,
            attempt=attempt_of(delivery),
            duration=time.monotonic() - started,
        )
        policy = self.spec.retry
        if failure.reason == "failed" and policy.retries_after(event.attempt):
            event.retry(policy.delay_after(event.attempt))  # planned before listeners, who may change it
        if self.dispatcher.has_listeners(MessageConsumptionFailed.name):
            self.dispatcher.dispatch(event)
        what = self.handler.describe(failure.body) if failure.body is not None else "message"
        if event.retry_delay is not None:
            if failure.reason == "failed" and self._retry(consumer, delivery, event, what):
                return
            if failure.reason != "failed":
                logger.warning(
                    "queue %s message %s: a listener asked to retry a message that can never succeed "
                    "(%s); dead-lettering it instead",
                    delivery.queue,
                    delivery.message_id,
                    failure.reason,
                )
        event.outcome = self._dead_letter_or_requeue(consumer, delivery, failure, what)

    def _retry(
        self, consumer: Consumer, delivery: Delivery, event: MessageConsumptionFailed, what: str
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
        self.stats.retried += 1
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
        self, consumer: Consumer, delivery: Delivery, failure: _Failure, what: str
    ) -> str:
        error, reason = failure.error, failure.reason
        target = self.spec.failed_queue
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
                return self._requeue(consumer, delivery, error, what, target, still_refused, refused)
        except Exception as publish_error:
            return self._requeue(consumer, delivery, error, what, target, publish_error, None)
        consumer.ack(delivery)
        self.stats.dead_lettered += 1
        logger.error(
            "queue %s message %s: %s %s (%s: %s); moved to dead-letter queue %s",
            delivery.queue,
            delivery.message_id,
            what,
            "rejected" if reason != "failed" else "failed",
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
        self.stats.requeued += 1
        if permanent is not None:
            self.stats.parked += 1
        if not delay:
            self._stop.wait(RETRY_DEAD_LETTER_AFTER)
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
        self.driver.producer(target).publish(delivery.to_message(headers=headers))


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes, NUL, line breaks) written as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class _ReceiveError(Exception):
    """A driver's ``receive`` raised something other than one of its connection errors."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class _Success:
    body: Any
    result: Any


@dataclass(frozen=True)
class _Vetoed:
    reason: str


@dataclass(frozen=True)
class _Failure:
    body: Any
    error: Exception
    reason: str


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


class _Backoff:
    """Exponential backoff for reconnections: 0.5 s, 1 s, 2 s, ... capped at ``maximum``."""

    def __init__(self, maximum: float) -> None:
        self.maximum = maximum
        self.attempt = 0

    def next(self) -> float:
        wait: float = min(self.maximum, 0.5 * 2.0**self.attempt)
        self.attempt += 1
        return wait

    def reset(self) -> None:
        self.attempt = 0


class _LeaseKeeper:
    """Extends the lease of the delivery being handled, from one background thread per loop.

    Drivers with visibility timeouts (sqlite, SQS) would hand a message to another consumer while a
    long handler still runs; the keeper extends the lease every third of its length. The hot path only
    swaps a tuple under an uncontended lock: the thread wakes on its own short tick instead of being
    notified for every message, which would cost two thread switches per message.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (consumer, delivery, lease length, when to extend next)
        self._current: tuple[Consumer, Delivery, float, float] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kq-lease-keeper", daemon=True)
        self._thread.start()

    def watch(self, consumer: Consumer, delivery: Delivery) -> None:
        lease = consumer.lease_duration or 30.0
        # A third of the lease after it started: when the broker handed the delivery over, which for a
        # buffered delivery was before receive() returned it.
        expires = delivery.lease_expires
        due = expires - lease * 2 / 3 if expires is not None else time.monotonic() + lease / 3
        with self._lock:
            self._current = (consumer, delivery, lease, due)

    def release(self) -> None:
        # Taking the lock also waits for an extension in progress: nothing is extended after this.
        with self._lock:
            self._current = None

    def shutdown(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        tick = 1.0
        while not self._stopping.wait(tick):
            with self._lock:
                current = self._current
                if current is None:
                    tick = 1.0
                    continue
                consumer, delivery, lease, due = current
                tick = min(1.0, lease / 6)
                now = time.monotonic()
                if now < due:
                    continue
                try:
                    consumer.extend(delivery, lease)
                    logger.debug(
                        "queue %s message %s: lease extended by %.0fs",
                        delivery.queue,
                        delivery.message_id,
                        lease,
                    )
                except LeaseLostError as exc:
                    # Nothing to keep any more; the handler goes on, and its settlement is a no-op.
                    logger.warning(
                        "queue %s message %s: its lease had lapsed before it could be extended (%s); "
                        "another consumer may run it too",
                        delivery.queue,
                        delivery.message_id,
                        exc,
                    )
                    self._current = None
                    continue
                except Exception as exc:
                    logger.warning(
                        "queue %s message %s: could not extend the lease (%s); another consumer "
                        "may receive it",
                        delivery.queue,
                        delivery.message_id,
                        exc,
                    )
                self._current = (consumer, delivery, lease, now + lease / 3)
