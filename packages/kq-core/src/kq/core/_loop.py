"""The consume loop: receive, check, decode, announce, handle, settle; repeat until told to stop.

The loop owns loop control — limits (:mod:`kq.core._limits`), stop requests and signals
(:mod:`kq.core._signals`), reconnection with backoff (:mod:`kq.core._reconnect`) — and the message
pipeline. What happens to a delivery that could not be handled is the failure policy's
(:mod:`kq.core._failure_policy`); keeping the lease of a long handler's delivery is the lease keeper's
(:mod:`kq.core._leases`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from typing import TypeAlias

from kq.core._activity import ActivityLog
from kq.core._driver import Driver
from kq.core._driver_consumer import Consumer
from kq.core._errors import MessageFormatError, NotAllowedError
from kq.core._events import EventDispatcher, MessageConsumed, MessageReceived
from kq.core._failure_policy import FailurePolicy
from kq.core._failures import (
    FAILED,
    INVALID,
    NOT_ALLOWED,
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
from kq.core.handlers._base import Handler

logger = logging.getLogger(__name__)


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
        self.connection_errors = connection_errors(driver)
        self.stats = LoopStats()
        self.stop_reason: str | None = None
        #: Whether the last run ended by abandoning the message in progress (second signal, grace over).
        self.abandoned = False
        self._stop = threading.Event()
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
        signals = StopSignals(self.stop, grace=self.grace, enabled=self.handle_signals)
        with signals:
            reason = self._consume()
        self.abandoned = signals.abandoned is not None
        if signals.abandoned is not None:
            logger.warning(
                "queue %s: %s; the message in progress was abandoned and will be redelivered",
                self.queue,
                signals.abandoned,
            )
            return signals.abandoned
        logger.info(
            "stopped consuming queue %s because: %s (%d consumed, %d failed, %d vetoed)",
            self.queue,
            reason,
            self.stats.consumed,
            self.stats.failed,
            self.stats.vetoed,
        )
        return reason

    def _consume(self) -> str:
        watch = LimitWatch(self.limits, self.queue)
        keeper = LeaseKeeper() if self.capabilities.lease_extension else None
        logger.info(
            "consuming queue %s on driver %s with the %s consumer",
            self.queue,
            self.driver.name,
            self.handler.kind or type(self.handler).__name__,
        )
        self.failures.warn_if_unprotected()
        try:
            while not self._stop.is_set():
                reason = watch.reached(self.stats)
                if reason is not None:
                    self.stop(reason)
                    break
                try:
                    wait = watch.wait_bound(self._connection.idle_wait(self.poll_interval))
                    if self._stop.is_set():  # asked while the consumer was being built: not woken
                        break
                    delivery = self._connection.receive(wait)
                    if delivery is not None:
                        self.stats.received += 1
                        self._handle(self._connection.open(), delivery, keeper)
                        self.activity.handled(self.stats)
                    else:
                        self.activity.idle(self.stats)
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
            self._connection.close()
            self.handler.close()
        return self.stop_reason or "stop requested"

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
            result = self.handler.consume(body, delivery)
        except MessageFormatError as exc:
            return Failure(body, exc, INVALID)
        except NotAllowedError as exc:
            return Failure(body, exc, NOT_ALLOWED)
        except Exception as exc:
            return Failure(body, exc, FAILED)
        return MessageConsumed(delivery=delivery, body=body, handler=self.handler, result=result)


#: What handling a delivery came to: consumed, vetoed by a ``message_received`` listener, or failed.
Outcome: TypeAlias = MessageConsumed | MessageReceived | Failure
