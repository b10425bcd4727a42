"""Exchanges, queues and bindings: derived from a logical queue's settings, declared on first use.

A logical queue ``demo`` is, by default, a durable topic exchange ``demo`` and a durable queue ``demo``
bound to it with the queue's ``routing_keys`` (``#`` when none are configured). Producers publish to the
exchange with each message's routing key; consumers read the queue. Several logical queues may share an
exchange (``exchange = "jobs"``) with different bindings: that is how one stream of commands is split
between groups of workers, as with the PHP library's producer/consumer pairs.

A consumer started with its own routing key (``kq consume demo -r 'hello.*'``) reads a queue of its
own, ``demo[hello.*]``, bound to the same exchange with that key: on AMQP the broker routes, so a
narrower binding needs a queue. It is durable, like the others, so that a restarted worker misses
nothing; delete it with ``kq managequeue delete 'demo[hello.*]'`` when it is no longer wanted. It gets
a copy of each matching message published once it exists, whatever the queue ``demo``'s own consumers
do (``Capabilities.consumer_routing`` ``"own-queue"``). ``fanout`` and ``headers`` exchanges ignore
routing keys, so there a consumer's own key is refused (``"none"``) rather than reading everything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from kq.core.driver import ConfigError, KqError, QueueSpec, UnknownQueueError

logger = logging.getLogger(__name__.replace("._", "."))

#: The binding of a queue configured without routing keys.
EVERYTHING = "#"


@dataclass(frozen=True)
class Topology:
    """What to declare for one consumer or producer of a logical queue."""

    exchange: str
    exchange_type: str
    exchange_durable: bool
    queue: str
    queue_durable: bool
    queue_arguments: dict[str, Any]
    bindings: tuple[str, ...]
    passive: bool

    @classmethod
    def of(cls, spec: QueueSpec, routing_keys: tuple[str, ...] | None = None) -> Topology:
        """The topology of ``spec``; ``routing_keys`` different from the configured ones select the
        consumer's own queue (see the module docstring)."""
        options = spec.options
        configured = spec.routing_keys or (EVERYTHING,)
        keys = routing_keys or configured
        base = options["queue_name"] or spec.name
        queue = base if tuple(keys) == tuple(configured) else f"{base}[{','.join(keys)}]"
        arguments = dict(options["queue_arguments"])
        if options["queue_type"]:
            arguments["x-queue-type"] = options["queue_type"]
        return cls(
            exchange=options["exchange"] or spec.name,
            exchange_type=options["exchange_type"],
            exchange_durable=options["exchange_durable"],
            queue=queue,
            queue_durable=options["durable"],
            queue_arguments=arguments,
            bindings=tuple(keys),
            passive=options["passive"],
        )

    def declare(self, channel: BlockingChannel, spec: QueueSpec, where: str) -> None:
        """Declare the exchange, the queue and its bindings (or, when passive, check they exist).

        Raises:
            UnknownQueueError: passive, and something is missing.
            ConfigError: the broker has the queue or exchange with other settings.
        """
        try:
            self._declare(channel)
        except pika.exceptions.ChannelClosedByBroker as exc:
            translated = _refusal(spec, exc, where)
            if translated is exc:
                raise
            raise translated from None

    def _declare(self, channel: BlockingChannel) -> None:
        if self.passive:
            channel.exchange_declare(self.exchange, passive=True)
            channel.queue_declare(self.queue, passive=True)
            return
        channel.exchange_declare(
            self.exchange, exchange_type=self.exchange_type, durable=self.exchange_durable
        )
        channel.queue_declare(self.queue, durable=self.queue_durable, arguments=self.queue_arguments or None)
        for key in self.bindings:
            channel.queue_bind(self.queue, self.exchange, routing_key=key)
        logger.debug(
            "declared exchange %s (%s) and queue %s bound with %s",
            self.exchange,
            self.exchange_type,
            self.queue,
            ", ".join(self.bindings),
        )


def _refusal(queue: QueueSpec, exc: pika.exceptions.ChannelClosedByBroker, where: str) -> Exception:
    """The kq error for a refused declaration that no reconnection can cure, else ``exc`` itself."""
    if exc.reply_code == 404:
        return UnknownQueueError(
            f"queue {queue.name}: {exc.reply_text} on {where} (with passive = true kq declares nothing; "
            "create it, or run kq managequeue setup without passive)"
        )
    if exc.reply_code == 406:
        return ConfigError(
            f"the broker {where} has the queue or exchange of {queue.name} with other settings "
            f"({exc.reply_text}); delete it or make the configuration match",
            key=f"queues.{queue.name}",
            source=queue.source,
        )
    if exc.reply_code == 403:
        return KqError(f"queue {queue.name}: access refused by {where} ({exc.reply_text})")
    refused: Exception = exc
    return refused
