"""The consume loop: receive, check, decode, announce, handle, settle; repeat until told to stop.

The loop owns loop control — limits (:mod:`kq.core._limits`), stop requests and signals
(:mod:`kq.core._signals`), reconnection with backoff (:mod:`kq.core._reconnect`) — and the message
pipeline. What happens to a delivery that could not be handled is the failure policy's
(:mod:`kq.core._failure_policy`); keeping the lease of a long handler's delivery is the lease keeper's
(:mod:`kq.core._leases`); stopping a handler call that runs past its time limit is the call timer's
(:mod:`kq.core._time_limit`). Several queues in priority order are :mod:`kq.core._priority`'s, built
of one :class:`ConsumeLoop` per queue.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeAlias

from kq.core._activity import ActivityLog
from kq.core._driver import Driver
from kq.core._driver_consumer import Consumer
from kq.core._errors import HandlerTimeoutError, MessageFormatError, NotAllowedError
from kq.core._events import EventDispatcher, MessageConsumed, MessageReceived
from kq.core._failure_policy import FailurePolicy
from kq.core._failures import (
    FAILED,
    INVALID,
    NOT_ALLOWED,
    TIMEOUT,
    UNDECODABLE,
    Failure,
    refusal,
)
from kq.core._leases import LeaseKeeper
from kq.core._limits import Limits, LimitWatch
from kq.core._message import Delivery
from kq.core._reconnect import Connection, ReceiveError, connection_errors
from kq.core._signals import StopSignals
from kq.core._signing import Signer, Verifier
from kq.core._stats import LoopStats
from kq.core._time_limit import CallTimer, can_enforce
from kq.core.handlers._base import Handler

logger = logging.getLogger(__name__.replace("._", "."))


class ConsumeLoop:
    """Consumes one logical queue with one handler.

    Args:
        driver: The driver instance holding the queue.
        queue: Logical queue name.
        handler: The handler that does the work.
        dispatcher: Event dispatcher (listeners); optional.
        routing_key: Binding key overriding the queue's configured ones.
        limits: When the loop stops by itself (messages, time, memory, failures, custom checks).
        poll_interval: Longest single wait in ``receive`` (a consumer that :meth:`stop` can wake may
            wait its longer ``idle_wait``); with a consumer that cannot be woken, bounds how late a
            stop request is noticed.
        prefetch: Deliveries the broker may hand out ahead of time.
        max_backoff: Longest wait between reconnection attempts, in seconds.
        verifier: When given, every message must carry a valid signature for one of ``signed_for``
            (checked before the body is decoded).
        signed_for: The queues a message may be signed for (default: this one).
        signer: Signs the copies of retried messages (new nonce, valid from when they are due).
        handle_signals: Whether :meth:`run`, on the main thread, handles SIGTERM and SIGINT: the first
            stops after the current message, a second one abandons it (it is redelivered).
        grace: After the first signal, seconds the current message may still take before it is
            abandoned (0: no limit).
        summary_interval: Least seconds between the INFO lines that count the messages handled
            (each message is logged at DEBUG; failures at WARNING or ERROR, one line each); 0 logs
            each handled message at INFO instead (see :mod:`kq.core._activity`).
        burst: Stop once the queue is drained: as soon as one receive of ``poll_interval`` seconds (not
            the consumer's longer ``idle_wait``) returns nothing.
        handler_timeout: Seconds one handler call may run before it is interrupted and the message
            fails with reason ``timeout`` (0: the handler's own :attr:`~kq.core.handlers.Handler.time_limit`,
            if any). Enforced only when the loop runs on the main thread (:mod:`kq.core._time_limit`).
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
        handle_signals: bool = True,
        grace: float = 0.0,
        summary_interval: float = 10.0,
        burst: bool = False,
        handler_timeout: float = 0.0,
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
        self.handle_signals = handle_signals
        self.grace = grace
        self.activity = ActivityLog(queue, summary_interval)
        self.burst = burst
        #: Seconds one handler call may run (``None``: no limit).
        self.time_limit: float | None = handler_timeout or handler.time_limit or None
        self.connection_errors = connection_errors(driver)
        self.stats = LoopStats()
        self.stop_reason: str | None = None
        #: Whether the last run ended by abandoning the message in progress (second signal, grace over).
        self.abandoned = False
        self._stop = threading.Event()
        self._call: Callable[[Any, Delivery], Any] = handler.consume
        self._connection = Connection(
            driver,
            queue,
            routing_key=routing_key,
            prefetch=prefetch,
            max_backoff=max_backoff,
            wait=self._stop.wait,
        )
        self.failures = FailurePolicy(
            driver,
            self.spec,
            self.capabilities,
            handler,
            self.dispatcher,
            signer=signer,
            verifier=verifier,
            wait=self._stop.wait,
            connection_errors=self.connection_errors,
        )

    def stop(self, reason: str) -> None:
        """Ask the loop to stop after the current message (safe from another thread)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()
        self._connection.wake()

    def run(self) -> str:
        """Consume until a limit is reached, :meth:`stop` is called or a stop signal comes; return why.

        After a second stop signal, or once the grace period ran out, the message in progress is
        abandoned: it is left unsettled for the broker to deliver again, :attr:`abandoned` is set, and
        the reason says what happened.
        """
        self.stats = LoopStats()
        reason, abandoned = consume_with_signals(self._consume, self.stop, self.grace, self.handle_signals)
        self.abandoned = abandoned is not None
        if abandoned is not None:
            logger.warning(
                "queue %s: %s; the message in progress was abandoned and will be redelivered",
                self.queue,
                abandoned,
            )
            return abandoned
        self.log_stopped(reason)
        return reason

    def log_stopped(self, reason: str) -> None:
        """The INFO line saying why this queue's consuming stopped, with its counts."""
        logger.info(
            "stopped consuming queue %s because: %s (%d consumed, %d failed, %d vetoed)",
            self.queue,
            reason,
            self.stats.consumed,
            self.stats.failed,
            self.stats.vetoed,
        )

    def announce(self) -> None:
        """Say at INFO what is consumed, and warn about what the queue's settings cannot do."""
        logger.info(
            "consuming queue %s on driver %s with the %s consumer",
            self.queue,
            self.driver.name,
            self.handler.kind or type(self.handler).__name__,
        )
        self.failures.warn_if_unprotected()

    def _consume(self) -> str:
        watch = LimitWatch(self.limits, self.queue)
        keeper = LeaseKeeper() if self.capabilities.lease_extension else None
        self.announce()
        # Bound once: with --burst, the consumer's longer idle wait would only delay the exit.
        idle_wait = (lambda poll_interval: poll_interval) if self.burst else self._connection.idle_wait
        try:
            with limited_calls([self]):
                while not self._stop.is_set():
                    reason = watch.reached(self.stats)
                    if reason is not None:
                        self.stop(reason)
                        break
                    try:
                        wait = watch.wait_bound(idle_wait(self.poll_interval))
                        if self._stop.is_set():  # asked while the consumer was being built: not woken
                            break
                        delivery = self._connection.receive(wait)
                        if delivery is not None:
                            self.stats.received += 1
                            self._handle(self._connection.open(), delivery, keeper)
                            self.activity.handled(self.stats)
                        else:
                            self.activity.idle(self.stats)
                            if self.burst and wait >= self.poll_interval:
                                self.stop(DRAINED)
                        self._connection.backoff.reset()
                    except self.connection_errors as exc:
                        self.stats.reconnects += 1
                        self._connection.lost(exc)
                    except ReceiveError as fault:
                        self.stats.reconnects += 1
                        self._connection.lost(fault.error, driver_fault=True)
        finally:
            if keeper is not None:
                keeper.shutdown()
            self.close()
        return self.stop_reason or "stop requested"

    def receive_one(self, wait: float) -> Delivery | None:
        """One receive, waiting at most ``wait`` seconds, for a loop of several queues
        (:mod:`kq.core._priority`), which handles the connection errors this raises (the driver's, and
        :class:`~kq.core._reconnect.ReceiveError`)."""
        delivery = self._connection.receive(wait)
        self._connection.backoff.reset()
        if delivery is None:
            self.activity.idle(self.stats)
        return delivery

    def handle_one(self, delivery: Delivery, keeper: LeaseKeeper | None) -> None:
        """Handle and settle ``delivery``, received by :meth:`receive_one`."""
        self.stats.received += 1
        self._handle(self._connection.open(), delivery, keeper)
        self.activity.handled(self.stats)

    def release(self) -> None:
        """Close the consumer, so that what it leased ahead goes back to the queue at once; the next
        receive builds a new one."""
        self._connection.close()

    def drop(self, exc: BaseException, *, driver_fault: bool = False) -> float:
        """Close the consumer after a lost connection or a driver fault; the seconds to wait before the
        next attempt (without waiting them: a loop of several queues serves the others meanwhile)."""
        self.stats.reconnects += 1
        return self._connection.drop(exc, driver_fault=driver_fault)

    def close(self) -> None:
        """Close the consumer (unsettled deliveries go back to the broker) and the handler."""
        try:
            self._connection.close()
        finally:
            self.handler.close()

    def _handle(self, consumer: Consumer, delivery: Delivery, keeper: LeaseKeeper | None) -> None:
        started = time.monotonic()
        if keeper is not None:
            keeper.watch(consumer, delivery)
        try:
            try:
                outcome = self._process(delivery)
            finally:
                # Settle only once the keeper has let go of the delivery, so no extension races the ack.
                if keeper is not None:
                    keeper.release()
            self._settle(consumer, delivery, outcome, started)
        except BaseException as exc:
            # Not settled, or settled on a connection that broke (the ack may never have reached the
            # broker): the broker will deliver it again, and that is not a replay.
            if self.verifier is not None and (
                not delivery.settled or isinstance(exc, self.connection_errors)
            ):
                self.verifier.forget(delivery)
            raise

    def _settle(self, consumer: Consumer, delivery: Delivery, outcome: Outcome, started: float) -> None:
        if isinstance(outcome, Failure):
            self.failures.handle(consumer, delivery, outcome, started, self.stats)
            return
        consumer.ack(delivery)
        level = self.activity.each_level
        if isinstance(outcome, MessageReceived):
            self.stats.vetoed += 1
            logger.log(
                level,
                "queue %s message %s: skipped and acknowledged, vetoed: %s",
                delivery.queue,
                delivery.message_id,
                outcome.vetoed_by,
            )
            return
        outcome.duration = time.monotonic() - started
        self.stats.consumed += 1
        if logger.isEnabledFor(level):  # describing the body costs more than the check
            logger.log(
                level,
                "queue %s message %s: %s consumed in %.3fs",
                delivery.queue,
                delivery.message_id,
                self.handler.describe(outcome.body),
                outcome.duration,
            )
        if self.dispatcher.has_listeners(MessageConsumed.name):
            self.dispatcher.dispatch(outcome)

    def _process(self, delivery: Delivery) -> Outcome:
        """Check, decode, announce and handle ``delivery``; what happened decides how it is settled."""
        refused = refusal(delivery, self.verifier, self.signed_for, self.spec, self.capabilities)
        if refused is not None:
            return refused
        try:
            body = self.handler.decode(delivery)
        except Exception as exc:  # a handler's own decode() may fail in other ways: still never a crash
            return Failure(None, exc, UNDECODABLE)
        if self.dispatcher.has_listeners(MessageReceived.name):
            received = self.dispatcher.dispatch(
                MessageReceived(delivery=delivery, body=body, handler=self.handler)
            )
            if received.vetoed_by is not None:
                return received
        try:
            result = self._call(body, delivery)
        except HandlerTimeoutError as exc:
            return Failure(body, exc, TIMEOUT)
        except MessageFormatError as exc:
            return Failure(body, exc, INVALID)
        except NotAllowedError as exc:
            return Failure(body, exc, NOT_ALLOWED)
        except Exception as exc:
            return Failure(body, exc, FAILED)
        return MessageConsumed(delivery=delivery, body=body, handler=self.handler, result=result)


@contextlib.contextmanager
def limited_calls(loops: Collection[ConsumeLoop]) -> Iterator[None]:
    """Enforce the :attr:`~ConsumeLoop.time_limit` of each loop's handler calls for the duration of
    the block, with one :class:`~kq.core._time_limit.CallTimer` for them all; off the main thread,
    where it cannot be enforced, say so once per loop."""
    timed = [(loop, loop.time_limit) for loop in loops if loop.time_limit is not None]
    if not timed:
        yield
        return
    if not can_enforce():
        for loop, limit in timed:
            logger.warning(
                "queue %s: the handler time limit of %gs cannot be enforced: the loop does not run on "
                "the main thread, where signals arrive; a hung call blocks this loop",
                loop.queue,
                limit,
            )
        yield
        return
    with CallTimer(min(limit for _, limit in timed)) as timer:
        for loop, limit in timed:
            loop._call = timer.wrap(loop.handler.consume, limit)
        try:
            yield
        finally:
            for loop, _ in timed:
                loop._call = loop.handler.consume


#: The stop reason of a ``burst`` loop that found its queue (all its queues) empty.
DRAINED = "drained: no message ready"

#: What handling a delivery came to: consumed, vetoed by a ``message_received`` listener, or failed.
Outcome: TypeAlias = MessageConsumed | MessageReceived | Failure


def consume_with_signals(
    consume: Callable[[], str], stop: Callable[[str], None], grace: float, handle_signals: bool
) -> tuple[str, str | None]:
    """Run ``consume`` with SIGTERM/SIGINT asking ``stop`` (unless not ``handle_signals``); return its
    reason and, when the message in progress was abandoned (second signal, ``grace`` ran out), why."""
    signals = StopSignals(stop, grace=grace, enabled=handle_signals)
    reason = ""  # an abandoned message ends the block without a reason from consume(): see abandoned
    with signals:
        reason = consume()
    return reason, signals.abandoned
