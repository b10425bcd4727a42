"""Consuming several queues in priority order: ``kq consume high low``.

Each queue keeps everything of its own :class:`~kq.core.ConsumeLoop` (its driver and consumer, its
handler, signature rule, failure policy, dead-letter queue, retries, activity log); the
:class:`PriorityLoop` decides which one receives next:

- after every message it starts again from the first queue, and takes a lower queue's message only when
  every queue before it had none ready (a receive that does not wait);
- when no queue had a message, it waits up to ``poll_interval`` on the first queue, then looks at the
  others again without waiting: a message on a lower queue of an idle worker waits at most about
  ``poll_interval`` (1 s by default) before it is received, and a busy worker serves the lower queues
  only when the higher ones are empty (as Symfony Messenger's and RQ's workers do);
- the limits (``messages``, ``time``, ``memory``, ``failures``, checks) count across the queues, and a
  stop request or signal stops the whole worker after the message in progress;
- a lost connection of one queue closes its consumer, which is built again after its backoff while
  the other queues are served meanwhile;
- with ``burst``, it stops once every queue returned nothing from a receive of ``poll_interval``
  seconds in the same round.

A lower queue must not hold messages it is not going to handle soon. Only the first queue's consumer
gets ``prefetch``; the others take one message at a time. A lease driver's consumer (sqlite, SQS,
memory: ``Capabilities.lease_extension``) may still lease its next message when it acknowledges one
(the sqlite driver does, as a broker pushes the next message): when a higher queue's message comes
next, that consumer is closed first, which puts what it leased ahead back on its queue at once (it is
built again when the queue is next asked), so no message waits in a buffer while its lease runs out.
Push brokers (RabbitMQ, STOMP) lease nothing: a lower queue's consumer keeps at most one message
reserved to this worker (unacknowledged, never lost) while the higher queues keep it busy.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Sequence

from kq.core._leases import LeaseKeeper
from kq.core._limits import Limits, LimitWatch
from kq.core._loop import DRAINED, ConsumeLoop, consume_with_signals, limited_calls
from kq.core._reconnect import ReceiveError
from kq.core._stats import LoopStats

logger = logging.getLogger(__name__.replace("._", "."))


class PriorityLoop:
    """Consumes several queues, the first one first, with one handler each.

    Args:
        loops: One loop per queue, in priority order (at least two), built with ``handle_signals``
            off and no limits of their own: their ``run`` is not used, only their pieces.
        limits: When the worker stops by itself, counted across the queues.
        poll_interval: Longest wait on the first queue when no queue had a message; bounds how late
            a stop request, a lower queue's message (on an idle worker) or a reconnection is noticed.
        handle_signals: Whether :meth:`run`, on the main thread, handles SIGTERM and SIGINT (the first
            stops after the current message, a second one abandons it).
        grace: After the first signal, seconds the current message may still take (0: no limit).
        burst: Stop once every queue is drained (one receive of ``poll_interval`` returned nothing).
    """

    def __init__(
        self,
        loops: Sequence[ConsumeLoop],
        *,
        limits: Limits | None = None,
        poll_interval: float = 1.0,
        handle_signals: bool = True,
        grace: float = 0.0,
        burst: bool = False,
    ) -> None:
        if len(loops) < 2:
            raise ValueError("a priority loop consumes two queues or more")
        self.loops = tuple(loops)
        self.queues = tuple(loop.queue for loop in loops)
        self.limits = limits or Limits()
        self.poll_interval = poll_interval
        self.handle_signals = handle_signals
        self.grace = grace
        self.burst = burst
        self.stop_reason: str | None = None
        #: Whether the last run ended by abandoning the message in progress.
        self.abandoned = False
        self._stop = threading.Event()
        self._retry_at = [0.0] * len(self.loops)  # time.monotonic() before which a queue is left alone
        self._leased_ahead = [False] * len(self.loops)  # its consumer may hold a message leased ahead

    @property
    def stats(self) -> LoopStats:
        """The counters of the last run, summed over the queues."""
        total = LoopStats(started_at=min(loop.stats.started_at for loop in self.loops))
        for field in dataclasses.fields(LoopStats):
            if field.name != "started_at":
                setattr(total, field.name, sum(getattr(loop.stats, field.name) for loop in self.loops))
        return total

    def stop(self, reason: str) -> None:
        """Ask the worker to stop after the current message (safe from another thread)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()
        for loop in self.loops:
            loop.stop(reason)

    def run(self) -> str:
        """Consume until a limit is reached, :meth:`stop` is called or a stop signal comes; return why."""
        for loop in self.loops:
            loop.stats = LoopStats()
        reason, abandoned = consume_with_signals(self._consume, self.stop, self.grace, self.handle_signals)
        self.abandoned = abandoned is not None
        if abandoned is not None:
            logger.warning(
                "queues %s: %s; the message in progress was abandoned and will be redelivered",
                ", ".join(self.queues),
                abandoned,
            )
            return abandoned
        for loop in self.loops:
            loop.log_stopped(reason)
        return reason

    def _consume(self) -> str:
        watch = LimitWatch(self.limits, ", ".join(self.queues))
        leased = any(loop.capabilities.lease_extension for loop in self.loops)
        keeper = LeaseKeeper() if leased else None  # one delivery is handled at a time, whatever its queue
        keepers = [keeper if loop.capabilities.lease_extension else None for loop in self.loops]
        logger.info("consuming queues %s, in this order of priority", ", ".join(self.queues))
        for loop in self.loops:
            loop.announce()
        try:
            with limited_calls(self.loops):
                idle = False
                counted = LoopStats()  # what the limits read, across the queues
                while not self._stop.is_set():
                    counted.received = sum(loop.stats.received for loop in self.loops)
                    counted.failed = sum(loop.stats.failed for loop in self.loops)
                    reason = watch.reached(counted)
                    if reason is not None:
                        self.stop(reason)
                        break
                    outcome = self._round(watch, keepers, idle=idle)
                    if outcome is _Round.HANDLED:
                        idle = False
                    elif idle and self.burst and outcome is _Round.EMPTY:
                        self.stop(DRAINED)
                    else:
                        idle = True
        finally:
            if keeper is not None:
                keeper.shutdown()
            for loop in self.loops:
                loop.close()
        return self.stop_reason or "stop requested"

    def _round(self, watch: LimitWatch, keepers: Sequence[LeaseKeeper | None], *, idle: bool) -> _Round:
        """Look at the queues in order until one hands over a message, and handle it.

        Receives do not wait, but for the first queue that can be asked after a round that found
        nothing (``idle``): it waits up to ``poll_interval``. With ``burst``, every queue waits that
        long in such a round, so that "drained" means the same for each.
        """
        outcome = _Round.EMPTY
        waited = False
        for index, loop in enumerate(self.loops):
            if self._stop.is_set():
                return _Round.HANDLED  # the caller sees the stop
            if self._retry_at[index] > time.monotonic():
                outcome = _Round.SKIPPED  # reconnecting: not drained, whatever the others say
                continue
            wait = 0.0
            if idle and (self.burst or not waited):
                wait = watch.wait_bound(self.poll_interval)
                waited = True
            try:
                delivery = loop.receive_one(wait)
                if delivery is not None:
                    self._release_below(index)
                    loop.handle_one(delivery, keepers[index])
                    self._leased_ahead[index] = loop.capabilities.lease_extension
                    return _Round.HANDLED
            except loop.connection_errors as exc:
                self._retry_at[index] = time.monotonic() + loop.drop(exc)
                outcome = _Round.SKIPPED
            except ReceiveError as fault:
                self._retry_at[index] = time.monotonic() + loop.drop(fault.error, driver_fault=True)
                outcome = _Round.SKIPPED
        if idle and not waited:
            # Every queue is waiting to reconnect: sleep until the first may try again (a stop wakes it).
            wait = min(self._retry_at) - time.monotonic()
            self._stop.wait(watch.wait_bound(max(0.0, min(wait, self.poll_interval))))
        return outcome

    def _release_below(self, index: int) -> None:
        """Before a message of queue ``index`` is handled, close the consumers of the lower queues that
        may have leased their next message ahead (a lease driver's consumer may, when it acknowledges):
        it goes back to its queue at once instead of waiting in a buffer while its lease runs out."""
        for lower in range(index + 1, len(self.loops)):
            if self._leased_ahead[lower]:
                self._leased_ahead[lower] = False
                loop = self.loops[lower]
                logger.debug(
                    "queue %s: consumer closed, so that what it leased ahead goes back to the queue while "
                    "queue %s has messages",
                    loop.queue,
                    self.queues[index],
                )
                loop.release()


class _Round(enum.Enum):
    """What one look at the queues came to."""

    HANDLED = "a message was handled (or a stop was asked for)"
    EMPTY = "no queue had a message"
    SKIPPED = "no queue had a message, but some were not asked (reconnecting)"
