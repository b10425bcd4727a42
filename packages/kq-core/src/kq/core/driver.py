"""The driver-author surface: what a kq driver implements and uses.

A driver package subclasses :class:`Driver`, :class:`Producer`, :class:`Consumer` and
:class:`QueueManager`, declares what it can do in :class:`Capabilities` and its settings as
:class:`Option` items, registers in the ``kq.drivers`` entry-point group (:mod:`kq.core.plugins`) and
proves the contract with the conformance suite of :mod:`kq.core.testing`. ``docs/writing-a-driver.md``
walks through it. Importing this module loads no client library and neither psutil nor requests.

The names, by group:

Contract
    :class:`Driver` hands out a :class:`Producer`, a :class:`Consumer` and a :class:`QueueManager` for
    logical queues; a driver implements their protected ``_hooks`` and the public methods keep the state
    rules. :class:`Capabilities` declares what a driver (or one queue on it) supports;
    :data:`STANDARD_ACTIONS` are the queue-manager actions kq knows;
    :func:`poison_protection_problem` says why a queue's ``max_deliveries`` cannot protect it, if so.

Configuration
    :class:`DriverSpec` is a ``[drivers.*]`` section and :class:`QueueSpec` a ``[queues.*]`` one, as the
    driver receives them; :class:`Option` declares one driver option (type, default, bounds, secret).
    :func:`check_number` and :func:`check_whole_number` check numbers the way options are checked, up
    to :data:`MAX_SECONDS` for durations.

Messages
    :class:`Message` is what a producer sends and :class:`Delivery` what a consumer hands out.
    :func:`new_message_id` makes message ids. Headers starting with :data:`KQ_HEADER_PREFIX` are kq's;
    :data:`TRANSIT_HEADERS` are those kq or a driver may change in transit (signatures leave them out),
    among them the driver's own bookkeeping, :data:`DRIVER_ROUTING_KEY` and :data:`DRIVER_REDELIVERY`;
    :data:`GROUP` carries a message's ordering group (SQS FIFO ``MessageGroupId``); :data:`ATTEMPT` is
    the execution attempt, which a driver that retries in place counts itself.
    :func:`is_portable_header_name` says whether every broker can carry a header name; :data:`JSON` is
    the content type kq writes.

Routing
    :func:`topic_matches` matches an AMQP topic pattern (``*`` one word, ``#`` zero or more) against a
    routing key and :func:`matches_any` any of several, for brokers without topic routing;
    :func:`check_routing_key` checks a key.

Errors
    What a driver raises, all :class:`KqError`: :class:`ConfigError` (bad options),
    :class:`BrokerUnavailableError` (the broker cannot be reached; the loop retries),
    :class:`PublishError`, :class:`UnknownQueueError`, :class:`UnsupportedOperationError`,
    :class:`ClosedError` (use after close), :class:`DeliveryStateError` (settled twice, or through the
    wrong consumer), :class:`LeaseLostError` (a lease lapsed and the message went to another consumer)
    and :class:`MessageFormatError`.

The names are imported on first use (PEP 562), as in :mod:`kq.core`.
"""

from __future__ import annotations

from kq.core._lazy import TYPE_CHECKING, lazy_exports

if TYPE_CHECKING:
    from kq.core._capabilities import STANDARD_ACTIONS, Capabilities
    from kq.core._driver import Driver
    from kq.core._driver_consumer import Consumer
    from kq.core._driver_producer import Producer
    from kq.core._errors import (
        BrokerUnavailableError,
        ClosedError,
        ConfigError,
        DeliveryStateError,
        KqError,
        LeaseLostError,
        MessageFormatError,
        PublishError,
        UnknownQueueError,
        UnsupportedOperationError,
    )
    from kq.core._failures import poison_protection_problem
    from kq.core._message import (
        ATTEMPT,
        DRIVER_REDELIVERY,
        DRIVER_ROUTING_KEY,
        GROUP,
        JSON,
        KQ_HEADER_PREFIX,
        TRANSIT_HEADERS,
        Delivery,
        Message,
        is_portable_header_name,
        new_message_id,
    )
    from kq.core._numbers import MAX_SECONDS, check_number, check_whole_number
    from kq.core._options import Option
    from kq.core._queue_manager import QueueManager
    from kq.core._routing import check_routing_key, matches_any, topic_matches
    from kq.core._spec import DriverSpec, QueueSpec

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        # contract
        "Capabilities": "_capabilities",
        "Consumer": "_driver_consumer",
        "Driver": "_driver",
        "Producer": "_driver_producer",
        "QueueManager": "_queue_manager",
        "STANDARD_ACTIONS": "_capabilities",
        "poison_protection_problem": "_failures",
        # configuration
        "DriverSpec": "_spec",
        "MAX_SECONDS": "_numbers",
        "Option": "_options",
        "QueueSpec": "_spec",
        "check_number": "_numbers",
        "check_whole_number": "_numbers",
        # messages
        "ATTEMPT": "_message",
        "DRIVER_REDELIVERY": "_message",
        "DRIVER_ROUTING_KEY": "_message",
        "Delivery": "_message",
        "GROUP": "_message",
        "JSON": "_message",
        "KQ_HEADER_PREFIX": "_message",
        "Message": "_message",
        "TRANSIT_HEADERS": "_message",
        "is_portable_header_name": "_message",
        "new_message_id": "_message",
        # routing
        "check_routing_key": "_routing",
        "matches_any": "_routing",
        "topic_matches": "_routing",
        # errors
        "BrokerUnavailableError": "_errors",
        "ClosedError": "_errors",
        "ConfigError": "_errors",
        "DeliveryStateError": "_errors",
        "KqError": "_errors",
        "LeaseLostError": "_errors",
        "MessageFormatError": "_errors",
        "PublishError": "_errors",
        "UnknownQueueError": "_errors",
        "UnsupportedOperationError": "_errors",
    },
    package="kq.core",
)

__all__ = [
    # contract
    "Capabilities",
    "Consumer",
    "Driver",
    "Producer",
    "QueueManager",
    "STANDARD_ACTIONS",
    "poison_protection_problem",
    # configuration
    "DriverSpec",
    "MAX_SECONDS",
    "Option",
    "QueueSpec",
    "check_number",
    "check_whole_number",
    # messages
    "ATTEMPT",
    "DRIVER_REDELIVERY",
    "DRIVER_ROUTING_KEY",
    "Delivery",
    "GROUP",
    "JSON",
    "KQ_HEADER_PREFIX",
    "Message",
    "TRANSIT_HEADERS",
    "is_portable_header_name",
    "new_message_id",
    # routing
    "check_routing_key",
    "matches_any",
    "topic_matches",
    # errors
    "BrokerUnavailableError",
    "ClosedError",
    "ConfigError",
    "DeliveryStateError",
    "KqError",
    "LeaseLostError",
    "MessageFormatError",
    "PublishError",
    "UnknownQueueError",
    "UnsupportedOperationError",
]
