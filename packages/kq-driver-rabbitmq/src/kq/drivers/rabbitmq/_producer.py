"""The producer: persistent messages, publisher confirms awaited once per batch, recovery by retrying.

pika's ``BlockingChannel`` in confirm mode waits for the broker after *each* publish: one round trip per
message. To pay that once per batch, this producer puts the channel's underlying implementation in
confirm mode itself, publishes the whole batch, then pumps the connection until every delivery tag has
been acknowledged (``Basic.Ack`` with ``multiple`` included).

What the broker said is kept per message (delivery tag -> position in the batch), so a batch that went
through only in part raises kq's :class:`~kq.core.PublishError` naming the message ids published and
those not. Published means confirmed with ``Basic.Ack`` and not returned. Not published: nacked,
returned as unroutable (``mandatory``), not confirmed within ``confirm_timeout`` (such a message may
still reach the queue), or never confirmed before the connection dropped. The error says how many went.

A lost connection (broker restart, network) is retried with backoff for up to ``publish_timeout``
seconds. Only the messages not confirmed yet are published again: those the broker confirmed before the
connection dropped are not sent twice. One sent but not yet confirmed when it dropped may have reached
the queue anyway, so it may arrive twice, but none is silently lost. Without publisher confirms
(``confirm_delivery = false``) nothing is known per message: the whole batch is published again (any
of it may arrive twice), and only the returns that came back before the batch was flushed are known.
Only when this method returns were the messages confirmed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pika
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from kq.core.driver import (
    DRIVER_REDELIVERY,
    DRIVER_ROUTING_KEY,
    ClosedError,
    Message,
    Producer,
    QueueSpec,
    UnsupportedOperationError,
)
from kq.drivers.rabbitmq._connection import close_quietly
from kq.drivers.rabbitmq._delays import declare_for_exchange, declare_for_queue, step_ms
from kq.drivers.rabbitmq._errors import PublishError
from kq.drivers.rabbitmq._publish import DirectPublish
from kq.drivers.rabbitmq._topology import Topology

if TYPE_CHECKING:
    from kq.drivers.rabbitmq._driver import RabbitMQDriver

logger = logging.getLogger(__name__.replace("._", "."))

#: Messages of a batch marshalled between two writes to the socket (see ``_publish_once``).
FLUSH_EVERY = 200
#: Header carrying the routing key of a message published straight to a queue (see publish_to_queue).
ROUTING_KEY_HEADER = DRIVER_ROUTING_KEY
#: Seconds a confirm is awaited on the socket itself before pika's loop takes over (see _publish.py).
DIRECT_WAIT = 0.5
#: Header of a delayed requeue's copy: how often the original was delivered.
REDELIVERY_HEADER = DRIVER_REDELIVERY


__all__ = ["REDELIVERY_HEADER", "ROUTING_KEY_HEADER", "RabbitMQProducer"]


@dataclass(slots=True)
class _Batch:
    """What the broker said about one attempt at publishing a batch; positions index its messages."""

    ids: list[str]
    #: Delivery tag -> position, for the messages of this attempt.
    tags: dict[int, int] = field(default_factory=dict)
    #: Tags not confirmed yet.
    pending: set[int] = field(default_factory=set)
    acked: set[int] = field(default_factory=set)
    nacked: set[int] = field(default_factory=set)
    returned: set[int] = field(default_factory=set)
    #: Positions handed to the connection (``basic_publish`` returned).
    sent: int = 0

    def confirm(self, tag: int, multiple: bool, nack: bool) -> None:
        """Record a ``Basic.Ack`` (or ``Basic.Nack``) of ``tag``; tags of other batches are ignored."""
        tags = {t for t in self.pending if t <= tag} if multiple else {tag} & self.pending
        self.pending -= tags
        (self.nacked if nack else self.acked).update(self.tags[t] for t in tags)

    def give_back(self, message_id: str) -> None:
        """Record a ``Basic.Return``: the first message with that id not yet confirmed nor returned (the
        broker returns an unroutable message before it confirms it)."""
        unconfirmed = {self.tags[t] for t in self.pending} if self.tags else set(range(self.sent))
        for position, known in enumerate(self.ids):
            if known == message_id and position in unconfirmed and position not in self.returned:
                self.returned.add(position)
                return
        logger.debug("a returned message %s is not one of this batch's; ignored", message_id)

    def published(self, confirming: bool) -> set[int]:
        """Positions the broker took: confirmed and not returned (without confirms: sent and not
        returned)."""
        went = self.acked if confirming else set(range(self.sent))
        return went - self.nacked - self.returned


class RabbitMQProducer(Producer):
    """Publishes to the logical queue's exchange."""

    driver: RabbitMQDriver

    def __init__(self, driver: RabbitMQDriver, queue: QueueSpec) -> None:
        super().__init__(driver, queue)
        self.topology = Topology.of(queue)
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._direct: DirectPublish | None = None
        # pika's timer that wakes a confirm wait by its deadline (see _wake_by), and when it fires.
        self._alarm: int | None = None
        self._alarm_at = 0.0
        self._confirming = bool(driver.options["confirm_delivery"])
        self._mandatory = bool(queue.options["mandatory"])
        self._delivery_mode = 2 if queue.options["persistent"] else 1
        # The channel's last delivery tag, and what the broker said about the batch being published.
        self._next_tag = 0
        self._batch: _Batch | None = None
        # Delay targets declared on this connection: (kind, target, ms) -> exchange or queue name.
        self._delays: dict[tuple[str, str, int], str] = {}

    def _send_batch(self, messages: Sequence[Message]) -> None:
        _check_delayed_ttls(messages)
        self._publish(messages, self.topology.exchange, None)

    def publish_to_queue(self, messages: Sequence[Message], amqp_queue: str) -> None:
        """Publish straight into ``amqp_queue`` through the default exchange, bypassing this queue's
        bindings (a retried message must not reach the other queues of a shared exchange). The routing
        key each message had travels in the ``kq-routing-key`` header and is restored by the consumer."""
        if self.closed:
            raise ClosedError(f"the producer of queue '{self.queue.name}' is closed")
        _check_delayed_ttls(messages)
        copies = [
            dataclasses.replace(m, headers={**m.headers, ROUTING_KEY_HEADER: m.routing_key}) for m in messages
        ]
        self._publish(copies, "", amqp_queue)

    def _publish(self, messages: Sequence[Message], exchange: str, routing_key: str | None) -> None:
        deadline = time.monotonic() + self.driver.options["publish_timeout"]
        attempt = 0
        remaining = list(range(len(messages)))  # positions in ``messages`` not confirmed yet
        confirmed: set[int] = set()
        while True:
            attempted = messages if attempt == 0 else [messages[i] for i in remaining]
            batch = _Batch([m.message_id for m in attempted])
            try:
                self._publish_once(attempted, exchange, routing_key, batch)
            except self.driver.connection_errors as exc:
                self._drop_connection()
                if self._confirming:  # what was confirmed before the connection dropped is not sent again
                    confirmed.update(remaining[j] for j in batch.published(confirming=True))
                    remaining = [i for i in remaining if i not in confirmed]
                if not remaining:
                    logger.info(
                        "queue %s: the broker confirmed all %d message(s) before the connection dropped "
                        "(%s: %s)",
                        self.queue.name,
                        len(messages),
                        type(exc).__name__,
                        exc,
                    )
                    return
                attempt += 1
                wait = min(5.0, 0.25 * 2**attempt)
                if time.monotonic() + wait > deadline:
                    raise self._error(
                        messages,
                        confirmed,
                        f"could not publish {len(remaining)} of {len(messages)} message(s) to queue "
                        f"{self.queue.name} on {self.driver.describe()}: {type(exc).__name__}: {exc} "
                        f"(gave up after {attempt} attempts)",
                    ) from exc
                logger.warning(
                    "queue %s: publishing %d message(s) failed (%s: %s); reconnecting to %s in %.1fs to "
                    "publish again the %d not confirmed (those sent before may arrive twice)",
                    self.queue.name,
                    len(messages),
                    type(exc).__name__,
                    exc,
                    self.driver.describe(),
                    wait,
                    len(remaining),
                )
                time.sleep(wait)
                continue
            went = batch.published(self._confirming)
            # All of this attempt went: with what earlier attempts had confirmed, that is all of them.
            if len(went) == len(remaining):
                logger.debug(
                    "queue %s: %d message(s) published%s",
                    self.queue.name,
                    len(messages),
                    " and confirmed" if self._confirming else "",
                )
                return
            confirmed.update(remaining[j] for j in went)
            raise self._error(messages, confirmed, self._refusal(batch))

    def _publish_once(
        self, messages: Sequence[Message], exchange: str, routing_key: str | None, batch: _Batch
    ) -> None:
        """Publish ``messages`` once, recording in ``batch`` what the broker said; raises only the
        driver's connection errors (and programming errors)."""
        connection, channel, direct = self._ensure_channel()
        self._batch = batch
        now = int(time.time())
        # Delay queues first (a declaration is a round trip: not between publishes awaiting confirms).
        targets = [self._target(channel, m, exchange, routing_key) for m in messages]
        for position, (message, (target_exchange, target_key)) in enumerate(
            zip(messages, targets, strict=True)
        ):
            # The channel's implementation (see the module docstring: batch confirms need it), written to
            # the socket directly when pika has nothing else to write (_publish.py).
            direct.publish(
                target_exchange, target_key, message.body, self._properties(message, now), self._mandatory
            )
            batch.sent = position + 1
            if self._confirming:
                self._next_tag += 1
                batch.pending.add(self._next_tag)
                batch.tags[self._next_tag] = position
            if batch.sent % FLUSH_EVERY == 0:
                # Hand what is buffered to the socket now, and take the confirms already in: the broker
                # stores the first messages while the next are marshalled, and the wait at the end is
                # for the last ones only.
                connection.process_data_events(0)
        if self._confirming:
            self._wait_for_confirms(connection, batch)
        else:
            connection.process_data_events(0)  # flush the frames to the socket

    def _refusal(self, batch: _Batch) -> str:
        """Why the messages of ``batch`` that were not published were not."""
        name = self.queue.name
        reasons: list[str] = []
        if batch.nacked:
            reasons.append(
                f"the broker refused (nack) message(s) {_ids(batch, batch.nacked)} for queue {name}"
            )
        if batch.returned:
            reasons.append(
                f"message(s) {_ids(batch, batch.returned)} matched no binding of exchange "
                f"{self.topology.exchange} (mandatory publishing to queue {name})"
            )
        if batch.pending:
            reasons.append(
                f"the broker did not confirm {len(batch.pending)} of {len(batch.ids)} message(s) for queue "
                f"{name} within {self.driver.options['confirm_timeout']:g}s"
            )
        return "; ".join(reasons) or f"some messages for queue {name} were not published"

    @staticmethod
    def _error(messages: Sequence[Message], confirmed: set[int], why: str) -> PublishError:
        published = [m.message_id for i, m in enumerate(messages) if i in confirmed]
        failed = [m.message_id for i, m in enumerate(messages) if i not in confirmed]
        return PublishError(
            f"{why}; {len(published)} of {len(messages)} published", published=published, failed=failed
        )

    def _target(
        self, channel: BlockingChannel, message: Message, exchange: str, routing_key: str | None
    ) -> tuple[str, str]:
        """Where to publish ``message``: the exchange (or queue) itself, or its delay (see _delays.py)."""
        if not message.delay:
            return exchange, message.routing_key if routing_key is None else routing_key
        ms = step_ms(message.delay)
        if routing_key is None:
            key = ("x", exchange, ms)
            if key not in self._delays:
                self._delays[key] = declare_for_exchange(channel, exchange, ms)
            return self._delays[key], message.routing_key
        key = ("q", routing_key, ms)
        if key not in self._delays:
            self._delays[key] = declare_for_queue(channel, routing_key, ms)
        return "", self._delays[key]

    def _properties(self, message: Message, now: int) -> pika.BasicProperties:
        return pika.BasicProperties(
            content_type=message.content_type,
            delivery_mode=self._delivery_mode,
            headers=dict(message.headers) or None,
            message_id=message.message_id,
            expiration=None if message.ttl is None else str(max(1, round(message.ttl * 1000))),
            timestamp=now,
            app_id="kq",
        )

    def _wait_for_confirms(self, connection: BlockingConnection, batch: _Batch) -> None:
        """Wait until every message of ``batch`` is confirmed, the channel closes, or
        ``confirm_timeout`` passes (the unconfirmed ones are then reported as not published).

        A confirm normally comes within milliseconds: the first moments are awaited on the socket
        itself (``DirectPublish.wait``, _publish.py), and the rest, or any wait where something else is
        going on, in pika's own I/O loop. That loop is ended by the confirms themselves (as
        ``_select_confirms`` waits); it does not run timer callbacks (pika only queues them for
        ``process_data_events``), so the deadline is checked by the wait's own condition, and a pika
        timer only makes sure the poll wakes up by then (:meth:`_wake_by`).
        """
        if not batch.pending:
            return
        channel = self._channel
        deadline = time.monotonic() + self.driver.options["confirm_timeout"]

        def done() -> bool:
            if not batch.pending or channel is None or not channel.is_open:
                return True
            now = time.monotonic()
            if now >= deadline:
                return True
            if now >= self._alarm_at:  # an earlier wait's timer woke the poll: one for this deadline
                self._wake_by(connection, deadline)
            return False

        direct = self._direct
        if direct is not None and direct.wait(done, min(DIRECT_WAIT, deadline - time.monotonic())):
            return
        self._wake_by(connection, deadline)
        connection._flush_output(done)

    def _wake_by(self, connection: BlockingConnection, deadline: float) -> None:
        """Make sure a timer wakes pika's poll by ``deadline`` (monotonic seconds).

        One timer serves many waits: a confirm comes in a millisecond, the deadline is seconds away,
        and a timer per wait (set, then removed) cost a single confirmed publish more than its
        properties. A timer due before ``deadline`` is kept: when it fires, the wait sets the next.
        """
        now = time.monotonic()
        if self._alarm is not None and now < self._alarm_at <= deadline:
            return
        if self._alarm is not None:
            connection.remove_timeout(self._alarm)  # fired (or due too late): also off pika's ready list
        self._alarm = connection.call_later(max(0.0, deadline - now), _wake)
        self._alarm_at = deadline

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        self._confirmed(method.delivery_tag, bool(method.multiple), isinstance(method, pika.spec.Basic.Nack))

    def _confirmed(self, tag: int, multiple: bool, nack: bool) -> None:
        """A ``Basic.Ack`` (``nack``: ``Basic.Nack``), from pika's callback or read directly (_publish.py)."""
        if self._batch is not None:
            self._batch.confirm(tag, multiple, nack=nack)

    def _on_return(self, channel: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        if self._batch is not None:
            self._batch.give_back(properties.message_id or "")

    def _ensure_channel(self) -> tuple[BlockingConnection, BlockingChannel, DirectPublish]:
        connection, channel, direct = self._connection, self._channel, self._direct
        if connection is not None and channel is not None and direct is not None and channel.is_open:
            return connection, channel, direct
        self._drop_connection()
        connection = self.driver.connect()
        try:
            channel = connection.channel()
            self.topology.declare(channel, self.queue, self.driver.describe())
            channel._impl.add_on_return_callback(self._on_return)
            if self._confirming:
                self._select_confirms(channel)
        except BaseException:
            close_quietly(connection)
            raise
        self._connection, self._channel, self._next_tag = connection, channel, 0
        on_confirm = self._confirmed if self._confirming else None
        self._direct = direct = DirectPublish(connection, channel, on_confirm)
        self._alarm, self._alarm_at = None, 0.0
        self._delays.clear()
        return connection, channel, direct

    def _select_confirms(self, channel: BlockingChannel) -> None:
        """Put ``channel`` in confirm mode with this producer's own ack/nack callback.

        Confirm.Select is a round trip. Its Select-Ok is delivered to the implementation's callback,
        and a callback alone does not end ``process_data_events`` (only timers and channel events
        do): waiting for it in ``process_data_events(time_limit=...)`` slept the whole time limit on
        every new connection. Instead, wait as pika's own ``BlockingChannel.confirm_delivery`` does:
        pump I/O until the callback has fired, giving up, with pika's own error, if the channel or the
        connection closes meanwhile.
        """
        selected: list[bool] = []
        channel._impl.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _frame: selected.append(True)
        )
        channel._flush_output(lambda: bool(selected))
        logger.debug(
            "queue %s: publisher confirms on for exchange %s", self.queue.name, self.topology.exchange
        )

    def _drop_connection(self) -> None:
        connection, self._connection, self._channel, self._direct = self._connection, None, None, None
        self._alarm = None
        if connection is not None:
            close_quietly(connection)

    def _close(self) -> None:
        self._drop_connection()


def _wake() -> None:
    """The confirm wait's timer callback: the timer only wakes pika's poll (see _wait_for_confirms)."""


def _check_delayed_ttls(messages: Sequence[Message]) -> None:
    for message in messages:
        if message.delay and message.ttl is not None:
            # The broker drops a message's expiration when its delay ends (dead-lettering removes it), so
            # the TTL could not be enforced: refuse rather than deliver a message that should have expired.
            raise UnsupportedOperationError(
                f"message {message.message_id}: RabbitMQ cannot expire a delayed message; give it a delay "
                "or a TTL, not both"
            )


def _ids(batch: _Batch, positions: set[int]) -> str:
    return ", ".join(batch.ids[p] for p in sorted(positions))
