"""Re-driving dead letters: look at a queue's dead-letter queue, queue its messages again, or drop them.

Everything goes through the driver contract, so it works on every driver. A dead-letter queue is
*browsed* by receiving from it until it stays empty for ``idle`` seconds (or ``limit`` messages came, or
:data:`DEFAULT_PREFETCH`); the selected deliveries are settled, and closing the consumer gives every
other delivery back to the queue untouched (drivers release unsettled deliveries on close).

On drivers with leases (``Capabilities.lease_extension``: sqlite, SQS) a held delivery must be extended
before its lease lapses, and extending costs a call per batch. So re-drive works there in bounded
chunks (:mod:`kq.core._redrive_browse`): it acts on (publishes again, acknowledges) at most
:data:`~kq.core._redrive_browse.LEASE_CHUNK` deliveries at a time before
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kq.core._failures import describe_dead_letter
from kq.core._message import Delivery
from kq.core._redrive_browse import LOST, ack_all, chunks, leases_of, log_left, open_dead_letters
from kq.core._redrive_retry import Retrier

if TYPE_CHECKING:
    from kq.core._app import App

logger = logging.getLogger(__name__.replace("._", "."))

#: Seconds the dead-letter queue must stay empty before browsing ends.
DEFAULT_IDLE = 1.0
#: Most messages one run looks at, and deliveries a broker may hand over ahead of acknowledgement
#: (RabbitMQ's maximum is 65535). A warning says when there may be more: run the command again.
DEFAULT_PREFETCH = 10_000


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
    ids: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Describe the messages in the dead-letter queue of ``queue``, oldest first; they all stay there.

    Args:
        app: The application (configuration and drivers).
        queue: The queue whose dead letters to show (not the dead-letter queue itself).
        limit: Show at most this many.
        driver: Driver instance, for a queue that is not configured.
        idle: Seconds the dead-letter queue must stay empty before browsing ends.
        prefetch: Deliveries the broker may hand over at once, and the most messages looked at.
        ids: Only the messages with these ids (each with every header, kq's own included, under
            ``all_headers``); browsing stops once all were found. An id not found is simply absent
            from the result.
    """
    wanted = None if ids is None else set(ids)
    with open_dead_letters(app, queue, driver, prefetch, None if wanted else limit) as (
        instance,
        dead_letter_queue,
        consumer,
    ):
        leases = leases_of(instance, dead_letter_queue, consumer)
        shown: list[Delivery] = []
        for chunk in chunks(consumer, dead_letter_queue, leases, limit=None if wanted else limit, idle=idle):
            if wanted is None:
                shown.extend(chunk)
                continue
            shown.extend(delivery for delivery in chunk if delivery.message_id in wanted)
            if {delivery.message_id for delivery in shown} >= wanted:
                break
        if wanted is None:
            return [describe_dead_letter(delivery) for delivery in shown]
        return [
            {**describe_dead_letter(delivery), "all_headers": dict(sorted(delivery.headers.items()))}
            for delivery in shown
        ]


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
    with open_dead_letters(app, queue, driver, prefetch, limit) as (instance, dead_letter_queue, consumer):
        leases = leases_of(instance, dead_letter_queue, consumer)
        selection = _Selection(ids, dead_letter_queue)
        retrier = Retrier(app, instance, queue, consumer, leases, resign_unverified)
        for chunk in chunks(consumer, dead_letter_queue, leases, limit=limit, idle=idle):
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
    with open_dead_letters(app, queue, driver, prefetch, limit) as (instance, dead_letter_queue, consumer):
        leases = leases_of(instance, dead_letter_queue, consumer)
        selection = _Selection(ids, dead_letter_queue)
        done: dict[str, None] = {}  # ordered, without repeats
        failed: dict[str, str] = {}
        for chunk in chunks(consumer, dead_letter_queue, leases, limit=limit, idle=idle):
            batch: list[Delivery] = []
            for delivery in selection.pick(chunk):
                message_id = delivery.message_id
                if message_id in failed:
                    continue  # another copy of it was left in the dead-letter queue: this one stays too
                if leases.is_lost(delivery):
                    failed[message_id] = LOST
                    done.pop(message_id, None)
                    log_left(delivery, LOST)
                    continue
                batch.append(delivery)
            error = ack_all(consumer, batch)
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
