"""How a kq message travels as a STOMP frame, both ways, and routing keys as ActiveMQ selectors.

Sending (:func:`encode`): the body as it is, with ``content-length`` (binary bodies and NUL bytes
survive); ``content-type``; ``persistent: true``; the message id in ``kq-message-id`` (brokers own
``message-id``); the routing key in ``kq_routing_key`` (an identifier, so that an ActiveMQ selector can
name it: ``kq-routing-key`` would parse as a subtraction and silently match nothing); every message
header as a STOMP header of the same name (stomp.py escapes values as STOMP 1.2 says; ``Message`` has
already refused the names brokers reserve). A TTL is ``expires`` (ActiveMQ: absolute, epoch ms) or
``expiration`` (RabbitMQ: relative ms); a delay on ActiveMQ with its scheduler is
``AMQ_SCHEDULED_DELAY`` (ms).

Receiving (:func:`decode`): the broker adds headers of its own (``message-id``, ``destination``,
``subscription``, ``ack``, ``redelivered``, ActiveMQ's ``expires``/``priority``/``timestamp`` and
``scheduledJobId``, RabbitMQ's echo of the SEND's ``receipt``, ...). Signatures cover every header the
producer sent and only those, so everything a broker may add is stripped: every name kq refuses at
publish (:func:`kq.core._message`'s reserved names and prefixes: STOMP frame headers, ``JMS*``,
``AMQ_*``, ``x-death*``, ``x-delivery-count``, ...), the broker extras of :data:`BROKER_HEADERS`, and
the driver's own :data:`DRIVER_HEADERS`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping, Sequence

from kq.core.driver import (
    DRIVER_REDELIVERY,
    Message,
    MessageFormatError,
    UnsupportedOperationError,
    is_portable_header_name,
)

#: Flavours (driver option ``flavour``).
ACTIVEMQ = "activemq"
RABBITMQ = "rabbitmq"
FLAVOURS = (ACTIVEMQ, RABBITMQ)

#: The driver's own headers.
MESSAGE_ID = "kq-message-id"
ROUTING_KEY = "kq_routing_key"
#: How often a message was requeued (ActiveMQ's requeue copies); kq-core's transit header.
REQUEUES = DRIVER_REDELIVERY
DRIVER_HEADERS = frozenset({MESSAGE_ID, ROUTING_KEY, REQUEUES})
#: Headers brokers add that kq's reserved names do not cover (compared without case).
BROKER_HEADERS = frozenset(
    {
        "scheduledjobid",  # ActiveMQ, after AMQ_SCHEDULED_DELAY
        "original-destination",  # ActiveMQ virtual destinations
        "originalexpiration",  # ActiveMQ redelivery plugin
        "redeliverydelay",
        "dlqdeliveryfailurecause",  # ActiveMQ dead-letter strategy
        "content-encoding",  # RabbitMQ's AMQP property, when a foreign producer set it
        "app-id",
        "user-id",
        "cluster-id",
        "amqp-message-id",
        "amqp_message-id",
    }
)
#: Longest header line ActiveMQ accepts, in bytes once escaped (``name:value``; its StompWireFormat's
#: MAX_HEADER_LENGTH): a longer one gets an ERROR frame and the connection closed.
ACTIVEMQ_MAX_HEADER_LINE = 10 * 1024
#: What kq reads an ``expires: 0`` or a missing content type as.
NO_CONTENT_TYPE = ""


def encode(message: Message, *, flavour: str, now: float, scheduler: bool = False) -> dict[str, str]:
    """The SEND headers of ``message`` (all but ``destination`` and ``receipt``); ``now`` (epoch
    seconds) dates an ActiveMQ TTL."""
    headers: dict[str, str] = dict(message.headers)
    headers["content-type"] = message.content_type
    headers["content-length"] = str(len(message.body))
    headers["persistent"] = "true"
    headers[MESSAGE_ID] = message.message_id
    if message.routing_key:
        headers[ROUTING_KEY] = message.routing_key
    if message.ttl is not None:
        headers.update(ttl_header(message.ttl, flavour=flavour, now=now))
    if message.delay and flavour == ACTIVEMQ and scheduler:
        headers["AMQ_SCHEDULED_DELAY"] = str(max(1, math.ceil(message.delay * 1000)))
    if flavour == ACTIVEMQ:
        check_header_lines(headers, message.message_id)
    return headers


def _escaped_length(text: str) -> int:
    """Bytes of ``text`` once escaped as STOMP 1.2 escapes header names and values."""
    return len(text.encode()) + sum(text.count(c) for c in "\\\n\r:")


def check_header_lines(headers: Mapping[str, str], message_id: str) -> None:
    """Refuse, before anything is sent, a header ActiveMQ would refuse by closing the connection.

    Raises:
        MessageFormatError: a header line is longer than :data:`ACTIVEMQ_MAX_HEADER_LINE` bytes.
    """
    for name, value in headers.items():
        length = _escaped_length(name) + 1 + _escaped_length(value)
        if length >= ACTIVEMQ_MAX_HEADER_LINE:
            raise MessageFormatError(
                f"message {message_id}: header {name!r} takes {length} bytes on the wire; ActiveMQ "
                f"refuses a header line of {ACTIVEMQ_MAX_HEADER_LINE} bytes or more (put large values in "
                "the body)"
            )


def ttl_header(ttl: float, *, flavour: str, now: float) -> dict[str, str]:
    """The header that expires a message ``ttl`` seconds from ``now``: ActiveMQ ``expires`` (absolute
    epoch ms), RabbitMQ ``expiration`` (relative ms, at least 1)."""
    if flavour == ACTIVEMQ:
        return {"expires": str(math.ceil((now + ttl) * 1000))}
    return {"expiration": str(max(1, math.ceil(ttl * 1000)))}


def requeue_headers(headers: Mapping[str, str], count: int) -> dict[str, str]:
    """``headers`` of the copy of a message requeued ``count`` times (this requeue included)."""
    return {**headers, REQUEUES: str(count)}


@functools.lru_cache(maxsize=4096)  # a few names, repeated on every frame
def is_broker_header(name: str) -> bool:
    """Whether a received header is the broker's or the driver's, never a kq producer's."""
    if name.lower() in BROKER_HEADERS or name in DRIVER_HEADERS:
        return True
    # A name of the portable syntax that kq still refuses at publish is one brokers reserve (STOMP frame
    # headers, JMS*, AMQ_*, x-death*, x-delivery-count, ...): the broker added it. Names of another
    # syntax come from foreign producers and are kept (the consume loop handles them).
    return _NAME_SYNTAX.match(name) is not None and not is_portable_header_name(name)


#: The syntax of portable header names (kq.core.driver.is_portable_header_name adds the reserved names).
_NAME_SYNTAX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")

#: The producer's header names among a frame's header names, by the frame's names in order: a producer's
#: frames repeat the same few sets, so a consumer classifies each set once instead of every name of every
#: frame. Emptied when it reaches :data:`_PRODUCER_NAMES_MAX` sets (a foreign producer varying its names).
_PRODUCER_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}
_PRODUCER_NAMES_MAX = 1024


def producer_header_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """Those of a received frame's header ``names`` that are not the broker's or the driver's
    (:func:`is_broker_header`), in order."""
    kept = _PRODUCER_NAMES.get(names)
    if kept is None:
        kept = tuple(name for name in names if not is_broker_header(name))
        if len(_PRODUCER_NAMES) >= _PRODUCER_NAMES_MAX:
            _PRODUCER_NAMES.clear()
        _PRODUCER_NAMES[names] = kept
    return kept


@dataclasses.dataclass(slots=True)
class Decoded:
    """A MESSAGE frame as kq reads it."""

    body: bytes
    content_type: str
    headers: dict[str, str]
    routing_key: str
    message_id: str
    delivery_count: int
    ack_id: str
    requeues: int = 0
    defects: list[str] = dataclasses.field(default_factory=list)


def decode(frame_headers: Mapping[str, str], body: bytes | str | None) -> Decoded:
    """Read a MESSAGE frame: what the producer sent, without what the broker added.

    Never raises: what cannot be read is described in ``defects`` (the consume loop dead-letters it).
    """
    defects: list[str] = []
    if isinstance(body, str):  # a stomp.py with auto_decode on
        body = body.encode()
    elif body is None:
        body = b""
    kept = producer_header_names(tuple(frame_headers))
    headers = {name: frame_headers[name] for name in kept} if kept else {}
    message_id = frame_headers.get(MESSAGE_ID) or frame_headers.get("message-id") or ""
    if not message_id:
        defects.append("no message id")
    return Decoded(
        body=body,
        content_type=frame_headers.get("content-type", NO_CONTENT_TYPE),
        headers=headers,
        routing_key=frame_headers.get(ROUTING_KEY, ""),
        message_id=message_id,
        delivery_count=delivery_count(frame_headers),
        ack_id=frame_headers.get("ack") or frame_headers.get("message-id") or "",
        requeues=_count(frame_headers.get(REQUEUES, "")),
        defects=defects,
    )


def _count(text: str) -> int:
    """A count kq wrote (ASCII digits), 0 for anything else."""
    return int(text) if text.isascii() and text.isdigit() else 0


def delivery_count(headers: Mapping[str, str]) -> int:
    """1 on a first delivery; 2 when the broker flags a redelivery or kq requeued a copy ("flag");
    RabbitMQ quorum queues' ``x-delivery-count`` + 1 where present."""
    count = 2 if headers.get("redelivered", "").lower() == "true" or REQUEUES in headers else 1
    quorum = headers.get("x-delivery-count", "")
    if quorum.isascii() and quorum.isdigit():
        count = max(count, int(quorum) + 1)
    return count


# -- routing keys as ActiveMQ selectors ------------------------------------------------------------

_LIKE_SPECIAL = re.compile(r"([%_!])")


def _literal(text: str) -> str:
    """``text`` as a selector string literal."""
    return "'" + text.replace("'", "''") + "'"


def _like(pattern: str) -> str:
    """A LIKE pattern (``%`` any text) made of literal text and ``\0`` for "any text"."""
    escaped = _LIKE_SPECIAL.sub(r"!\1", pattern).replace("\0", "%")
    return f"{_literal(escaped)} ESCAPE '!'"


def selector_for(patterns: Sequence[str]) -> str | None:
    """The JMS selector taking the messages whose routing key matches one of ``patterns`` (AMQP topic
    patterns), or ``None`` for every message.

    Exact: keys without wildcards, ``*`` words without ``#``, a literal key followed by ``.#``, ``#.``
    followed by a literal key, and ``#``.

    Raises:
        UnsupportedOperationError: a pattern mixes ``*`` and ``#`` or has ``#`` in the middle; a
            selector cannot express it exactly.
    """
    clauses: list[str] = []
    refused: list[str] = []
    for pattern in patterns:
        clause = _clause(pattern)
        if clause is None:
            return None  # "#": everything
        if clause == "":
            refused.append(pattern)
        else:
            clauses.append(clause)
    if refused:
        raise UnsupportedOperationError(
            f"ActiveMQ selectors cannot express the routing pattern(s) {refused} exactly: use exact keys, "
            "'*' words without '#', 'key.#' or '#.key'"
        )
    if not clauses:
        return None
    return " OR ".join(f"({c})" for c in clauses) if len(clauses) > 1 else clauses[0]


def _clause(pattern: str) -> str | None:
    """The selector of one pattern; ``None`` for every key, ``""`` when it cannot be exact."""
    words = pattern.split(".")
    if all(w == "#" for w in words):
        return None
    wild = [w for w in words if w in ("*", "#")]
    if any(("*" in w or "#" in w) and w not in ("*", "#") for w in words):
        return ""  # a wildcard inside a word is a literal in AMQP; keep clear of it
    if not wild:
        return f"{ROUTING_KEY} = {_literal(pattern)}"
    if "#" not in wild:
        # Only '*': as many words as the pattern (no more dots), each literal word in place.
        like = ".".join("\0" if w == "*" else w for w in words)
        too_many = "\0" + ".\0" * len(words)
        return f"{ROUTING_KEY} LIKE {_like(like)} AND {ROUTING_KEY} NOT LIKE {_like(too_many)}"
    if len(wild) == 1 and words[-1] == "#":
        prefix = ".".join(words[:-1])
        return f"{ROUTING_KEY} = {_literal(prefix)} OR {ROUTING_KEY} LIKE {_like(prefix + '.' + chr(0))}"
    if len(wild) == 1 and words[0] == "#":
        suffix = ".".join(words[1:])
        return f"{ROUTING_KEY} = {_literal(suffix)} OR {ROUTING_KEY} LIKE {_like(chr(0) + '.' + suffix)}"
    return ""
