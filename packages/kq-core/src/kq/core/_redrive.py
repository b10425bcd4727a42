"""Re-driving dead letters: look at a queue's dead-letter queue, queue its messages again, or drop them.

Everything goes through the driver contract, so it works on every driver. A dead-letter queue is
*browsed* by receiving from it with a generous prefetch until it stays empty for ``idle`` seconds (or
``limit`` messages came); then the selected deliveries are settled and the consumer is closed, which
gives every other delivery back to the queue untouched (drivers release unsettled deliveries on close).

- :func:`show_failed` settles nothing.
- :func:`retry_failed` publishes each selected message to its original queue (the ``kq-original-queue``
  header, else the queue named) without the dead-letter notes and the attempt counter, with the same
  message id, body, content type, routing key and other headers, **signed again** by the app's signer,
  then acknowledges it on the dead-letter queue. A message whose publication fails is not
  acknowledged: it stays where it was.
- :func:`remove_failed` acknowledges the selected messages: they are gone.

Re-signing vouches for a message's content. So a message whose original signature does not check (it
was dead-lettered as ``unsigned`` or ``bad-signature``, or with a key that is no longer configured) is
not signed again for a queue that requires signatures, unless ``resign_unverified`` says the operator
trusts it; an expired or replayed signature is fine, since the content is authentic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kq.core._driver import Consumer, Driver
from kq.core._errors import KqError
from kq.core._loop import attempt_of
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
from kq.core._signing import KEY_ID, SignatureError, Verifier

if TYPE_CHECKING:
    from kq.core._app import App

logger = logging.getLogger(__name__)

#: Seconds the dead-letter queue must stay empty before browsing ends.
DEFAULT_IDLE = 1.0
#: Deliveries a broker may hand over ahead of acknowledgement while browsing (RabbitMQ's maximum is
#: 65535); browsing cannot see more than this many messages at once.
DEFAULT_PREFETCH = 10_000
#: Characters of a text body shown by :func:`show_failed`.
PREVIEW_CHARS = 200
#: Messages republished per batch by :func:`retry_failed` (confirms and commits are paid once per batch).
REPUBLISH_BATCH = 100
#: Headers :func:`retry_failed` takes off before queueing a message again.
REDRIVE_DROPPED_HEADERS = TRANSIT_HEADERS
#: Signature outcomes that still prove the content is authentic (only its age or reuse is wrong).
_AUTHENTIC = frozenset({"expired", "not-yet-valid", "replayed"})


@dataclass(frozen=True)
class RedriveResult:
    """What :func:`retry_failed` or :func:`remove_failed` did.

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


def show_failed(
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
        prefetch: Deliveries the broker may hand over at once.
    """
    with _dead_letters(app, queue, driver, prefetch, limit) as (_, dead_letter_queue, consumer):
        deliveries = _browse(consumer, dead_letter_queue, limit=limit, idle=idle)
        return [describe_dead_letter(delivery) for delivery in deliveries]


def retry_failed(
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
        prefetch: Deliveries the broker may hand over at once.
        resign_unverified: Also sign messages whose original signature does not check, for queues
            that require signatures (only for messages you trust).
    """
    with _dead_letters(app, queue, driver, prefetch, limit) as (instance, dead_letter_queue, consumer):
        deliveries = _browse(consumer, dead_letter_queue, limit=limit, idle=idle)
        selected, missing = _select(deliveries, ids, dead_letter_queue)
        retrier = _Retrier(app, instance, queue, consumer, resign_unverified)
        retrier.run(selected)
        return RedriveResult(
            action="retry",
            queue=queue,
            dead_letter_queue=dead_letter_queue,
            done=tuple(retrier.done),
            missing=tuple(missing),
            failed=retrier.failed,
            targets=retrier.targets,
        )


def remove_failed(
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
        prefetch: Deliveries the broker may hand over at once.
    """
    with _dead_letters(app, queue, driver, prefetch, limit) as (_, dead_letter_queue, consumer):
        deliveries = _browse(consumer, dead_letter_queue, limit=limit, idle=idle)
        selected, missing = _select(deliveries, ids, dead_letter_queue)
        done: list[str] = []
        failed: dict[str, str] = {}
        for message_id, copies in selected.items():
            error = _ack_all(consumer, copies)
            if error is None:
                done.append(message_id)
                logger.info("dead-letter queue %s message %s: removed", dead_letter_queue, message_id)
            else:
                failed[message_id] = error
        return RedriveResult(
            action="remove",
            queue=queue,
            dead_letter_queue=dead_letter_queue,
            done=tuple(done),
            missing=tuple(missing),
            failed=failed,
        )


def describe_dead_letter(delivery: Delivery) -> dict[str, Any]:
    """What :func:`show_failed` says about one dead-lettered delivery."""
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
    dead_letter_queue = spec.failed_queue
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


def _browse(consumer: Consumer, dead_letter_queue: str, *, limit: int | None, idle: float) -> list[Delivery]:
    """Receive until the queue stays empty for ``idle`` seconds, or ``limit`` deliveries came, or as
    many as the prefetch (a broker hands no more before acknowledgements; others are capped alike)."""
    leases = _Leases(consumer)
    most = min(limit or consumer.prefetch, consumer.prefetch)
    held: list[Delivery] = []
    while len(held) < most:
        leases.keep(held)
        delivery = consumer.receive(idle)
        if delivery is None:
            break
        held.append(delivery)
    if len(held) == consumer.prefetch and (limit is None or limit > consumer.prefetch):
        logger.warning(
            "dead-letter queue %s: looked at the first %d messages only (the prefetch); "
            "run again for the rest",
            dead_letter_queue,
            len(held),
        )
    logger.debug("dead-letter queue %s: %d messages browsed", dead_letter_queue, len(held))
    return held


def _select(
    deliveries: Sequence[Delivery], ids: Iterable[str] | None, dead_letter_queue: str
) -> tuple[dict[str, list[Delivery]], list[str]]:
    """Group the wanted deliveries by message id (copies of one message are handled once); list the
    ids that were not found."""
    wanted = None if ids is None else dict.fromkeys(ids)  # ordered, without repeats
    selected: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        if wanted is None or delivery.message_id in wanted:
            selected.setdefault(delivery.message_id, []).append(delivery)
    missing = [] if wanted is None else [i for i in wanted if i not in selected]
    for message_id in missing:
        logger.warning("dead-letter queue %s: no message %s", dead_letter_queue, message_id)
    return selected, missing


def _ack_all(consumer: Consumer, copies: Sequence[Delivery]) -> str | None:
    """Acknowledge every copy; return the first error, or ``None``."""
    error: str | None = None
    for delivery in copies:
        try:
            consumer.ack(delivery)
        except Exception as exc:
            logger.error(
                "dead-letter queue %s message %s: could not be acknowledged (%s: %s)",
                delivery.queue,
                delivery.message_id,
                type(exc).__name__,
                exc,
            )
            error = error or f"{type(exc).__name__}: {exc}"
    return error


class _Leases:
    """Keeps held deliveries reserved on drivers with leases (sqlite, SQS) while browsing and settling
    take long: every third of the lease, each unsettled delivery is extended by a full lease."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.lease = consumer.lease_duration
        self._since = time.monotonic()

    def keep(self, deliveries: Iterable[Delivery]) -> None:
        if not self.lease or time.monotonic() - self._since < self.lease / 3:
            return
        for delivery in deliveries:
            if delivery.settled:
                continue
            try:
                self.consumer.extend(delivery, self.lease)
            except Exception as exc:
                logger.warning(
                    "dead-letter queue %s message %s: could not keep it reserved (%s); it may be seen twice",
                    delivery.queue,
                    delivery.message_id,
                    exc,
                )
        self._since = time.monotonic()


@dataclass(frozen=True)
class _Copy:
    """A message to queue again, and the dead-letter deliveries (one, or duplicates) it came from."""

    copies: list[Delivery]
    message: Message


class _Retrier:
    """Queues selected dead letters again: check, clean, sign, publish in batches, then acknowledge."""

    def __init__(
        self, app: App, instance: Driver, queue: str, consumer: Consumer, resign_unverified: bool
    ) -> None:
        self.app = app
        self.instance = instance
        self.queue = queue
        self.consumer = consumer
        self.resign_unverified = resign_unverified
        self.leases = _Leases(consumer)
        self.done: list[str] = []
        self.failed: dict[str, str] = {}
        self.targets: dict[str, str] = {}
        self._producers: dict[str, GenericMessageProducer] = {}
        self._selected: list[Delivery] = []
        # Authenticity only: any configured key, with no age limit and a replay cache of its own.
        self._verifier = Verifier(app.verifier.keys, max_age=float("inf"))

    def run(self, selected: Mapping[str, list[Delivery]]) -> None:
        self._selected = [d for copies in selected.values() for d in copies]
        by_target: dict[str, list[_Copy]] = {}
        for message_id, all_copies in selected.items():
            # Copies of one message are handled once per queue it failed on: queues sharing a
            # dead-letter queue (or one message id reused on two queues) each get their own back.
            per_target: dict[str, list[Delivery]] = {}
            for delivery in all_copies:
                per_target.setdefault(delivery.headers.get(DEAD_LETTER_QUEUE) or self.queue, []).append(
                    delivery
                )
            for target, copies in per_target.items():
                refusal = self._refusal(copies[0], target)
                if refusal is not None:
                    self._fail(copies[0], refusal)
                    continue
                try:
                    message = self._cleaned(copies[0])
                except KqError as exc:  # a foreign message kq cannot publish as it is
                    self._fail(copies[0], f"cannot be published again: {exc}")
                    continue
                self._add_target(message_id, target)
                by_target.setdefault(target, []).append(_Copy(copies, message))
        for target, pending in by_target.items():
            for start in range(0, len(pending), REPUBLISH_BATCH):
                self._republish(target, pending[start : start + REPUBLISH_BATCH])

    def _add_target(self, message_id: str, target: str) -> None:
        known = self.targets.get(message_id)
        self.targets[message_id] = target if known is None else f"{known}, {target}"

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
        self.leases.keep(self._selected)  # the later batches' too: settled ones are skipped
        try:
            self._producer(target).send([item.message for item in batch])
        except Exception as exc:
            for item in batch:
                self.targets.pop(item.message.message_id, None)
                self._fail(
                    item.copies[0], f"could not be queued again on {target}: {type(exc).__name__}: {exc}"
                )
            return
        for item in batch:
            message_id = item.message.message_id
            self.done.append(message_id)
            error = _ack_all(self.consumer, item.copies)
            if error is None:
                logger.info(
                    "dead-letter queue %s message %s: queued again on %s",
                    item.copies[0].queue,
                    message_id,
                    target,
                )
            else:
                logger.error(
                    "dead-letter queue %s message %s: queued again on %s but still in the dead-letter "
                    "queue (%s): it may run twice",
                    item.copies[0].queue,
                    message_id,
                    target,
                    error,
                )

    def _producer(self, target: str) -> GenericMessageProducer:
        producer = self._producers.get(target)
        if producer is None:
            producer = self.app.producer_of(GenericMessageProducer, target, self.instance.name)
            self._producers[target] = producer
        return producer

    @staticmethod
    def _cleaned(delivery: Delivery) -> Message:
        headers = {k: v for k, v in delivery.headers.items() if k not in REDRIVE_DROPPED_HEADERS}
        return delivery.to_message(headers=headers)

    def _fail(self, delivery: Delivery, why: str) -> None:
        self.failed[delivery.message_id] = why
        logger.error(
            "dead-letter queue %s message %s: left in the dead-letter queue: %s",
            delivery.queue,
            delivery.message_id,
            why,
        )
