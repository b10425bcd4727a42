"""Application-level producers: encode what the application wants done, pick a routing key, publish.

Each execution type has a :class:`MessageProducer` subclass that implements ``build(...)`` (make one
validated message without sending it); ``publish`` and ``publish_batch`` are generic over it. Every
producer takes a TTL and a delay in seconds, signs what it sends when it has a signer, and fires
``message_sent`` once per published batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kq.core._driver import Driver
from kq.core._events import EventDispatcher, MessageSent
from kq.core._message import JSON, Message
from kq.core._routing import check_routing_key
from kq.core._signing import Signer
from kq.core.handlers._codecs import encode_json

logger = logging.getLogger(__name__.replace("._", "."))


class MessageProducer:
    """Base of the application-level producers, bound to a driver and a logical queue.

    A subclass implements ``build(...)``, returning one validated :class:`~kq.core.Message`; it gets
    :meth:`publish` and :meth:`publish_batch` from here. Get one with ``app.producer_of(Class, queue)``.

    Args:
        driver: The driver instance to publish through.
        queue: The logical queue name.
        dispatcher: Where ``message_sent`` goes (optional).
        signer: Signs every message for this queue (optional).
    """

    def __init__(
        self,
        driver: Driver,
        queue: str,
        *,
        dispatcher: EventDispatcher | None = None,
        signer: Signer | None = None,
    ) -> None:
        if not queue:
            raise ValueError("queue name must not be empty")
        self.driver = driver
        self.queue = queue
        self.dispatcher = dispatcher
        self.signer = signer

    def build(self, *args: Any, **kwargs: Any) -> Message:
        """Build (without sending) one message; each execution type's producer says what it takes."""
        raise NotImplementedError(f"{type(self).__name__} does not implement build()")

    def publish(self, *args: Any, **kwargs: Any) -> Message:
        """Publish one message; the arguments are those of ``build``. Returns the sent message.

        Raises:
            MessageFormatError: ``build`` refused the arguments; nothing was sent.
        """
        message = self.build(*args, **kwargs)
        self.send([message])
        return message

    def publish_batch(self, items: Iterable[Any], **kwargs: Any) -> list[Message]:
        """Publish several messages as one batch (one driver call); nothing is sent if one is refused.

        Args:
            items: One per message. A mapping gives ``build``'s arguments by name (``None`` values
                take the default: ``{"command": "app:cmd", "arguments": ["a"]}``, ``{"url": ...}``);
                anything else is ``build``'s first argument (a body, a
                :class:`~kq.core.CommandCall`, ...).
            **kwargs: Settings for every message (``routing_key``, ``ttl``, ``delay``, ``headers``); a
                mapping item's own keys take precedence.
        """
        messages = [
            self.build(**_named(item, kwargs)) if isinstance(item, Mapping) else self.build(item, **kwargs)
            for item in items
        ]
        self.send(messages)
        return messages

    def send(self, messages: Sequence[Message]) -> Sequence[Message]:
        """Sign (when a signer is set), publish as one batch, and announce the messages."""
        if self.signer is not None:
            messages = [self.signer.sign(message, self.queue) for message in messages]
        self.driver.producer(self.queue).send_batch(messages)
        if len(messages) == 1:
            logger.debug(
                "published message %s to queue %s (key %r)",
                messages[0].message_id,
                self.queue,
                messages[0].routing_key,
            )
        else:
            logger.debug("published %d messages to queue %s", len(messages), self.queue)
        if self.dispatcher is not None and self.dispatcher.has_listeners(MessageSent.name):
            self.dispatcher.dispatch(MessageSent(queue_name=self.queue, messages=messages))
        return messages

    @staticmethod
    def json_message(
        body: Any,
        routing_key: str,
        *,
        ttl: float | None = None,
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """The JSON message a typed producer's ``build`` makes: ``body`` encoded, the routing key checked.

        Raises:
            MessageFormatError: the routing key is not valid, or ``body`` cannot be encoded as JSON.
        """
        return Message(
            body=encode_json(body),
            content_type=JSON,
            routing_key=check_routing_key(routing_key),
            ttl=ttl,
            delay=delay,
            headers=dict(headers or {}),
        )


def _named(item: Mapping[str, Any], shared: Mapping[str, Any]) -> dict[str, Any]:
    """``build``'s keyword arguments for a mapping item of a batch: the shared settings, then the item's
    own non-``None`` values (a missing or ``null`` ``arguments`` means none, as in a message)."""
    return {**shared, **{str(name): value for name, value in item.items() if value is not None}}


class GenericMessageProducer(MessageProducer):
    """Publishes bodies as they are, with any content type (``kq queuemessage``)."""

    def build(
        self,
        body: bytes | str,
        *,
        content_type: str = JSON,
        routing_key: str = "",
        ttl: float | None = None,
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Build (without sending) the message for ``body``; ``str`` bodies are encoded as UTF-8."""
        raw = body.encode() if isinstance(body, str) else body
        return Message(
            body=raw,
            content_type=content_type,
            routing_key=check_routing_key(routing_key),
            ttl=ttl,
            delay=delay,
            headers=dict(headers or {}),
        )
