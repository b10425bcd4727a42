"""Delayed messages on RabbitMQ, without plugins: queues whose messages expire into the real target.

A delayed message waits in a *delay queue*: a durable queue with a queue-wide TTL (``x-message-ttl``)
and a dead-letter target, so that when the TTL runs out the broker moves the message on. Queue-wide
TTLs expire in order, which per-message TTLs in one shared queue would not (a long delay at the head
would hold back a short one behind it); so each delay has its own queue, and delays are rounded **up**
to a short ladder of steps to keep the number of queues small. Unused delay queues delete themselves
(``x-expires``).

Two kinds of target:

- an **exchange** (a delayed publish): the delay queue is fed through a fanout exchange of its own, so
  that the message keeps its routing key and is routed normally when it comes out;
- a **queue** (a delayed retry or requeue, which must reach that queue only): the message goes to the
  delay queue through the default exchange and comes out through it, addressed to the queue; its
  routing key travels in the ``kq-routing-key`` header, restored by the consumer.
"""

from __future__ import annotations

import bisect

from pika.adapters.blocking_connection import BlockingChannel

#: Delay steps in milliseconds: a delay waits for the first step at least as long as it.
STEPS_MS = (
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    21_600_000,
    43_200_000,
    86_400_000,
)
#: An unused delay queue disappears after its delay plus this margin.
EXPIRY_MARGIN_MS = 300_000


def step_ms(delay: float) -> int:
    """The delay step, in ms, for a delay of ``delay`` seconds (beyond the last step: the delay itself)."""
    wanted = max(1, int(delay * 1000 + 0.999))
    index = bisect.bisect_left(STEPS_MS, wanted)
    return STEPS_MS[index] if index < len(STEPS_MS) else wanted


def _queue_arguments(ms: int, dead_letter_exchange: str, routing_key: str | None) -> dict[str, object]:
    arguments: dict[str, object] = {
        "x-message-ttl": ms,
        "x-dead-letter-exchange": dead_letter_exchange,
        "x-expires": ms + EXPIRY_MARGIN_MS,
    }
    if routing_key is not None:
        arguments["x-dead-letter-routing-key"] = routing_key
    return arguments


def declare_for_exchange(channel: BlockingChannel, exchange: str, ms: int) -> str:
    """Declare the delay of ``ms`` for messages bound for ``exchange``; return the exchange to publish to."""
    name = f"kq.delay.x.{exchange}.{ms}"
    channel.exchange_declare(name, exchange_type="fanout", durable=True, auto_delete=True)
    channel.queue_declare(name, durable=True, arguments=_queue_arguments(ms, exchange, None))
    channel.queue_bind(name, name)
    return name


def declare_for_queue(channel: BlockingChannel, queue: str, ms: int) -> str:
    """Declare the delay of ``ms`` for messages bound for ``queue`` only; return the delay queue (to
    publish to through the default exchange)."""
    name = f"kq.delay.q.{queue}.{ms}"
    channel.queue_declare(name, durable=True, arguments=_queue_arguments(ms, "", queue))
    return name
