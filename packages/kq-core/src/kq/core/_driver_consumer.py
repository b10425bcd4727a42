"""The driver-level :class:`Consumer`: bounded waits for deliveries, and settling them once.

The public methods keep the state rules (owner, settled once, open, delays the driver can honour, lapsed
leases logged rather than raised where the message is safe); drivers implement the ``_hooks``.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from kq.core._errors import ClosedError, DeliveryStateError, LeaseLostError, UnsupportedOperationError
from kq.core._message import Delivery
from kq.core._numbers import check_number
from kq.core._spec import QueueSpec

if TYPE_CHECKING:
    from kq.core._driver import Driver

logger = logging.getLogger(__name__.replace("._", "."))


class Consumer(abc.ABC):
    """Receives deliveries from one logical queue, one bounded wait at a time."""

    #: Seconds a delivery stays reserved for this consumer unless extended (``None``: until settled or
    #: disconnected). The consume loop extends it while a long handler runs.
    lease_duration: float | None = None
    #: Whether :meth:`wake` cuts a blocked :meth:`receive` short. A driver that sets it waits through
    #: :meth:`_pause` or checks :attr:`woken` in its own waits (and wakes them in :meth:`_wake`); the
    #: conformance suite holds it to that.
    wakeable: bool = False
    #: Seconds one idle wait should last when longer waits save requests (SQS: its long-poll
    #: ``wait_time``); only honoured when :attr:`wakeable`. ``None``: the loop's ``poll_interval``.
    idle_wait: float | None = None

    def __init__(
        self, driver: Driver, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int
    ) -> None:
        self.driver = driver
        self.queue = queue
        self.routing_keys = routing_keys
        self.prefetch = prefetch
        self.closed = False
        self._woken = False
        self._wakeup = threading.Condition(threading.RLock())  # reentrant: wake() may run in a signal handler

    @property
    def woken(self) -> bool:
        """Whether :meth:`wake` asked the receive in progress to return."""
        return self._woken

    def wake(self) -> None:
        """Make the receive in progress, or the next one, return soon (``None``, or a delivery it already
        has); a no-op where the driver is not :attr:`wakeable` (the receive returns at its timeout).

        Safe from another thread and from a signal handler; the consume loop calls it from ``stop``.
        """
        with self._wakeup:
            self._woken = True
            self._wakeup.notify_all()
        self._wake()

    def receive(self, timeout: float) -> Delivery | None:
        """Wait at most ``timeout`` seconds for the next delivery; ``None`` when none came."""
        if self.closed:
            raise ClosedError(f"the consumer of queue '{self.queue.name}' is closed")
        if timeout < 0:
            raise ValueError(f"timeout must not be negative, not {timeout}")
        if self._woken:
            self._woken = False
            return None
        try:
            delivery = self._receive(timeout)
        finally:
            self._woken = False
        if delivery is None:
            return None
        if delivery.lease_expires is not None and delivery.lease_expires <= time.monotonic():
            # A driver bug (a buffered delivery handed out after its lease lapsed): another consumer may
            # hold it now, so this one must not run it. It comes back by itself; nothing is lost.
            logger.warning(
                "queue %s message %s: the driver handed over a delivery whose lease had already "
                "lapsed; skipping it (it is redelivered to whoever holds it now)",
                self.queue.name,
                delivery.message_id,
            )
            return None
        delivery.owner = self
        return delivery

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery``: the broker forgets the message.

        If its lease was lost meanwhile (the driver raises :class:`LeaseLostError`), the copy another
        consumer now holds is left alone and a warning says the message may run again.
        """
        self._settle(delivery, "ack")
        try:
            self._ack(delivery)
        except LeaseLostError as exc:
            self._lease_lost(delivery, "acknowledgement", exc)

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge several deliveries; drivers with batch calls (SQS) make it one round trip per batch."""
        for delivery in deliveries:
            self._settle(delivery, "ack")
        try:
            self._ack_many(deliveries)
        except LeaseLostError as exc:
            self._lease_lost(None, "acknowledgement", exc)

    def reject(self, delivery: Delivery, *, requeue: bool = True, delay: float = 0.0) -> None:
        """Reject ``delivery``.

        Args:
            delivery: The delivery to reject.
            requeue: Put the message back on the queue (with its delivery count increased on the next
                delivery); ``False`` drops it, or hands it to the broker's dead-letter queue where one is
                configured natively.
            delay: With ``requeue``, seconds before the message becomes visible again.
        """
        if requeue:
            self._check_delay(delay, requeue=True)
        else:
            check_number(delay, "delay")
        self._settle(delivery, "reject")
        try:
            self._reject(delivery, requeue, delay)
        except LeaseLostError as exc:
            self._lease_lost(delivery, "rejection", exc)

    def retry(self, delivery: Delivery, headers: Mapping[str, str], *, delay: float = 0.0) -> None:
        """Put a copy of ``delivery`` with ``headers`` back on this consumer's queue, visible after
        ``delay`` seconds, then settle the original.

        The copy keeps the message id, body, content type and routing key, and goes to this queue only
        (not to other queues sharing an exchange). If queueing the copy fails, the delivery stays
        unsettled so that the caller can still dead-letter or reject it. Where the driver declares
        ``retry_in_place`` (:class:`Capabilities`), the delivery itself comes back after ``delay``,
        ahead of later messages, with ``kq-attempt`` counted by the driver and the other headers
        unchanged; ``delay`` is then bounded as a requeue's.
        """
        in_place = self.driver.capabilities_for(self.queue.name).retry_in_place
        self._check_delay(delay, requeue=in_place)
        self._check_owned(delivery, "retry")
        try:
            self._retry(delivery, dict(headers), delay)
        except LeaseLostError as exc:
            # The copy is queued; the original's lease lapsed before it could be settled.
            delivery.settled = True
            self._lease_lost(delivery, "acknowledgement of the retried original", exc)
            return
        delivery.settled = True

    def extend(self, delivery: Delivery, seconds: float) -> None:
        """Keep ``delivery`` invisible to other consumers for ``seconds`` more (a no-op where unneeded).

        Raises:
            LeaseLostError: the lease had lapsed; another consumer may hold the message now.
        """
        self._check_extendable(delivery)
        self._extend(delivery, seconds)
        if delivery.lease_expires is not None:
            delivery.lease_expires = time.monotonic() + seconds

    def extend_many(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Extend several deliveries (one round trip per batch where the broker has batch calls).

        Raises:
            LeaseLostError: some leases had lapsed (``exc.deliveries`` says which); the others were
                extended.
        """
        for delivery in deliveries:
            self._check_extendable(delivery)
        until = time.monotonic() + seconds
        try:
            self._extend_many(deliveries, seconds)
        except LeaseLostError as exc:
            lost = {id(d) for d in exc.deliveries}
            _move_leases([d for d in deliveries if id(d) not in lost], until)
            raise
        _move_leases(deliveries, until)

    def _check_extendable(self, delivery: Delivery) -> None:
        if delivery.owner is not self or delivery.settled:
            raise DeliveryStateError(
                f"cannot extend {delivery!r}: it is settled or not owned by this consumer"
            )

    def _lease_lost(self, delivery: Delivery | None, what: str, exc: LeaseLostError) -> None:
        ids = [d.message_id for d in exc.deliveries] or ([delivery.message_id] if delivery else [])
        logger.warning(
            "queue %s message %s: the %s came after the lease had lapsed (%s); the copy another consumer "
            "may hold was left alone, so the message may run again",
            self.queue.name,
            ", ".join(ids) or "?",
            what,
            exc,
        )

    def close(self) -> None:
        """Stop consuming and release the deliveries received but not settled."""
        if not self.closed:
            self.closed = True
            self._close()

    def _check_delay(self, delay: float, *, requeue: bool) -> None:
        check_number(delay, "delay")
        problem = self.driver.capabilities_for(self.queue.name).delay_problem(delay, requeue=requeue)
        if problem:
            raise UnsupportedOperationError(
                f"driver '{self.driver.name}' {problem} on queue '{self.queue.name}' (asked for {delay:g}s)"
            )

    def _settle(self, delivery: Delivery, what: str) -> None:
        self._check_owned(delivery, what)
        delivery.settled = True

    def _check_owned(self, delivery: Delivery, what: str) -> None:
        if delivery.owner is not self:
            raise DeliveryStateError(f"cannot {what} {delivery!r}: it was received by another consumer")
        if delivery.settled:
            raise DeliveryStateError(f"cannot {what} {delivery!r}: it is already settled")
        if self.closed:
            raise ClosedError(f"cannot {what} {delivery!r}: the consumer is closed")

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def _receive(self, timeout: float) -> Delivery | None:
        """Return the next delivery within ``timeout`` seconds, or ``None``."""

    @abc.abstractmethod
    def _ack(self, delivery: Delivery) -> None:
        """Acknowledge; raise :class:`LeaseLostError` (and change nothing) if the lease had lapsed."""

    def _ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge several deliveries; the default acknowledges them one by one."""
        _one_by_one(self._ack, deliveries)

    @abc.abstractmethod
    def _reject(self, delivery: Delivery, requeue: bool, delay: float) -> None:
        """Reject, requeueing after ``delay`` seconds when ``requeue``; raise :class:`LeaseLostError`
        (and change nothing) if the lease had lapsed."""

    def _retry(self, delivery: Delivery, headers: dict[str, str], delay: float) -> None:
        """Queue the copy, then acknowledge the original. The default publishes through the driver's
        producer for this logical queue, which suits brokers that address queues directly (sqlite,
        SQS); brokers that route through exchanges override it to reach this queue only. A driver that
        declares ``retry_in_place`` overrides it to check ``headers`` (``delivery.to_message(headers=
        headers)`` raises what a copy's publish would) and make the delivery visible again after
        ``delay``."""
        self.driver.producer(self.queue.name).send(delivery.to_message(headers=headers, delay=delay))
        self._ack(delivery)

    def _extend(self, delivery: Delivery, seconds: float) -> None:  # noqa: B027 - optional hook
        """Extend the delivery's lease to ``seconds`` from now (no-op by default); raise
        :class:`LeaseLostError` (and change nothing) if the lease had lapsed."""

    def _extend_many(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Extend several leases; the default extends them one by one."""
        _one_by_one(lambda delivery: self._extend(delivery, seconds), deliveries)

    def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless :meth:`wake` is called meanwhile; return whether it was."""
        with self._wakeup:
            if not self._woken and seconds > 0:
                self._wakeup.wait(seconds)
            return self._woken

    def _wake(self) -> None:  # noqa: B027 - optional hook
        """Interrupt the driver's own waits (a no-op by default: :meth:`_pause` is woken already).

        Called from another thread, or from a signal handler on the receiving thread: never block.
        """

    @abc.abstractmethod
    def _close(self) -> None:
        """Release unsettled deliveries and connections."""


def _one_by_one(settle: Callable[[Delivery], None], deliveries: Sequence[Delivery]) -> None:
    """Apply ``settle`` to each delivery; the lapsed leases are raised together at the end."""
    lost: list[Delivery] = []
    for delivery in deliveries:
        try:
            settle(delivery)
        except LeaseLostError:
            lost.append(delivery)
    if lost:
        raise LeaseLostError(f"{len(lost)} of {len(deliveries)} leases had lapsed", lost)


def _move_leases(deliveries: Iterable[Delivery], until: float) -> None:
    for delivery in deliveries:
        if delivery.lease_expires is not None:
            delivery.lease_expires = until
