"""Re-driving dead letters: look at a queue's dead-letter queue, queue its messages again, or drop them.

Everything goes through the driver contract, so it works on every driver. A dead-letter queue is
*browsed* by receiving from it until it stays empty for ``idle`` seconds (or ``limit`` messages came, or
:data:`DEFAULT_PREFETCH`); the selected deliveries are settled, and closing the consumer gives every
other delivery back to the queue untouched (drivers release unsettled deliveries on close).

On drivers with leases (``Capabilities.lease_extension``: sqlite, SQS) a held delivery must be extended
before its lease lapses, and extending costs a call per batch. So re-drive works there in bounded
chunks: it acts on (publishes again, acknowledges) at most :data:`LEASE_CHUNK` deliveries at a time before
receiving more, extends everything it holds with one ``extend_many`` whenever a third of a lease has
passed, and holds no more than it can extend within a third of the lease (timed on every extension).
What it looks at but does not act on (``show``; the ids not asked for) is held until the end, never
released early: a released message would be handed back first and seen again.

- :func:`show_dead_letters` settles nothing.
- :func:`retry_dead_letters` publishes each selected message to its original queue (the ``kq-original-queue``
  header, else the queue named) without the dead-letter notes and the attempt counter, with the same
  message id, body, content type, routing key and other headers, **signed again** by the app's signer,
  then acknowledges it on the dead-letter queue. A message whose publication fails is not
  acknowledged: it stays where it was. When a batch publish fails part-way
  (:class:`~kq.core.PublishError`), the messages it names as published are acknowledged and the others
  stay.
- :func:`remove_dead_letters` acknowledges the selected messages: they are gone.

A delivery whose lease was lost (the driver's :class:`~kq.core.LeaseLostError`) is not acted on and is
reported as failed: another consumer may hold the message now.

Re-signing vouches for a message's content. So a message whose original signature does not check (it
was dead-lettered as ``unsigned`` or ``bad-signature``, or with a key that is no longer configured) is
not signed again for a queue that requires signatures, unless ``resign_unverified`` says the operator
trusts it; an expired or replayed signature is fine, since the content is authentic.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kq.core._driver import Consumer, Driver
from kq.core._errors import KqError, LeaseLostError, PublishError, SignatureError
from kq.core._failures import attempt_of
from kq.core._message import (
    DEAD_LETTER_DELIVERIES,
    DEAD_LETTER_ERROR,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_REASON,
    DEAD_LETTER_TIME,
    KQ_HEADER_PREFIX,
    TRANSIT_HEADERS,
    Delivery,
    Message,
)
from kq.core._producers import GenericMessageProducer
from kq.core._signing import KEY_ID, NONCE, Verifier

if TYPE_CHECKING:
    from kq.core._app import App

logger = logging.getLogger(__name__)

#: Seconds the dead-letter queue must stay empty before browsing ends.
DEFAULT_IDLE = 1.0
#: Most messages one run looks at, and deliveries a broker may hand over ahead of acknowledgement
#: (RabbitMQ's maximum is 65535). A warning says when there may be more: run the command again.
DEFAULT_PREFETCH = 10_000
#: On drivers with leases: deliveries acted on (published again, acknowledged) at a time, before more
#: are received, so that what re-drive holds stays small and no lease lapses while it works.
LEASE_CHUNK = 100
#: On drivers with leases: deliveries held before the first extension is timed. After it, re-drive
#: holds no more than it can extend within a third of the lease (see :class:`_Leases`).
LEASE_PROBE = 10
#: Characters of a text body shown by :func:`show_dead_letters`.
PREVIEW_CHARS = 200
#: Messages republished per batch by :func:`retry_dead_letters` (confirms and commits paid once per batch).
REPUBLISH_BATCH = 100
#: Headers :func:`retry_dead_letters` takes off before queueing a message again.
REDRIVE_DROPPED_HEADERS = TRANSIT_HEADERS
#: Signature outcomes that still prove the content is authentic (only its age or reuse is wrong).
_AUTHENTIC = frozenset({"expired", "not-yet-valid", "replayed"})


@dataclass(frozen=True)
class RedriveResult:
    """What :func:`retry_dead_letters` or :func:`remove_dead_letters` did.

    Attributes:
        action: ``"retry"`` or ``"remove"``.
        queue: The queue whose dead letters were handled.
        dead_letter_queue: Its dead-letter queue.
        done: Ids of the messages queued again (retry) or removed (remove), in queue order.
        missing: Ids asked for that are not in the dead-letter queue.
        failed: Id -> why the message was left in the dead-letter queue.
        targets: For retry, id -> the queue the message went back to.
    """

    action: str
    queue: str
    dead_letter_queue: str
    done: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)
    targets: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every message asked for was handled."""
        return not self.missing and not self.failed

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (``retried`` or ``removed`` lists the ids done)."""
        key = "retried" if self.action == "retry" else "removed"
        result: dict[str, Any] = {
            "queue": self.queue,
            "dead_letter_queue": self.dead_letter_queue,
            key: list(self.done),
            "missing": list(self.missing),
            "failed": dict(self.failed),
        }
        if self.action == "retry":
            result["targets"] = dict(self.targets)
        return result


def show_dead_letters(
    app: App,
    queue: str,
    *,
    limit: int | None = None,
    driver: str | None = None,
    idle: float = DEFAULT_IDLE,
    prefetch: int = DEFAULT_PREFETCH,
) -> list[dict[str, Any]]:
    """Describe the messages in the dead-letter queue of ``queue``, oldest first; they all stay there.

    Args:
        app: The application (configuration and drivers).
        queue: The queue whose dead letters to show (not the dead-letter queue itself).
        limit: Show at most this many.
        driver: Driver instance, for a queue that is not configured.
        idle: Seconds the dead-letter queue must stay empty before browsing ends.
        prefetch: Deliveries the broker may hand over at once, and the most messages looked at.
    """
    with _dead_letters(app, queue, driver, prefetch, limit) as (instance, dead_letter_queue, consumer):
        leases = _Leases.of(instance, dead_letter_queue, consumer)
        shown: list[Delivery] = []
        for chunk in _chunks(consumer, dead_letter_queue, leases, limit=limit, idle=idle):
            shown.extend(chunk)
        return [describe_dead_letter(delivery) for delivery in shown]


def retry_dead_letters(
    app: App,
    queue: str,
    ids: Iterable[str] | None = None,
    *,
    driver: str | None = None,
    limit: int | None = None,
    idle: float = DEFAULT_IDLE,
    prefetch: int = DEFAULT_PREFETCH,
    resign_unverified: bool = False,
) -> RedriveResult:
    """Queue dead letters of ``queue`` again on their original queue, signed afresh.

    Args:
        app: The application; its signer signs the copies.
        queue: The queue whose dead letters to retry.
        ids: Message ids to retry; ``None`` for every message.
        driver: Driver instance, for a queue that is not configured.
        limit: Look at most at this many dead letters.
        idle: Seconds the dead-letter queue must stay empty before browsing ends.
        prefetch: Deliveries the broker may hand over at once, and the most messages looked at.
        resign_unverified: Also sign messages whose original signature does not check, for queues
            that require signatures (only for messages you trust).
    """
    with _dead_letters(app, queue, driver, prefetch, limit) as (instance, dead_letter_queue, consumer):
        leases = _Leases.of(instance, dead_letter_queue, consumer)
        selection = _Selection(ids, dead_letter_queue)
        retrier = _Retrier(app, instance, queue, consumer, leases, resign_unverified)
        for chunk in _chunks(consumer, dead_letter_queue, leases, limit=limit, idle=idle):
            retrier.run(selection.pick(chunk))
        return RedriveResult(
            action="retry",
            queue=queue,
            dead_letter_queue=dead_letter_queue,
            done=tuple(retrier.done),
            missing=tuple(selection.missing()),
            failed=retrier.failed,
            targets=retrier.targets,
        )


def remove_dead_letters(
    app: App,
    queue: str,
    ids: Iterable[str] | None = None,
    *,
    driver: str | None = None,
    limit: int | None = None,
    idle: float = DEFAULT_IDLE,
    prefetch: int = DEFAULT_PREFETCH,
) -> RedriveResult:
    """Delete dead letters of ``queue`` (acknowledge them on the dead-letter queue).

    Args:
        app: The application.
        queue: The queue whose dead letters to remove.
        ids: Message ids to remove; ``None`` for every message.
        driver: Driver instance, for a queue that is not configured.
        limit: Look at most at this many dead letters.
        idle: Seconds the dead-letter queue must stay empty before browsing ends.
        prefetch: Deliveries the broker may hand over at once, and the most messages looked at.
    """
    with _dead_letters(app, queue, driver, prefetch, limit) as (instance, dead_letter_queue, consumer):
        leases = _Leases.of(instance, dead_letter_queue, consumer)
        selection = _Selection(ids, dead_letter_queue)
        done: dict[str, None] = {}  # ordered, without repeats
        failed: dict[str, str] = {}
        for chunk in _chunks(consumer, dead_letter_queue, leases, limit=limit, idle=idle):
            batch: list[Delivery] = []
            for delivery in selection.pick(chunk):
                message_id = delivery.message_id
                if message_id in failed:
                    continue  # another copy of it was left in the dead-letter queue: this one stays too
                if leases.is_lost(delivery):
                    failed[message_id] = _LOST
                    done.pop(message_id, None)
                    _log_left(delivery, _LOST)
                    continue
                batch.append(delivery)
            error = _ack_all(consumer, batch)
            for delivery in batch:
                message_id = delivery.message_id
                if error is not None:
                    failed[message_id] = error
                    done.pop(message_id, None)
                elif message_id not in failed and message_id not in done:
                    done[message_id] = None
                    logger.info("dead-letter queue %s message %s: removed", dead_letter_queue, message_id)
        return RedriveResult(
            action="remove",
            queue=queue,
            dead_letter_queue=dead_letter_queue,
            done=tuple(done),
            missing=tuple(selection.missing()),
            failed=failed,
        )


def describe_dead_letter(delivery: Delivery) -> dict[str, Any]:
    """What :func:`show_dead_letters` says about one dead-lettered delivery."""
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


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@contextmanager
def _dead_letters(
    app: App, queue: str, driver: str | None, prefetch: int, limit: int | None
) -> Iterator[tuple[Driver, str, Consumer]]:
    """A consumer of the dead-letter queue of ``queue``; closing it releases what was not settled.

    The consume loop dead-letters through the driver of the original queue, so the dead-letter queue
    is read through that same driver instance.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if prefetch < 1:
        raise ValueError(f"prefetch must be at least 1, not {prefetch}")
    instance, spec = app.queue(queue, driver)
    dead_letter_queue = spec.dead_letter_queue
    consumer = instance.consumer(dead_letter_queue, prefetch=min(prefetch, limit or prefetch))
    try:
        yield instance, dead_letter_queue, consumer
    finally:
        try:
            consumer.close()
        except Exception as exc:  # a dead connection often fails to close; the broker releases anyway
            logger.warning(
                "dead-letter queue %s: closing the consumer failed (%s); the messages not handled "
                "come back once the broker notices",
                dead_letter_queue,
                exc,
            )


#: Why a delivery whose lease was lost is left alone.
_LOST = (
    "its lease lapsed while re-drive held it (another consumer may hold it now); it was left in the "
    "dead-letter queue: run the command again"
)


class _Leases:
    """Keeps what re-drive holds reserved on drivers with leases, and says how much it may hold.

    Every delivery received is held until it is settled or the consumer closes. Whenever a third of the
    earliest lease has passed, every held delivery is extended by a full lease in one
    :meth:`Consumer.extend_many` (SQS makes it one call per 10). Each extension is timed; re-drive then
    holds no more deliveries than one extension can cover within a third of the lease, so a held lease
    always has a third of its time left when its extension ends (before the first timing, at most
    :data:`LEASE_PROBE`). On drivers without leases, nothing is extended and nothing is capped (the
    broker's prefetch is the cap).
    """

    def __init__(self, consumer: Consumer, lease: float | None) -> None:
        self.consumer = consumer
        self.lease = lease or None
        self.held: list[Delivery] = []
        self._lost: dict[int, Delivery] = {}  # id() -> delivery (kept alive, so ids are not reused)
        self._cost: float | None = None  # seconds to extend one delivery, as last timed
        self._timed = False
        self._due = float("inf")  # time.monotonic() of the next extension

    @classmethod
    def of(cls, instance: Driver, dead_letter_queue: str, consumer: Consumer) -> _Leases:
        """The leases of ``consumer``: none unless the driver extends leases on that queue."""
        if not instance.capabilities_for(dead_letter_queue).lease_extension:
            return cls(consumer, None)
        return cls(consumer, consumer.lease_duration)

    @property
    def active(self) -> bool:
        """Whether the driver leases deliveries (and re-drive must keep them)."""
        return self.lease is not None

    def capacity(self) -> int | None:
        """How many deliveries may be held at once (``None``: no limit here)."""
        if self.lease is None:
            return None
        if self._cost is None:
            return LEASE_PROBE
        if self._cost <= 0:
            return sys.maxsize
        return max(1, int(self.lease / 3 / self._cost))

    def room(self) -> int | None:
        """How many more deliveries may be held (``None``: no limit here); settled ones count until
        :meth:`forget_settled`."""
        capacity = self.capacity()
        return None if capacity is None else capacity - len(self.held)

    def forget_settled(self) -> None:
        """Stop holding what was settled (after the caller acted on a chunk)."""
        self.held = [d for d in self.held if not d.settled]

    def add(self, delivery: Delivery) -> None:
        """Hold ``delivery`` (just received) until it is settled."""
        if self.lease is None:
            return
        self.held.append(delivery)
        expires = delivery.lease_expires
        if expires is None:
            expires = time.monotonic() + self.lease
        self._due = min(self._due, expires - 2 * self.lease / 3)

    def is_lost(self, delivery: Delivery) -> bool:
        """Whether the driver said the lease of ``delivery`` had lapsed."""
        return id(delivery) in self._lost

    def keep(self, *, now: bool = False) -> None:
        """Extend every held delivery if a third of the earliest lease has passed (or ``now``)."""
        if self.lease is None or (not now and time.monotonic() < self._due):
            return
        self.forget_settled()
        if not self.held:
            self._due = float("inf")
            return
        started = time.monotonic()
        try:
            self.consumer.extend_many(self.held, self.lease)
        except LeaseLostError as exc:
            for delivery in exc.deliveries:
                self._lost[id(delivery)] = delivery
                logger.warning(
                    "dead-letter queue %s message %s: its lease lapsed while re-drive held it (%s); "
                    "re-drive leaves it alone",
                    delivery.queue,
                    delivery.message_id,
                    exc,
                )
            self.held = [d for d in self.held if id(d) not in self._lost]
        except Exception as exc:
            logger.warning(
                "dead-letter queue %s: could not keep %d messages reserved (%s: %s); they may be seen twice",
                self.consumer.queue.name,
                len(self.held),
                type(exc).__name__,
                exc,
            )
            self._timed = True
            self._due = time.monotonic() + self.lease / 6  # try again soon, not at every receive
            return
        ended = time.monotonic()
        self._cost = (ended - started) / max(1, len(self.held))
        self._timed = True
        self._due = started + self.lease / 3
        logger.debug(
            "dead-letter queue %s: %d leases extended in %.3fs",
            self.consumer.queue.name,
            len(self.held),
            ended - started,
        )

    @property
    def timed(self) -> bool:
        """Whether an extension was timed (so :meth:`capacity` is measured, not the probe)."""
        return self._timed


def _chunks(
    consumer: Consumer, dead_letter_queue: str, leases: _Leases, *, limit: int | None, idle: float
) -> Iterator[list[Delivery]]:
    """The deliveries of the dead-letter queue, in the order received, in chunks to act on one after
    the other; what the caller settles in a chunk makes room for the next.

    Receiving ends when the queue stays empty for ``idle`` seconds, or ``limit`` deliveries came, or as
    many as the prefetch. Without leases the whole browse is one chunk. With leases a chunk holds at
    most :data:`LEASE_CHUNK` deliveries, and receiving also ends when what is held (not settled) fills
    what can be kept reserved (:meth:`_Leases.capacity`).
    """
    most = min(limit or consumer.prefetch, consumer.prefetch)
    step = LEASE_CHUNK if leases.active else most
    seen = 0
    full = False
    chunk: list[Delivery] = []
    while seen < most:
        room = leases.room()
        if room is not None and room <= 0:
            if not leases.timed:
                leases.keep(now=True)  # time an extension: the real capacity
                continue
            if chunk:
                yield chunk  # what the caller settles makes room
                leases.forget_settled()
                chunk = []
                continue
            full = True
            break
        delivery = _receive(consumer, leases, idle)
        if delivery is None:
            break
        seen += 1
        leases.add(delivery)
        chunk.append(delivery)
        if len(chunk) >= step:
            yield chunk
            leases.forget_settled()
            chunk = []
    if chunk:
        yield chunk
    if full:
        logger.warning(
            "dead-letter queue %s: looked at the first %d messages only: %d (those not removed or queued "
            "again) are as many as can be kept reserved at once on this driver (extending more would "
            "take longer than a third of the %gs lease); handle these first, or raise the queue's "
            "visibility timeout",
            dead_letter_queue,
            seen,
            len(leases.held),
            leases.lease,
        )
    elif seen == consumer.prefetch and (limit is None or limit > consumer.prefetch):
        logger.warning(
            "dead-letter queue %s: looked at the first %d messages only (the prefetch); "
            "run again for the rest",
            dead_letter_queue,
            seen,
        )
    logger.debug("dead-letter queue %s: %d messages browsed", dead_letter_queue, seen)


def _receive(consumer: Consumer, leases: _Leases, idle: float) -> Delivery | None:
    """The next delivery, or ``None`` once none came for ``idle`` seconds; with leases, the wait is cut
    in slices of a sixth of the lease so that what is held is kept reserved meanwhile."""
    deadline = time.monotonic() + idle
    while True:
        leases.keep()
        wait = max(0.0, deadline - time.monotonic())
        if leases.lease is not None:
            wait = min(wait, leases.lease / 6)
        delivery = consumer.receive(wait)
        if delivery is not None or time.monotonic() >= deadline:
            return delivery


class _Selection:
    """Which deliveries were asked for (``ids``, or ``None`` for all), and which ids were found."""

    def __init__(self, ids: Iterable[str] | None, dead_letter_queue: str) -> None:
        self.wanted = None if ids is None else dict.fromkeys(ids)  # ordered, without repeats
        self.dead_letter_queue = dead_letter_queue
        self.found: set[str] = set()

    def pick(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """The deliveries of ``deliveries`` asked for."""
        if self.wanted is None:
            return list(deliveries)
        picked = [d for d in deliveries if d.message_id in self.wanted]
        self.found.update(d.message_id for d in picked)
        return picked

    def missing(self) -> list[str]:
        """The ids asked for that were not found (each logged)."""
        if self.wanted is None:
            return []
        missing = [i for i in self.wanted if i not in self.found]
        for message_id in missing:
            logger.warning("dead-letter queue %s: no message %s", self.dead_letter_queue, message_id)
        return missing


def _ack_all(consumer: Consumer, deliveries: Sequence[Delivery]) -> str | None:
    """Acknowledge ``deliveries`` in one :meth:`Consumer.ack_many`; return the error, or ``None``."""
    if not deliveries:
        return None
    try:
        consumer.ack_many(deliveries)
    except Exception as exc:
        logger.error(
            "dead-letter queue %s messages %s: could not be acknowledged (%s: %s)",
            consumer.queue.name,
            ", ".join(d.message_id for d in deliveries),
            type(exc).__name__,
            exc,
        )
        return f"could not be acknowledged: {type(exc).__name__}: {exc}"
    return None


def _log_left(delivery: Delivery, why: str) -> None:
    logger.error(
        "dead-letter queue %s message %s: left in the dead-letter queue: %s",
        delivery.queue,
        delivery.message_id,
        why,
    )


@dataclass(frozen=True)
class _Copy:
    """A message to queue again (signed), and the dead-letter deliveries (one, or duplicates) it came
    from."""

    copies: list[Delivery]
    message: Message


class _Retrier:
    """Queues selected dead letters again, a chunk at a time: check, clean, sign, publish in batches,
    then acknowledge.

    Copies of one message are handled once per queue it failed on, even in different chunks: a later
    copy of a message already queued again is acknowledged, unless it carries the signature nonce of
    the copy re-drive published, in which case it is that copy failing again since (left alone: it
    is a new failure). A later copy of a message left in the dead-letter queue is left too.
    """

    def __init__(
        self,
        app: App,
        instance: Driver,
        queue: str,
        consumer: Consumer,
        leases: _Leases,
        resign_unverified: bool,
    ) -> None:
        self.app = app
        self.instance = instance
        self.queue = queue
        self.consumer = consumer
        self.leases = leases
        self.resign_unverified = resign_unverified
        self.done: list[str] = []
        self.failed: dict[str, str] = {}
        self.targets: dict[str, str] = {}
        self._producers: dict[str, GenericMessageProducer] = {}
        # (message id, target) -> nonce of the copy queued again; the pairs left in the queue.
        self._queued: dict[tuple[str, str], str | None] = {}
        self._left: set[tuple[str, str]] = set()
        # Authenticity only: any configured key, with no age limit and a replay cache of its own.
        self._verifier = Verifier(app.verifier.keys, max_age=float("inf"))

    def run(self, selected: Sequence[Delivery]) -> None:
        """Queue again the deliveries of one chunk (those asked for)."""
        # Copies of one message are handled once per queue it failed on: queues sharing a dead-letter
        # queue (or one message id reused on two queues) each get their own back.
        groups: dict[tuple[str, str], list[Delivery]] = {}
        duplicates: list[Delivery] = []
        for delivery in selected:
            key = (delivery.message_id, delivery.headers.get(DEAD_LETTER_QUEUE) or self.queue)
            if key in self._left:
                continue
            if key in self._queued:
                if delivery.headers.get(NONCE) == self._queued[key]:
                    logger.info(
                        "dead-letter queue %s message %s: failed again on %s since re-drive queued it "
                        "again; left in the dead-letter queue",
                        delivery.queue,
                        delivery.message_id,
                        key[1],
                    )
                else:
                    duplicates.append(delivery)
                continue
            if self.leases.is_lost(delivery):
                self._leave(key, delivery, _LOST)
                continue
            groups.setdefault(key, []).append(delivery)
        self._ack_duplicates(duplicates)
        by_target: dict[str, list[_Copy]] = {}
        for key, copies in groups.items():
            target = key[1]
            refusal = self._refusal(copies[0], target)
            if refusal is not None:
                self._leave(key, copies[0], refusal)
                continue
            try:
                message = self.app.signer.sign(self._cleaned(copies[0]), target)
            except KqError as exc:  # a foreign message kq cannot publish as it is
                self._leave(key, copies[0], f"cannot be published again: {exc}")
                continue
            by_target.setdefault(target, []).append(_Copy(copies, message))
        for target, pending in by_target.items():
            for start in range(0, len(pending), REPUBLISH_BATCH):
                self._republish(target, pending[start : start + REPUBLISH_BATCH])

    def _ack_duplicates(self, duplicates: Sequence[Delivery]) -> None:
        error = _ack_all(self.consumer, duplicates)
        for delivery in duplicates:
            if error is None:
                logger.info(
                    "dead-letter queue %s message %s: a duplicate of a message queued again; removed",
                    delivery.queue,
                    delivery.message_id,
                )
            else:
                logger.error(
                    "dead-letter queue %s message %s: a duplicate of a message queued again, still in "
                    "the dead-letter queue (%s)",
                    delivery.queue,
                    delivery.message_id,
                    error,
                )

    def _refusal(self, delivery: Delivery, target: str) -> str | None:
        """Why ``delivery`` must not be signed for ``target``, or ``None``."""
        try:
            _, spec = self.app.queue(target, self.instance.name)
        except KqError as exc:
            return f"cannot queue it on {target}: {exc}"
        required = spec.require_signature
        if required is None:
            required = spec.consumer in self.app.config.signing.require
        if not required or self.resign_unverified:
            return None
        problem = self._signature_problem(delivery, target)
        if problem is None:
            return None
        return (
            f"its signature does not check ({problem}) and queue {target} requires signatures; "
            "retry it with resign_unverified (--resign-unverified) only if you trust its content"
        )

    def _signature_problem(self, delivery: Delivery, target: str) -> str | None:
        # Accept what a worker of ``target`` accepted when the message was published (App.consume_loop).
        signed_for = self.app.signed_for(target, self.instance.name)
        try:
            self._verifier.verify(delivery, signed_for)
        except SignatureError as exc:
            return None if exc.reason in _AUTHENTIC else exc.reason
        except Exception as exc:  # a garbled signature header may upset the comparison itself
            return f"bad-signature: {type(exc).__name__}"
        return None

    def _republish(self, target: str, batch: Sequence[_Copy]) -> None:
        self.leases.keep()  # a third of a lease left at least, for publishing and acknowledging
        live: list[_Copy] = []
        for item in batch:
            if any(self.leases.is_lost(d) for d in item.copies):
                self._leave((item.message.message_id, target), item.copies[0], _LOST)
            else:
                live.append(item)
        if not live:
            return
        went: list[_Copy] = live
        why = ""
        try:
            self._producer(target).send([item.message for item in live])
        except PublishError as exc:
            # Part of the batch went: acknowledge exactly those, or the next re-drive duplicates them.
            published = set(exc.published) - set(exc.failed)
            went = [item for item in live if item.message.message_id in published]
            why = f"could not be queued again on {target}: PublishError: {exc}"
        except Exception as exc:
            went = []
            why = f"could not be queued again on {target}: {type(exc).__name__}: {exc}"
        sent = {id(item) for item in went}
        for item in live:
            if id(item) not in sent:
                self._leave((item.message.message_id, target), item.copies[0], why)
        for item in went:
            message_id = item.message.message_id
            self._queued[(message_id, target)] = item.message.headers.get(NONCE)
            self.done.append(message_id)
            known = self.targets.get(message_id)
            self.targets[message_id] = target if known is None else f"{known}, {target}"
        error = _ack_all(self.consumer, [d for item in went for d in item.copies])
        for item in went:
            if error is None:
                logger.info(
                    "dead-letter queue %s message %s: queued again on %s",
                    item.copies[0].queue,
                    item.message.message_id,
                    target,
                )
            else:
                logger.error(
                    "dead-letter queue %s message %s: queued again on %s but still in the dead-letter "
                    "queue (%s): it may run twice",
                    item.copies[0].queue,
                    item.message.message_id,
                    target,
                    error,
                )

    def _producer(self, target: str) -> GenericMessageProducer:
        # Without a signer: the messages are signed already, and their nonces recognise them later.
        producer = self._producers.get(target)
        if producer is None:
            instance, _ = self.app.queue(target, self.instance.name)
            producer = GenericMessageProducer(instance, target, dispatcher=self.app.dispatcher)
            self._producers[target] = producer
        return producer

    @staticmethod
    def _cleaned(delivery: Delivery) -> Message:
        headers = {k: v for k, v in delivery.headers.items() if k not in REDRIVE_DROPPED_HEADERS}
        return delivery.to_message(headers=headers)

    def _leave(self, key: tuple[str, str], delivery: Delivery, why: str) -> None:
        self._left.add(key)
        self.failed[delivery.message_id] = why
        _log_left(delivery, why)
