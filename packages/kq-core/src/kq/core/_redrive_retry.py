"""Queueing dead letters again (:func:`~kq.core._redrive.retry_dead_letters`): check, clean, sign,
publish in batches, then acknowledge."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kq.core._driver import Driver
from kq.core._driver_consumer import Consumer
from kq.core._errors import KqError, PublishError, SignatureError
from kq.core._failures import AUTHENTIC_SIGNATURE_REASONS
from kq.core._leases import Leases
from kq.core._message import DEAD_LETTER_QUEUE, TRANSIT_HEADERS, Delivery, Message
from kq.core._redrive_browse import LOST, ack_all, log_left
from kq.core._signing import NONCE, Verifier
from kq.core.handlers._producer import GenericMessageProducer

if TYPE_CHECKING:
    from kq.core._app import App

logger = logging.getLogger(__name__.replace("._", "."))

#: Messages republished per batch (confirms and commits paid once per batch).
REPUBLISH_BATCH = 100
#: Headers taken off a dead letter before it is queued again.
REDRIVE_DROPPED_HEADERS = TRANSIT_HEADERS


@dataclass(frozen=True)
class _Copy:
    """A message to queue again (signed), and the dead-letter deliveries (one, or duplicates) it came
    from."""

    copies: list[Delivery]
    message: Message


class Retrier:
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
        leases: Leases,
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
                self._leave(key, delivery, LOST)
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
        error = ack_all(self.consumer, duplicates)
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
        required = self.app.config.signature_required(spec)
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
            return None if exc.reason in AUTHENTIC_SIGNATURE_REASONS else exc.reason
        except Exception as exc:  # a garbled signature header may upset the comparison itself
            return f"bad-signature: {type(exc).__name__}"
        return None

    def _republish(self, target: str, batch: Sequence[_Copy]) -> None:
        self.leases.keep()  # a third of a lease left at least, for publishing and acknowledging
        live: list[_Copy] = []
        for item in batch:
            if any(self.leases.is_lost(d) for d in item.copies):
                self._leave((item.message.message_id, target), item.copies[0], LOST)
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
        error = ack_all(self.consumer, [d for item in went for d in item.copies])
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
        log_left(delivery, why)
