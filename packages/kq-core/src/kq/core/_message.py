"""The message model shared by every driver.

A :class:`Message` is what a producer sends; a :class:`Delivery` is what a consumer receives: the same
message plus where it came from (the logical queue), how many times the broker has handed it out, and an
opaque handle the driver needs to settle it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kq.core._errors import MessageFormatError
from kq.core._numbers import check_number

#: Content type of every body kq encodes itself.
JSON = "application/json"

#: Prefix of the headers kq uses for its own metadata (attempts, signatures, dead-letter reasons, ...).
KQ_HEADER_PREFIX = "kq-"

# Headers kq writes on a message after it was published. They are listed here, once, because signatures
# must leave out exactly these.
#: Header counting execution attempts (absent: the first).
ATTEMPT = "kq-attempt"
#: Headers added to a dead-lettered message.
DEAD_LETTER_REASON = "kq-dead-letter-reason"
DEAD_LETTER_ERROR = "kq-dead-letter-error"
DEAD_LETTER_QUEUE = "kq-original-queue"
DEAD_LETTER_TIME = "kq-dead-lettered-at"
DEAD_LETTER_DELIVERIES = "kq-delivery-count"
#: Headers of a dead letter whose names kq cannot publish, as a JSON object.
DEAD_LETTER_FOREIGN_HEADERS = "kq-dead-letter-foreign-headers"
#: A driver's own bookkeeping (RabbitMQ: the routing key of a copy sent straight to one queue, and how
#: often the original of a delayed requeue was delivered).
DRIVER_ROUTING_KEY = "kq-routing-key"
DRIVER_REDELIVERY = "kq-redelivery"
#: Every header kq or a driver may change in transit.
TRANSIT_HEADERS = frozenset(
    {
        ATTEMPT,
        DEAD_LETTER_REASON,
        DEAD_LETTER_ERROR,
        DEAD_LETTER_QUEUE,
        DEAD_LETTER_TIME,
        DEAD_LETTER_DELIVERIES,
        DEAD_LETTER_FOREIGN_HEADERS,
        DRIVER_ROUTING_KEY,
        DRIVER_REDELIVERY,
    }
)

#: Header carrying a message's ordering group (SQS FIFO ``MessageGroupId``): an ordinary, signed header,
#: so that retry, dead-letter and re-drive copies keep it.
GROUP = "kq-group"

# Header names kq lets producers use: letters, digits, "-", "_" and "." (what SQS allows in attribute
# names; STOMP and AMQP accept more), at most 128 characters, values always strings (STOMP headers are
# text) -- and none of the names that brokers reserve, rewrite or choke on. Drivers still pack headers as
# their broker needs (SQS allows 10 attributes; see docs/writing-a-driver.md).
_HEADER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
#: Names (compared without case) that a broker reserves for itself. STOMP frames and JMS properties: a
#: user header ``priority``, ``timestamp`` or ``expires`` makes ActiveMQ drop the connection, and
#: RabbitMQ's STOMP plugin refuses ``priority``, ``timestamp``, ``message-id`` and ``expiration``; the
#: others are rewritten or swallowed on the way.
RESERVED_HEADER_NAMES = frozenset(
    {
        "ack",
        "content-length",
        "content-type",
        "correlation-id",
        "destination",
        "expiration",
        "expires",
        "heart-beat",
        "host",
        "id",
        "login",
        "message-id",
        "passcode",
        "persistent",
        "priority",
        "receipt",
        "receipt-id",
        "redelivered",
        "reply-to",
        "selector",
        "server",
        "session",
        "subscription",
        "timestamp",
        "transaction",
        "transformation",
        "type",
        "version",
    }
)
#: Prefixes (compared without case) of names brokers reserve: JMS and ActiveMQ properties, RabbitMQ's
#: ``x-death``/``x-delivery-count`` family and queue arguments, SQS's ``AWS.`` and ``Amazon.``.
RESERVED_HEADER_PREFIXES = (
    "jms",
    "amq_",
    "activemq.",
    "x-death",
    "x-first-death",
    "x-last-death",
    "x-delivery-count",
    "x-message-ttl",
    "x-dead-letter",
    "x-max-",
    "x-queue-",
    "aws.",
    "amazon.",
)


def new_message_id() -> str:
    """Return a new random message id (32 hexadecimal characters)."""
    return uuid.uuid4().hex


def is_portable_header_name(name: object) -> bool:
    """Whether ``name`` is a header name kq producers accept: letters, digits, ``_``, ``-``, ``.``, and
    not one that brokers reserve (:data:`RESERVED_HEADER_NAMES`, :data:`RESERVED_HEADER_PREFIXES`)."""
    if type(name) is str and name in _PORTABLE_NAMES_SEEN:
        return True
    portable = (
        isinstance(name, str) and _HEADER_NAME.match(name) is not None and not is_reserved_header_name(name)
    )
    if portable and type(name) is str:
        _remember_portable_name(name)
    return portable


def all_portable_header_names(names: Iterable[str]) -> bool:
    """Whether every name in ``names`` is portable (:func:`is_portable_header_name`); a worker checks
    each delivery's headers so, and the same few names come again and again."""
    if _PORTABLE_NAMES_SEEN.issuperset(names):
        return True
    return all(is_portable_header_name(name) for name in names)


# Names found portable before: a worker sees the same few names on every message, and a regular
# expression plus two reserved-name look-ups per name is most of the cost of checking them. Bounded, so
# that a stream of made-up names cannot grow it without end.
_PORTABLE_NAMES_SEEN: set[str] = set()
_PORTABLE_NAMES_SEEN_MAX = 4096


def _remember_portable_name(name: str) -> None:
    if len(_PORTABLE_NAMES_SEEN) >= _PORTABLE_NAMES_SEEN_MAX:
        _PORTABLE_NAMES_SEEN.clear()
    _PORTABLE_NAMES_SEEN.add(name)


def is_reserved_header_name(name: str) -> bool:
    """Whether a broker reserves ``name`` (STOMP frame headers, JMS/ActiveMQ, RabbitMQ, SQS names)."""
    lowered = name.lower()
    return lowered in RESERVED_HEADER_NAMES or lowered.startswith(RESERVED_HEADER_PREFIXES)


def check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Validate portable headers and return them as a plain dict.

    Raises:
        MessageFormatError: a name is not portable or a value is not a string.
    """
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or _HEADER_NAME.match(name) is None:
            raise MessageFormatError(
                f"header name {name!r} is not portable: use letters, digits, '_', '-' and '.' (at most 128)"
            )
        if is_reserved_header_name(name):
            raise MessageFormatError(
                f"header name {name!r} is reserved by message brokers (STOMP, JMS, RabbitMQ or SQS use it "
                "themselves, and some drop the connection over it): choose another name, e.g. 'x-' + name"
            )
        if not isinstance(value, str):
            raise MessageFormatError(f"header {name!r} must be a string, not {type(value).__name__}")
        checked[name] = value
    return checked


@dataclass(frozen=True)
class Message:
    """A message to publish.

    Attributes:
        body: The payload, as bytes (producers encode JSON themselves).
        content_type: MIME type of ``body``; consumers decode by it.
        headers: Portable string headers. Names starting with ``kq-`` are reserved for kq.
        routing_key: Topic-style key (``words.separated.by.dots``); empty for none.
        message_id: Unique id, generated when not given; it is kept across redeliveries and
            dead-lettering and appears in every log line about the message.
        ttl: Seconds after which an undelivered message expires (``None``: never); finite, more than 0
            and at most :data:`~kq.core._numbers.MAX_SECONDS`.
        delay: Seconds to wait before the message becomes visible to consumers; finite, from 0 to
            :data:`~kq.core._numbers.MAX_SECONDS`.
    """

    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    routing_key: str = ""
    message_id: str = field(default_factory=new_message_id)
    ttl: float | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.body, bytes):
            raise MessageFormatError(f"message body must be bytes, not {type(self.body).__name__}")
        try:
            # Finite and at most MAX_SECONDS: nan passes "<= 0", and inf overflows time arithmetic.
            if self.ttl is not None:
                check_number(self.ttl, "ttl", exclusive_minimum=True)
            check_number(self.delay, "delay")
        except ValueError as exc:
            raise MessageFormatError(str(exc)) from None
        if not self.content_type:
            raise MessageFormatError("content type must not be empty")
        object.__setattr__(self, "headers", check_headers(self.headers))


def with_headers_unchecked(message: Message, headers: dict[str, str]) -> Message:
    """``message`` with ``headers`` instead of its own, without validating anything again.

    For kq's own code that adds headers it knows to be portable text (the signer's ``kq-*`` headers)
    to a message that was validated when it was made: building a :class:`Message` checks every header
    again, which was half the cost of signing one.
    """
    copy = object.__new__(Message)
    for name in ("body", "content_type", "routing_key", "message_id", "ttl", "delay"):
        object.__setattr__(copy, name, getattr(message, name))
    object.__setattr__(copy, "headers", headers)
    return copy


@dataclass(eq=False)
class Delivery:
    """A message as received by a driver consumer, until it is settled (acked or rejected).

    Attributes:
        queue: The logical queue name it was received from (as configured in kq, not the broker's).
        delivery_count: How many times the broker has handed this message out, this time included
            (1 on the first delivery). Drivers map AMQP ``redelivered``/``x-delivery-count``, SQS
            ``ApproximateReceiveCount`` and STOMP redelivery headers onto it.
        handle: Driver-private data needed to settle the delivery (delivery tag, receipt handle, ...).
        settled: Set by the consumer once the delivery is acked or rejected.
        defect: Set by the driver when part of what the broker handed over could not be read (headers
            that are not a string mapping, a body of the wrong type, ...): what was wrong, in words. The
            other fields then hold what could be salvaged, and the consume loop dead-letters the
            delivery with reason ``malformed`` instead of handling it. ``None`` for a sound delivery.
        lease_expires: When the delivery's lease ends, on :func:`time.monotonic`'s clock, for drivers
            whose deliveries time out (``Capabilities.lease_extension``); ``None`` where a delivery is
            held until settled or disconnected. Set by the driver when it hands the delivery out (a
            buffered delivery's lease started when the broker handed it over, not when ``receive``
            returned it) and moved by ``Consumer.extend``; the consume loop's lease keeper schedules
            extensions from it.
    """

    body: bytes
    content_type: str
    headers: dict[str, str]
    routing_key: str
    message_id: str
    queue: str
    delivery_count: int = 1
    handle: Any = None
    owner: object = None
    settled: bool = False
    defect: str | None = None
    lease_expires: float | None = None

    @property
    def redelivered(self) -> bool:
        """Whether the broker has delivered this message before."""
        return self.delivery_count > 1

    def to_message(self, **changes: Any) -> Message:
        """Return a :class:`Message` with this delivery's content, for republishing."""
        values: dict[str, Any] = {
            "body": self.body,
            # A foreign message may have no content type; kq reads such bodies as JSON, so says so.
            "content_type": self.content_type or JSON,
            "headers": self.headers,  # Message checks and copies them
            "routing_key": self.routing_key,
            "message_id": self.message_id,
        }
        values.update(changes)
        return Message(**values)

    def __repr__(self) -> str:
        return (
            f"<Delivery id={self.message_id} queue={self.queue!r} key={self.routing_key!r} "
            f"count={self.delivery_count} {len(self.body)} bytes {self.content_type}>"
        )
