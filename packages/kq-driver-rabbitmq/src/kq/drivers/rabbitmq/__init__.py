"""kq's RabbitMQ driver: AMQP 0-9-1 through pika.

Install ``kq-driver-rabbitmq`` and point a driver instance at the broker::

    default_driver = "rabbit"

    [drivers.rabbit]
    type = "rabbitmq"
    url = "amqp://guest:guest@127.0.0.1:5672/%2F"   # amqps:// for TLS; ${RABBITMQ_URL} works too
    heartbeat = 60                  # seconds; commands may run far longer (see below)
    confirm_delivery = true         # publisher confirms, awaited once per batch
    publish_timeout = 60            # keep retrying a publish this long while the broker is away
    # management_url = "http://127.0.0.1:15672"   # for list-available (default: the URL's host)
    # tls_ca_file, tls_cert_file, tls_key_file, tls_verify

    [queues.demo]
    routing_keys = ["#"]            # bindings of the queue (default "#": everything)
    # exchange = "demo"             # topic exchange to publish to (default: the queue's name)
    # queue_name = "demo"           # AMQP queue (default: the queue's name)
    # queue_type = "quorum"         # or classic; quorum queues count deliveries exactly
    # queue_arguments = { "x-max-length" = 100000 }
    # passive = false               # true: only check that the topology exists
    # persistent = true             # delivery mode 2
    # mandatory = false             # true: a message that matches no binding is an error

Topology: each logical queue is a durable topic exchange and a durable queue bound to it with the
queue's routing keys, declared by producers and consumers on first use, so a message published before
any worker started is kept. Queues may share an exchange (``exchange = "jobs"``) with different bindings.
``kq consume demo -r 'hello.*'`` consumes a queue of its own, ``demo[hello.*]``, bound with that key.

Publishing: persistent messages with ``content_type``, ``headers``, ``message_id``, and the TTL as
``expiration`` (milliseconds). A batch waits for publisher confirms once. A lost connection is retried
with backoff for ``publish_timeout`` seconds; the messages not yet confirmed are sent again
(at-least-once), and a batch confirmed only in part raises ``PublishError`` naming what went out.

Consuming: ``basic_consume`` with manual acknowledgements and a prefetch (``kq consume --prefetch``,
default 1). The connection is pumped by its own thread, so heartbeats continue while a command runs for
hours; the acknowledgement is sent after the command finished. ``redelivered`` and quorum queues'
``x-delivery-count`` give the delivery count. After a connection or channel loss the consume loop
reconnects with backoff and re-declares; unacknowledged messages are redelivered by the broker.
RabbitMQ's ``consumer_timeout`` (30 minutes by default) still applies to a single delivery: raise it on
the broker for longer commands.

Queue manager (``kq managequeue``): ``info`` (ready ``messages`` and ``consumers``, by passive
declaration), ``purge``, ``delete`` (and the queue's own exchange when unused), ``setup`` (declare the
configured topology), ``list-configured``, and ``list-available`` through the management API
(:class:`ManagementError` when it refuses, :class:`ManagementUnreachableError` when it cannot be
reached).

Capabilities per queue (``kq managequeue info``): delivery counts are exact on quorum queues and only a
redelivered flag on classic ones (so ``max_deliveries`` above 1 cannot work there; kq warns); delays up
to RabbitMQ's TTL limit, through delay queues; a consumer's ``-r`` reads a queue of its own (refused on
fanout and headers exchanges). Stream queues can be published to, not consumed.

Not yet: priorities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kq.core.plugins import lazy_exports
from kq.drivers.rabbitmq._driver import RabbitMQDriver
from kq.drivers.rabbitmq.version import __version__

if TYPE_CHECKING:
    from kq.drivers.rabbitmq._consumer import RabbitMQConsumer
    from kq.drivers.rabbitmq._errors import ManagementError, ManagementUnreachableError, PublishError
    from kq.drivers.rabbitmq._producer import RabbitMQProducer
    from kq.drivers.rabbitmq._queue_manager import RabbitMQQueueManager

# The driver class is what the ``kq.drivers`` entry point loads; the rest is imported on first use
# (PEP 562), so that a worker does not load the producer, the queue manager and the management client
# before it needs them (a worker that never dead-letters never needs the producer).
_LAZY = {
    "RabbitMQConsumer": "_consumer",
    "RabbitMQProducer": "_producer",
    "RabbitMQQueueManager": "_queue_manager",
    "ManagementError": "_errors",
    "ManagementUnreachableError": "_errors",
    "PublishError": "_errors",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    # the driver and its parts
    "RabbitMQConsumer",
    "RabbitMQDriver",
    "RabbitMQProducer",
    "RabbitMQQueueManager",
    # errors
    "ManagementError",
    "ManagementUnreachableError",
    "PublishError",
    # version
    "__version__",
]
