"""Message producers: encode what the application wants done, pick a routing key, publish.

Every producer has ``publish`` (one message) and ``publish_batch`` (many, paid once per batch by the
driver), takes a TTL and a delay in seconds, and fires ``message_sent`` once per published batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kq.core._codecs import encode_json
from kq.core._command import CommandCall, make_command
from kq.core._driver import Driver
from kq.core._events import EventDispatcher, MessageSent
from kq.core._message import JSON, Message
from kq.core._routing import check_routing_key, command_routing_key
from kq.core._signing import Signer

logger = logging.getLogger(__name__)


class MessageProducer:
    """Base of the application-level producers, bound to a driver and a logical queue.

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
            MessageFormatError: the routing key is not valid.
        """
        return Message(
            body=encode_json(body),
            content_type=JSON,
            routing_key=check_routing_key(routing_key),
            ttl=ttl,
            delay=delay,
            headers=dict(headers or {}),
        )


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

    def publish(self, body: bytes | str, **kwargs: Any) -> Message:
        """Publish one body; keyword arguments as for :meth:`build`. Returns the sent message."""
        message = self.build(body, **kwargs)
        self.send([message])
        return message

    def publish_batch(self, bodies: Iterable[bytes | str], **kwargs: Any) -> list[Message]:
        """Publish several bodies with the same settings, as one batch."""
        messages = [self.build(body, **kwargs) for body in bodies]
        self.send(messages)
        return messages


class ConsoleCommandProducer(MessageProducer):
    """Queues console commands for a console-command consumer (``kq queuecommand``).

    The default routing key is the command name with ``:`` replaced by ``.`` (``app:cmd`` -> ``app.cmd``).
    """

    def build(
        self,
        command: str | CommandCall,
        arguments: Iterable[Any] = (),
        options: Mapping[str, Any] | None = None,
        *,
        routing_key: str | None = None,
        ttl: float | None = None,
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Build (without sending) the message asking for ``command arguments... --options``.

        Raises:
            MessageFormatError: the command, an argument or an option would be rejected by consumers.
        """
        call = command if isinstance(command, CommandCall) else make_command(command, arguments, options)
        key = command_routing_key(call.command) if routing_key is None else routing_key
        return self.json_message(call.to_body(), key, ttl=ttl, delay=delay, headers=headers)

    def publish(
        self,
        command: str | CommandCall,
        arguments: Iterable[Any] = (),
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Message:
        """Queue one command; keyword arguments as for :meth:`build`. Returns the sent message."""
        message = self.build(command, arguments, options, **kwargs)
        self.send([message])
        return message

    def publish_batch(self, calls: Iterable[CommandCall | Mapping[str, Any]], **kwargs: Any) -> list[Message]:
        """Queue several commands as one batch.

        Args:
            calls: :class:`CommandCall` objects or mappings with ``command``, ``arguments`` and ``options``.
            **kwargs: As for :meth:`build`; a ``routing_key`` of ``None`` derives one per command.
        """
        messages = []
        for item in calls:
            call = (
                item
                if isinstance(item, CommandCall)
                else make_command(item["command"], item.get("arguments") or (), item.get("options"))
            )
            messages.append(self.build(call, **kwargs))
        self.send(messages)
        return messages
