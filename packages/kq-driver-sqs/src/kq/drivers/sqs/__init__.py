"""kq's Amazon SQS driver, on boto3 (AWS, LocalStack, moto).

Install ``kq-driver-sqs`` and point a driver instance at SQS::

    default_driver = "sqs"

    [drivers.sqs]
    type = "sqs"
    region = "eu-west-1"            # else boto3's configuration (AWS_DEFAULT_REGION, ~/.aws/config)
    # endpoint_url = "http://127.0.0.1:4566"    # LocalStack, moto or another emulator
    # access_key_id = "${AWS_ACCESS_KEY_ID}"    # else boto3's credential chain (environment, profile, role)
    # secret_access_key = "${AWS_SECRET_ACCESS_KEY}"
    queue_prefix = "prod-"          # prefix of every SQS queue name
    create_queues = true            # create a missing queue on first use
    visibility_timeout = 30         # seconds a received message stays invisible (kq extends it)
    wait_time = 20                  # longest long poll (s)

    [queues.demo]
    routing_keys = ["#"]
    # fifo = true                   # a FIFO queue (SQS name demo.fifo)
    # group_id = "orders"           # MessageGroupId of messages without a kq-group header
    # attributes = { MessageRetentionPeriod = "1209600" }   # when kq creates the queue
    # queue_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/demo"
    # sqs_name = "legacy-demo"      # the SQS name, when not mapped from the logical name

Names: SQS names allow letters, digits, ``-`` and ``_`` only, so a logical name's dots become ``-``
(``demo.failed``, the dead-letter queue of ``demo``, is the SQS queue ``demo-failed``); FIFO names end
in ``.fifo``. Two logical queues that would share an SQS queue are refused.

Wire format: the body as it is when it is text SQS accepts (PHP's JSON), else base64; the message
attributes ``contentType`` and ``routingKey`` as the PHP library names them, and one ``kq`` attribute
holding, as JSON, the message id, every header, the TTL's expiry and the body encoding. So a message
never needs more than 3 of the 10 attributes SQS allows, and a PHP producer's message is read as it is.

Routing keys are emulated as an AMQP exchange routes: a producer sends a message only when its key
matches the queue's ``routing_keys``; a consumer's own narrower key (``kq consume -r``) is refused,
since SQS cannot leave other consumers' messages alone; a message with a non-matching key put there by
another producer is dead-lettered as malformed.

Consuming: long polls of up to ``wait_time`` seconds (bounded by the consume loop's poll interval: set
``poll_interval = 20`` on an idle SQS worker to pay ~4,300 requests a day rather than ~86,000), up to
10 messages per call with ``--prefetch``, buffered with their leases; ack deletes, requeue with delay
changes the visibility (at most 12 h), the lease keeper extends the visibility of long handlers. The
delivery count is ``ApproximateReceiveCount`` (it counts every receive, releases included), so
``max_deliveries`` does not apply: give the queue a redrive policy (``kq managequeue create demo -a
dead_letter_queue=demo.failed -a max_receives=10``) for poison messages.

Queue manager (``kq managequeue``): ``list-available``, ``list-configured``, ``info``, ``purge`` (once
per 60 s), ``delete``, ``create`` and ``setup``. See docs/sqs.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kq.core.plugins import lazy_exports
from kq.drivers.sqs._driver import SqsDriver
from kq.drivers.sqs.version import __version__

if TYPE_CHECKING:
    from kq.drivers.sqs._consumer import SqsConsumer
    from kq.drivers.sqs._errors import MessageFormatError, PublishError, QueueMissingError, SqsRequestError
    from kq.drivers.sqs._producer import SqsProducer
    from kq.drivers.sqs._queue_manager import SqsQueueManager

# The driver class is what the ``kq.drivers`` entry point loads; the rest is imported on first use
# (PEP 562), so that a worker does not load the producer and the queue manager before it needs them.
_LAZY = {
    "SqsConsumer": "_consumer",
    "SqsProducer": "_producer",
    "SqsQueueManager": "_queue_manager",
    "MessageFormatError": "_errors",
    "PublishError": "_errors",
    "QueueMissingError": "_errors",
    "SqsRequestError": "_errors",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    # the driver and its parts
    "SqsConsumer",
    "SqsDriver",
    "SqsProducer",
    "SqsQueueManager",
    # errors
    "MessageFormatError",
    "PublishError",
    "QueueMissingError",
    "SqsRequestError",
    # version
    "__version__",
]
