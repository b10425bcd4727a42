"""kq's STOMP driver, on stomp.py (STOMP 1.2): ActiveMQ Classic and RabbitMQ's STOMP plugin.

Install ``kq-driver-stomp`` and point a driver instance at the broker::

    default_driver = "activemq"

    [drivers.activemq]
    type = "stomp"
    flavour = "activemq"            # or "rabbitmq"
    hosts = ["127.0.0.1:61613", "standby:61613"]    # tried in order
    # login = "kq"
    # passcode = "${STOMP_PASSCODE}"
    # vhost = "/"                   # RabbitMQ (the default there); ActiveMQ: the host name
    # ssl = true
    heartbeat = 10000               # ms, both directions
    heartbeat_grace = 2.0           # missed heart-beats tolerated, as a factor of the interval
    receipt_timeout = 10            # s to wait for the receipts of a published batch
    scheduler = true                # ActiveMQ runs with schedulerSupport="true": delays work

    [drivers.rabbit-stomp]
    type = "stomp"
    flavour = "rabbitmq"
    hosts = ["127.0.0.1:61613"]
    # management_url = "http://127.0.0.1:15672"     # kq managequeue (default: first host, port 15672)

    [queues.demo]
    routing_keys = ["#"]
    # destination = "/amq/queue/legacy"            # the STOMP destination (default: /queue/demo)

Destinations: logical queue ``demo`` is ``/queue/demo`` on both brokers (RabbitMQ declares a durable
queue on its default exchange, ActiveMQ creates the queue on first use); its dead-letter queue
``demo.failed`` is ``/queue/demo.failed``.

Wire format: the body as it is with ``content-length`` (binary bodies survive), ``content-type``,
``persistent: true``, the message id in ``kq-message-id`` (brokers own ``message-id``), the routing key
in ``kq_routing_key`` (an identifier, so that selectors can name it), every message header as a STOMP
header of the same name; a TTL as ``expires`` (ActiveMQ, absolute) or ``expiration`` (RabbitMQ,
relative). What brokers add on the way (``message-id``, ``subscription``, ``redelivered``, ActiveMQ's
``expires``/``priority``/``timestamp``/``scheduledJobId``, RabbitMQ's echo of ``receipt``, ...) is
stripped on receive, so signatures verify.

Publishing: every SEND carries a receipt, and a batch waits once for all of them: a message refused by
the broker, or not confirmed within ``receipt_timeout``, raises ``PublishError`` naming the ids
confirmed and those not. Routing keys are emulated as an AMQP exchange routes: a message is sent only
when its key matches the queue's ``routing_keys``.

Consuming: one connection per consumer, a ``client-individual`` subscription with a prefetch; ack is
ACK. A requeue is a NACK on RabbitMQ; on ActiveMQ, whose NACK dead-letters, it is a copy sent and the
original acknowledged in one transaction (and a worker's retry is the same transaction). The delivery
count is a flag (2 for any redelivery; RabbitMQ quorum queues count), so ``max_deliveries`` protects
only with 1. A consumer's own routing key (``kq consume -r``) is an ActiveMQ selector (exact keys,
``*`` words, ``key.#`` and ``#.key``); RabbitMQ refuses it. Delays need ActiveMQ's scheduler
(``AMQ_SCHEDULED_DELAY``; without it ActiveMQ would deliver at once, so they are refused).

ActiveMQ configuration: ``schedulerSupport="true"`` for delays (then ``scheduler = true`` here); a
``deadLetterStrategy`` with ``processExpired="false"``, or every expired message is copied to
``ActiveMQ.DLQ``; ``maxPageSize`` above the number of messages a selector may have to skip (200 by
default: a consumer's own key cannot reach matching messages queued behind more non-matching ones).
A user header named ``kq_routing_key`` is the driver's and does not survive the trip.

Queue manager (``kq managequeue``): RabbitMQ through its management API (every standard action);
ActiveMQ ``list-configured``, ``list-available``, ``info`` and ``purge`` (STOMP cannot delete a queue).
See docs/stomp.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kq.core.plugins import lazy_exports
from kq.drivers.stomp._driver import StompDriver
from kq.drivers.stomp.version import __version__

if TYPE_CHECKING:
    from kq.drivers.stomp._consumer import StompConsumer
    from kq.drivers.stomp._errors import (
        BrokerUnavailableError,
        MessageFormatError,
        PublishError,
        StompBrokerError,
        UnsupportedOperationError,
    )
    from kq.drivers.stomp._producer import StompProducer

# The driver class is what the ``kq.drivers`` entry point loads; the rest is imported on first use
# (PEP 562), so that a worker does not load the producer before it needs it.
_LAZY = {
    "StompConsumer": "_consumer",
    "StompProducer": "_producer",
    "BrokerUnavailableError": "_errors",
    "MessageFormatError": "_errors",
    "PublishError": "_errors",
    "StompBrokerError": "_errors",
    "UnsupportedOperationError": "_errors",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    # the driver and its parts
    "StompConsumer",
    "StompDriver",
    "StompProducer",
    # errors
    "BrokerUnavailableError",
    "MessageFormatError",
    "PublishError",
    "StompBrokerError",
    "UnsupportedOperationError",
    # version
    "__version__",
]
