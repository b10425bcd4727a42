"""The consume loop: receive, decode, announce, handle, settle; repeat until a limit or a stop request.

The loop owns everything drivers should not have to re-implement: limits (message count, total time),
stop requests (signals), events, acknowledgement after the handler returns, the failure policy, lease
extension for long handlers, and reconnection after the driver's declared connection errors.

What happens to a delivery that could not be handled (retry, dead-letter, park) is the failure policy's
(:mod:`kq.core._failures`); keeping long handlers' leases is the lease keeper's (:mod:`kq.core._leases`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from kq.core._consumers import Handler
from kq.core._driver import Consumer, Driver
from kq.core._errors import KqError, MessageFormatError, NotAllowedError, SignatureError
from kq.core._events import EventDispatcher, MessageConsumed, MessageReceived, describe_callable
from kq.core._failures import (
    FAILED,
    INVALID,
    MALFORMED,
    NOT_ALLOWED,
    POISON,
    UNDECODABLE,
    Failure,
    FailurePolicy,
    poison_protection_problem,
)
from kq.core._leases import LeaseKeeper
from kq.core._message import Delivery
from kq.core._numbers import check_number, check_whole_number
from kq.core._resources import MemoryGauge
from kq.core._signing import Signer, Verifier

logger = logging.getLogger(__name__)

#: Largest memory limit accepted, in MB (a petabyte: only there to refuse nonsense).
MAX_MEGABYTES = 1e9


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
        handler: Handler,
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
        self.failures = FailurePolicy(
            driver,
            self.spec,
            self.capabilities,
            handler,
            self.dispatcher,
            signer=signer,
            verifier=verifier,
            wait=self._stop.wait,
        )

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
        keeper = LeaseKeeper() if self.capabilities.lease_extension else None
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

    def _handle(self, consumer: Consumer, delivery: Delivery, keeper: LeaseKeeper | None) -> None:
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
        self, consumer: Consumer, delivery: Delivery, keeper: LeaseKeeper | None, started: float
    ) -> None:
        try:
            outcome = self._process(delivery)
        finally:
            # Settle only once the keeper has let go of the delivery, so no extension races the ack.
            if keeper is not None:
                keeper.release()
        if isinstance(outcome, Failure):
            self.failures.handle(consumer, delivery, outcome, started, self.stats)
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
                        handler=self.handler,
                        result=outcome.result,
                        duration=duration,
                    )
                )

    def _process(self, delivery: Delivery) -> _Success | _Vetoed | Failure:
        if delivery.defect is not None:
            # The driver could not read all of it: nothing about it can be trusted, so nothing runs.
            return Failure(None, MessageFormatError(delivery.defect), MALFORMED)
        # Authenticity first: a forged delivery count must not decide why a forged message is refused.
        if self.verifier is not None:
            try:
                self.verifier.verify(delivery, self.signed_for)
            except SignatureError as exc:
                return Failure(None, exc, exc.reason)
        limit = self.spec.max_deliveries
        # A count of receives also grows with releases and browses: it cannot prove a handler crashed.
        if limit and delivery.delivery_count > limit and self.capabilities.delivery_count != "receives":
            # Delivered again and again without being settled: its handler kills or hangs the worker.
            # Handling it once more would do the same; keep it aside instead.
            error = KqError(
                f"delivered {delivery.delivery_count} times, more than max_deliveries = {limit}: a worker "
                "died or lost its connection while handling it each time"
            )
            return Failure(None, error, POISON)
        try:
            body = self.handler.decode(delivery)
        except MessageFormatError as exc:
            return Failure(None, exc, UNDECODABLE)
        except Exception as exc:  # a consumer's own decode() may fail in other ways: still never a crash
            return Failure(None, exc, UNDECODABLE)
        if self.dispatcher.has_listeners(MessageReceived.name):
            event = self.dispatcher.dispatch(
                MessageReceived(delivery=delivery, body=body, handler=self.handler)
            )
            if event.vetoed_by is not None:
                return _Vetoed(event.vetoed_by)
        try:
            return _Success(body, self.handler.consume(body, delivery))
        except MessageFormatError as exc:
            return Failure(body, exc, INVALID)
        except NotAllowedError as exc:
            return Failure(body, exc, NOT_ALLOWED)
        except Exception as exc:
            return Failure(body, exc, FAILED)


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
