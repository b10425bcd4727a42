"""Failures: why a delivery could not be handled, and the dead-letter format that records it.

The reasons are named once, here (:data:`FailureReason`): the consume loop, the failure policy
(:mod:`kq.core._failure_policy`), the ready-made listeners and the metrics use these constants. A dead
letter is a copy of the failed message with ``kq-dead-letter-*`` headers; :func:`dead_letter_message`
writes them and :func:`describe_dead_letter` reads them back (for ``kq failed show``), so the format
lives in one module. Re-drive and metrics import from this module, never from the loop.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from kq.core._errors import KqError, MessageFormatError, SignatureError
from kq.core._message import (
    ATTEMPT,
    DEAD_LETTER_DELIVERIES,
    DEAD_LETTER_ERROR,
    DEAD_LETTER_FOREIGN_HEADERS,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_REASON,
    DEAD_LETTER_TIME,
    KQ_HEADER_PREFIX,
    Delivery,
    Message,
    is_portable_header_name,
)
from kq.core._signing import (
    BAD_SIGNATURE,
    EXPIRED,
    KEY_ID,
    NOT_YET_VALID,
    REPLAYED,
    UNKNOWN_KEY,
    UNSIGNED,
)

if TYPE_CHECKING:
    from kq.core._capabilities import Capabilities
    from kq.core._signing import Verifier
    from kq.core._spec import QueueSpec

#: Why a delivery failed: ``kq-dead-letter-reason``, ``MessageConsumptionFailed.reason`` and the metrics'
#: ``reason`` label.
FailureReason = Literal[
    "failed",
    "timeout",
    "malformed",
    "undecodable",
    "invalid",
    "not-allowed",
    "poison",
    "unsigned",
    "unknown-key",
    "bad-signature",
    "not-yet-valid",
    "expired",
    "replayed",
]

#: The work ran and failed: the handler raised or a command exited non-zero.
FAILED: Final = "failed"
#: The work ran past its time limit and was stopped (a command killed, an in-process call interrupted).
TIMEOUT: Final = "timeout"
#: The driver could not read what the broker handed over (``Delivery.defect``).
MALFORMED: Final = "malformed"
#: The body does not decode for its content type.
UNDECODABLE: Final = "undecodable"
#: It decodes but is not a valid message for its handler.
INVALID: Final = "invalid"
#: It asks for something outside the allow-lists.
NOT_ALLOWED: Final = "not-allowed"
#: Delivered more than ``max_deliveries`` times without being settled.
POISON: Final = "poison"

#: The reasons the loop and the failure policy give; :data:`SIGNATURE_REASONS` are the verifier's
#: (``SignatureError.reason``).
REASONS: tuple[FailureReason, ...] = (FAILED, TIMEOUT, MALFORMED, UNDECODABLE, INVALID, NOT_ALLOWED, POISON)
SIGNATURE_REASONS: frozenset[FailureReason] = frozenset(
    {UNSIGNED, UNKNOWN_KEY, BAD_SIGNATURE, NOT_YET_VALID, EXPIRED, REPLAYED}
)
#: Signature outcomes that still prove the content is authentic (only its age or reuse is wrong).
AUTHENTIC_SIGNATURE_REASONS: frozenset[FailureReason] = frozenset({EXPIRED, NOT_YET_VALID, REPLAYED})
#: Failure reasons of messages that were decoded and announced (``message_received``) first; the
#: others (malformed, undecodable, poison, signature problems) failed before that.
RECEIVED_FAILURE_REASONS: frozenset[FailureReason] = frozenset({FAILED, TIMEOUT, INVALID, NOT_ALLOWED})
#: Failure reasons of work that ran and may succeed another time: the queue's retry policy applies.
RETRIED_REASONS: frozenset[FailureReason] = frozenset({FAILED, TIMEOUT})

#: Longest error text kept in a dead-letter header.
MAX_ERROR_HEADER = 1000
#: Characters of a text body shown by :func:`describe_dead_letter`.
PREVIEW_CHARS = 200


@dataclass(frozen=True)
class Failure:
    """Why a delivery could not be handled: its decoded body (``None`` if it failed before decoding), the
    error, and the reason."""

    body: Any
    error: Exception
    reason: FailureReason


def attempt_of(delivery: Delivery) -> int:
    """The execution attempt a delivery is (``kq-attempt`` header; 1 when absent or malformed)."""
    try:
        return max(1, int(delivery.headers.get(ATTEMPT, "1")))
    except ValueError:
        return 1


def refusal(
    delivery: Delivery,
    verifier: Verifier | None,
    signed_for: Collection[str],
    spec: QueueSpec,
    capabilities: Capabilities,
) -> Failure | None:
    """Why ``delivery`` must not be handled at all, checked before its body is decoded, or ``None``.

    In this order: the driver could not read it (:data:`MALFORMED`), its signature does not check for
    one of ``signed_for`` (when a ``verifier`` is given), it came more than ``max_deliveries`` times
    (:data:`POISON`).
    """
    if delivery.defect is not None:
        # The driver could not read all of it: nothing about it can be trusted, so nothing runs.
        return Failure(None, MessageFormatError(delivery.defect), MALFORMED)
    # Authenticity first: a forged delivery count must not decide why a forged message is refused.
    if verifier is not None:
        try:
            verifier.verify(delivery, signed_for)
        except SignatureError as exc:
            return Failure(None, exc, cast("FailureReason", exc.reason))  # one of SIGNATURE_REASONS
    return _poison(delivery, spec.max_deliveries, capabilities.delivery_count)


def _poison(delivery: Delivery, max_deliveries: int, delivery_count: str) -> Failure | None:
    # A count of receives also grows with releases and browses: it cannot prove a handler crashed.
    if not max_deliveries or delivery.delivery_count <= max_deliveries or delivery_count == "receives":
        return None
    # Delivered again and again without being settled: its handler kills or hangs the worker. Handling
    # it once more would do the same; keep it aside instead.
    error = KqError(
        f"delivered {delivery.delivery_count} times, more than max_deliveries = {max_deliveries}: a worker "
        "died or lost its connection while handling it each time"
    )
    return Failure(None, error, POISON)


def poison_protection_problem(max_deliveries: int, delivery_count: str) -> str | None:
    """Why ``max_deliveries`` cannot protect a queue whose driver counts deliveries as ``delivery_count``
    says (``Capabilities.delivery_count``), or ``None`` when it works."""
    if not max_deliveries or delivery_count == "exact":
        return None
    if delivery_count == "flag" and max_deliveries > 1:
        return (
            f"max_deliveries = {max_deliveries} cannot work: the broker only flags a redelivery (the count "
            "is 1 or 2), so poison protection is off; max_deliveries = 1 dead-letters every redelivered "
            "message instead (a RabbitMQ quorum queue counts exactly)"
        )
    if delivery_count == "receives":
        return (
            f"max_deliveries = {max_deliveries} is not applied: the broker counts receives, which releases "
            "and browses raise too, so a message that never ran could look like poison; use the broker's "
            "own redrive limit if you accept that"
        )
    return None


def dead_letter_message(delivery: Delivery, failure: Failure, *, plain: bool = False) -> Message:
    """The copy of ``delivery`` that goes to the dead-letter queue, with the ``kq-dead-letter-*`` headers.

    Header names a foreign producer may send but kq cannot publish (``X-Php Trace``) are kept, in one
    JSON header; a ``plain`` copy (for a dead-letter queue that refused the first) keeps every header
    there.
    """
    headers: dict[str, str] = {}
    foreign: dict[str, str] = {}
    for name, value in delivery.headers.items():
        keep = not plain and is_portable_header_name(name) and isinstance(value, str)
        (headers if keep else foreign)[name] = value
    if foreign:
        headers[DEAD_LETTER_FOREIGN_HEADERS] = json.dumps(foreign, ensure_ascii=False, default=str)
    error = failure.error
    headers[DEAD_LETTER_REASON] = failure.reason
    # A command's last line of output often carries terminal escapes: brokers refuse control characters.
    headers[DEAD_LETTER_ERROR] = printable(f"{type(error).__name__}: {error}")[:MAX_ERROR_HEADER]
    headers[DEAD_LETTER_QUEUE] = delivery.queue
    headers[DEAD_LETTER_TIME] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    headers[DEAD_LETTER_DELIVERIES] = str(delivery.delivery_count)
    return delivery.to_message(headers=headers)


def describe_dead_letter(delivery: Delivery) -> dict[str, Any]:
    """What ``kq failed show`` says about one dead-lettered delivery (the headers
    :func:`dead_letter_message` wrote, and a preview of the body)."""
    headers = delivery.headers
    return {
        "message_id": delivery.message_id,
        "reason": headers.get(DEAD_LETTER_REASON),
        "error": headers.get(DEAD_LETTER_ERROR),
        "dead_lettered_at": headers.get(DEAD_LETTER_TIME),
        "original_queue": headers.get(DEAD_LETTER_QUEUE),
        "routing_key": delivery.routing_key,
        "content_type": delivery.content_type,
        "attempts": attempt_of(delivery),
        "delivery_count": _int_or_none(headers.get(DEAD_LETTER_DELIVERIES)),
        "key_id": headers.get(KEY_ID),
        "size": len(delivery.body),
        "body": body_preview(delivery.body),
        "headers": {k: v for k, v in headers.items() if not k.startswith(KQ_HEADER_PREFIX)},
    }


def body_preview(body: bytes, chars: int = PREVIEW_CHARS) -> str:
    """The first ``chars`` characters of a text body, or ``<N bytes>`` for a binary one."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(body)} bytes>"
    if any((c < " " and c not in "\t\n\r") or c == "\x7f" for c in text):
        return f"<{len(body)} bytes>"
    return text[:chars]


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes, NUL, line breaks) written as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
