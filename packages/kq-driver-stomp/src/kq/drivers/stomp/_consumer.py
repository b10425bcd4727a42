"""Consuming over STOMP: one connection and one ``client-individual`` subscription per consumer.

The broker pushes up to ``prefetch`` unacknowledged messages (ActiveMQ ``activemq.prefetchSize``,
RabbitMQ ``prefetch-count``); stomp.py's receiver thread buffers their frames and ``receive(timeout)``
waits on that buffer (``wake()`` cuts the wait short: the consumer is ``wakeable``).

Settling:

- ``ack``: an ACK frame.
- ``reject(requeue=False)``: an ACK as well. The consume loop has copied the message to its
  dead-letter queue before; an ActiveMQ NACK would move it to ``ActiveMQ.DLQ`` (or drop it) and a
  RabbitMQ NACK would requeue it.
- ``reject(requeue=True, delay)``: RabbitMQ: NACK (requeued at once; the flavour declares no delays).
  ActiveMQ, whose NACK never requeues: in one STOMP transaction, SEND a copy to the same destination
  carrying the count in ``kq-redelivery`` (and ``AMQ_SCHEDULED_DELAY`` when delayed, with the
  scheduler), ACK the original, COMMIT with a receipt; the copy's delivery count is 2.
- ``retry`` on ActiveMQ: the same transaction with the retry's headers (atomic: the copy is queued and
  the original acknowledged, or neither); on RabbitMQ the default (publish the copy to the queue, then
  ACK).

A consumer's own routing key, narrower than its queue's ``routing_keys``, becomes an ActiveMQ selector
on ``kq_routing_key`` (RabbitMQ refuses it: ``consumer_routing = "none"``). A message whose key matches
none of the consumer's keys (a foreign producer's) is handed out with a defect, so the loop
dead-letters it.

A lost connection (a closed socket, a heart-beat timeout, an ERROR frame) makes the next receive or
settlement raise :class:`BrokerUnavailableError`; the consume loop then builds a new consumer, and the
broker redelivers what this one held (its ack ids died with its connection). Closing DISCONNECTs, which
gives the unacknowledged messages back at once.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, NamedTuple

from kq.core.driver import (
    BrokerUnavailableError,
    Consumer,
    Delivery,
    QueueSpec,
    matches_any,
)
from kq.drivers.stomp._connection import Frame, Session, error_text
from kq.drivers.stomp._errors import StompBrokerError
from kq.drivers.stomp._wire import ACTIVEMQ, decode, encode, requeue_headers, selector_for

if TYPE_CHECKING:
    from kq.drivers.stomp._driver import StompDriver

logger = logging.getLogger(__name__.replace("._", "."))


class Handle(NamedTuple):
    """What settles a STOMP delivery (``Delivery.handle``): its ack id and the session it came on (a
    tuple: built for every message, cheaper than a frozen dataclass)."""

    ack_id: str
    session: Session
    requeues: int = 0


class StompConsumer(Consumer):
    """Receives from one logical queue's STOMP destination."""

    driver: StompDriver
    wakeable = True

    def __init__(
        self, driver: StompDriver, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int
    ) -> None:
        super().__init__(driver, queue, routing_keys, prefetch)
        self._activemq = driver.flavour == ACTIVEMQ
        self._destination = driver.destination(queue.name)
        configured = tuple(queue.routing_keys) or ("#",)
        narrowed = (tuple(routing_keys) or ("#",)) != configured
        self.selector = selector_for(routing_keys) if narrowed and self._activemq else None
        self._frames: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition(threading.RLock())  # reentrant: wake() may run in a signal handler
        self._lock = threading.Lock()  # one transaction at a time
        self._subscription = uuid.uuid4().hex
        self._session = driver.session(f"consume {queue.name}", self._on_message, self._wake)
        headers: dict[str, str] = {}
        if self._activemq:
            headers["activemq.prefetchSize"] = str(prefetch)
            if self.selector is not None:
                headers["selector"] = self.selector
        else:
            headers["prefetch-count"] = str(prefetch)
        receipt = f"kq-subscribe-{self._subscription}"
        headers["receipt"] = receipt
        try:
            self._session.call(
                "subscribe",
                destination=self._destination,
                id=self._subscription,
                ack="client-individual",
                headers=headers,
            )
            self._confirm_subscription(receipt)
        except BaseException:
            self._session.abort()
            raise
        logger.debug(
            "queue %s: subscribed to %s on %s (prefetch %d%s)",
            queue.name,
            self._destination,
            self._session.where(),
            prefetch,
            f", selector {self.selector}" if self.selector else "",
        )

    def _confirm_subscription(self, receipt: str) -> None:
        """Wait for the broker's receipt of SUBSCRIBE: a refused destination or selector is an error
        now, not a connection closed under the first receive.

        Raises:
            StompBrokerError: the broker refused the subscription (its ERROR frame's words).
            BrokerUnavailableError: the connection was lost, or no receipt came within receipt_timeout.
        """
        confirmed, error = self._session.wait_receipts([receipt], self.driver.settings.receipt_timeout)
        if error is not None:
            raise StompBrokerError(
                f"queue {self.queue.name}: the broker refused to subscribe to {self._destination}: "
                f"{error_text(error)}",
                broker_message=str(error.headers.get("message", "")),
            )
        if receipt not in confirmed:
            self._session.check()
            raise BrokerUnavailableError(
                f"queue {self.queue.name}: no receipt for the subscription to {self._destination} within "
                f"{self.driver.settings.receipt_timeout:g}s from {self._session.where()}"
            )

    # -- receiving ---------------------------------------------------------------------------------

    def _on_message(self, frame: Frame) -> None:
        with self._cond:
            self._frames.append(frame)
            self._cond.notify_all()

    def _receive(self, timeout: float) -> Delivery | None:
        if self._frames and not self._session.troubled:
            # A buffered frame: no lock needed (deque.popleft is atomic, only this thread takes frames).
            return self._delivery(self._frames.popleft())
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._session.troubled:
                    self._check_session()
                if self._frames:
                    frame = self._frames.popleft()
                    break
                if self.woken:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
        return self._delivery(frame)

    def _check_session(self) -> None:
        """Raise when the connection is lost or the broker sent an ERROR frame (it closes it then)."""
        errors = self._session.take_errors()
        if errors:
            self._session.abort()
            raise BrokerUnavailableError(
                f"queue {self.queue.name}: the broker at {self._session.where()} sent an ERROR frame and "
                f"closes the connection: {error_text(errors[0])}"
            )
        self._session.check()

    def _delivery(self, frame: Frame) -> Delivery:
        found = decode(frame.headers, frame.body)
        defects = found.defects  # a list of this frame's own
        if not matches_any(self.routing_keys, found.routing_key):
            defects.append(
                f"routing key {found.routing_key!r} matches none of the consumer's routing keys "
                f"{list(self.routing_keys)} (sent by a producer that does not route as kq does)"
            )
        return Delivery(
            body=found.body,
            content_type=found.content_type,
            headers=found.headers,
            routing_key=found.routing_key,
            message_id=found.message_id,
            queue=self.queue.name,
            delivery_count=found.delivery_count,
            handle=Handle(found.ack_id, self._session, found.requeues),
            defect="; ".join(defects) or None,
        )

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- settling ----------------------------------------------------------------------------------

    def _session_of(self, delivery: Delivery) -> Session:
        """The live session ``delivery`` came on.

        Raises:
            BrokerUnavailableError: that connection is gone (its ack id died with it; the broker
                redelivers the message).
        """
        handle: Handle = delivery.handle
        if handle.session is not self._session or not handle.session.alive:
            raise BrokerUnavailableError(
                f"queue {self.queue.name} message {delivery.message_id}: the connection it came on is lost; "
                "the broker delivers it again"
            )
        return handle.session

    def _ack(self, delivery: Delivery) -> None:
        self._session_of(delivery).settle("ACK", delivery.handle.ack_id)

    def _reject(self, delivery: Delivery, requeue: bool, delay: float) -> None:
        session = self._session_of(delivery)
        if not requeue:
            # The loop copied it to the dead-letter queue already: a NACK would requeue it (RabbitMQ) or
            # move it to ActiveMQ.DLQ.
            session.settle("ACK", delivery.handle.ack_id)
            return
        if not self._activemq:
            session.settle("NACK", delivery.handle.ack_id)
            return
        message = delivery.to_message(delay=delay)
        headers = requeue_headers(self._encode(message), delivery.handle.requeues + 1)
        self._copy_and_ack(session, delivery, message, headers, "requeue")

    def _retry(self, delivery: Delivery, headers: dict[str, str], delay: float) -> None:
        message = delivery.to_message(headers=headers, delay=delay)  # refuses what a publish would
        if not self._activemq:
            super()._retry(delivery, headers, delay)
            return
        session = self._session_of(delivery)
        self._copy_and_ack(session, delivery, message, self._encode(message), "retry")

    def _encode(self, message: Any) -> dict[str, str]:
        return encode(
            message,
            flavour=self.driver.flavour,
            now=time.time(),
            scheduler=bool(self.driver.options["scheduler"]),
        )

    def _copy_and_ack(
        self, session: Session, delivery: Delivery, message: Any, headers: dict[str, str], what: str
    ) -> None:
        """In one transaction: SEND ``message`` to this queue's destination, ACK ``delivery``, COMMIT
        (confirmed by a receipt within ``receipt_timeout``).

        Raises:
            BrokerUnavailableError: the connection was lost before the commit was confirmed (the
                broker rolls the transaction back: the original is delivered again).
            StompBrokerError: the broker refused a frame of the transaction.
        """
        transaction = f"kq-tx-{uuid.uuid4().hex}"
        receipt = f"{transaction}-commit"
        with self._lock:
            session.call("begin", transaction=transaction)
            session.send(self._destination, message.body, {**headers, "transaction": transaction})
            session.call("ack", delivery.handle.ack_id, transaction=transaction)
            session.call("commit", transaction=transaction, headers={"receipt": receipt})
            confirmed, error = session.wait_receipts([receipt], self.driver.settings.receipt_timeout)
        if receipt in confirmed:
            logger.debug(
                "queue %s message %s: %s copy queued%s and original acknowledged, in one transaction",
                self.queue.name,
                delivery.message_id,
                what,
                f" (visible in {message.delay:g}s)" if message.delay else "",
            )
            return
        if error is not None:
            raise StompBrokerError(
                f"queue {self.queue.name} message {delivery.message_id}: the broker refused the {what} "
                f"transaction: {error_text(error)}",
                broker_message=str(error.headers.get("message", "")),
            )
        session.abort()
        raise BrokerUnavailableError(
            f"queue {self.queue.name} message {delivery.message_id}: the {what} transaction was not "
            f"confirmed within {self.driver.settings.receipt_timeout:g}s ({session.lost or 'no receipt'}); "
            "the broker delivers the original again"
        )

    # -- closing -----------------------------------------------------------------------------------

    def _close(self) -> None:
        """DISCONNECT: the broker gives back what this consumer held and did not acknowledge."""
        with self._cond:
            self._frames.clear()
        self._session.close()

    def abandon(self) -> None:
        """Drop the connection without DISCONNECT and close, as a killed process would (tests)."""
        with self._cond:
            self._frames.clear()
            self.closed = True
        self._session.abort()
