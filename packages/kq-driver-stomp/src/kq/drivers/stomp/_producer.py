"""Publishing over STOMP: SEND frames with receipts, one round trip per batch.

Every SEND carries ``persistent: true`` and a ``receipt`` header; the frames of a batch are written
one after the other, then the driver waits once, up to ``receipt_timeout``, for all their receipts.
A message counts as published only when its receipt came (so ``PublishError.failed`` means "not
confirmed": after a refused frame, ActiveMQ may still take a later frame of the batch without its receipt
reaching kq before it closes the connection). An ERROR frame (the broker refused a frame
and closes the connection), a lost connection or missing receipts raise :class:`PublishError` naming
the ids confirmed and those not; when none was confirmed because the broker could not be reached,
:class:`BrokerUnavailableError` (the consume loop reconnects).

Routing keys are emulated as an AMQP exchange routes: a message is sent only when its key matches the
queue's ``routing_keys`` (none: every message).

Each driver instance publishes through one connection (:class:`Publisher`), connected on first use and
again on the next publish after a loss; a lock serialises the batches of its producers.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kq.core.driver import BrokerUnavailableError, Message, Producer, PublishError, QueueSpec, matches_any
from kq.drivers.stomp._connection import Session, error_text
from kq.drivers.stomp._wire import encode

if TYPE_CHECKING:
    from kq.drivers.stomp._driver import StompDriver

logger = logging.getLogger(__name__.replace("._", "."))


class Publisher:
    """The publishing connection of one driver instance."""

    def __init__(self, driver: StompDriver) -> None:
        self.driver = driver
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._closed = False

    def publish(self, queue: str, destination: str, messages: Sequence[Message]) -> None:
        """Send ``messages`` to ``destination`` and wait for their receipts (one round trip).

        Raises:
            PublishError: some messages were not confirmed (it says which were).
            BrokerUnavailableError: the broker could not be reached, nothing was confirmed.
        """
        driver = self.driver
        scheduler = bool(driver.options["scheduler"])
        with self._lock:
            session = self._connect()
            batch = uuid.uuid4().hex
            now = time.time()
            receipts: dict[str, str] = {}  # receipt id -> message id
            frames: list[tuple[str, bytes, dict[str, str]]] = []
            for number, message in enumerate(messages):
                headers = encode(message, flavour=driver.flavour, now=now, scheduler=scheduler)
                receipt = f"kq-{batch}-{number}"
                headers["receipt"] = receipt
                frames.append((destination, message.body, headers))
                receipts[receipt] = message.message_id
            sent_error: BrokerUnavailableError | None = None
            try:
                session.send_many(frames)  # pipelined: the receipts are awaited once, below
            except BrokerUnavailableError as exc:
                sent_error = exc  # some frames may have gone: their receipts say which
            confirmed, error = session.wait_receipts(receipts, driver.settings.receipt_timeout)
            lost = session.lost or (str(sent_error) if sent_error is not None else None)
            if len(confirmed) < len(receipts) or sent_error is not None:
                # Refused (the broker closes after an ERROR), lost, or silent: start afresh next time.
                self._drop(session)
        published = [receipts[r] for r in receipts if r in confirmed]
        if len(published) == len(messages):
            logger.debug("queue %s: published %d messages, receipts confirmed", queue, len(published))
            return
        done = set(published)
        failed = [m.message_id for m in messages if m.message_id not in done]
        if error is not None:
            why = f"the broker refused a frame: {error_text(error)}"
        elif lost is not None:
            why = f"the connection was lost ({lost})"
            if not published:
                raise BrokerUnavailableError(
                    f"queue {queue}: cannot publish to {driver.describe()}: {why}; nothing was published"
                )
        else:
            why = f"no receipt within {driver.settings.receipt_timeout:g}s"
        logger.warning(
            "queue %s: %d of %d messages not confirmed by the broker (%s): %s",
            queue,
            len(failed),
            len(messages),
            why,
            ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else ""),
        )
        raise PublishError(
            f"queue {queue}: {why}; {len(published)} of {len(messages)} messages were confirmed, not "
            f"{', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}",
            published=published,
            failed=failed,
        )

    def _connect(self) -> Session:
        if self._session is not None and self._session.alive:
            return self._session
        if self._session is not None:
            self._drop(self._session)
        if self._closed:
            raise BrokerUnavailableError(f"driver {self.driver.name}: the publisher is closed")
        self._session = self.driver.session("publish")
        return self._session

    def _drop(self, session: Session) -> None:
        """Forget a broken connection: the next publish connects again."""
        session.abort()
        if self._session is session:
            self._session = None

    def close(self) -> None:
        """DISCONNECT the publishing connection."""
        with self._lock:
            self._closed = True
            session, self._session = self._session, None
        if session is not None:
            session.close()


class StompProducer(Producer):
    """Sends messages to one logical queue's STOMP destination."""

    driver: StompDriver

    def __init__(self, driver: StompDriver, queue: QueueSpec) -> None:
        super().__init__(driver, queue)
        self._destination = driver.destination(queue.name)

    def _send_batch(self, messages: Sequence[Message]) -> None:
        keys = self.queue.routing_keys
        routed = [m for m in messages if matches_any(keys, m.routing_key)]
        if len(routed) < len(messages):
            for message in messages:
                if not matches_any(keys, message.routing_key):
                    logger.info(
                        "queue %s message %s: routing key %r matches none of the queue's routing_keys %s; "
                        "not sent (as an AMQP exchange would route it)",
                        self.queue.name,
                        message.message_id,
                        message.routing_key,
                        list(keys),
                    )
        if routed:
            self.driver.publisher().publish(self.queue.name, self._destination, routed)
