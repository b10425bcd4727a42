"""Publishing to SQS: ``SendMessageBatch`` in chunks of at most 10 entries and the size limit.

Routing keys are emulated as an AMQP exchange would route: a message is sent only when its key matches
the queue's ``routing_keys`` (none: every message). Entries SQS refuses for a transient reason (its
fault, throttling) are sent again, a few times; what still fails raises :class:`PublishError` naming
the messages that went and those that did not. FIFO queues get a ``MessageGroupId`` (the ``kq-group``
header, else the queue's ``group_id``, else ``default``) and a ``MessageDeduplicationId`` made fresh for
each publish call: never the message id or the body, which retry and re-drive copies repeat (a copy
dropped as a duplicate would be a lost message).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from kq.core.driver import GROUP, Message, MessageFormatError, Producer, PublishError, QueueSpec, matches_any
from kq.drivers.sqs._driver import CONNECTION_ERRORS, MISSING_QUEUE, error_code
from kq.drivers.sqs._wire import Packed, pack

if TYPE_CHECKING:
    from kq.drivers.sqs._driver import SqsDriver

logger = logging.getLogger(__name__.replace("._", "."))

#: Most entries of one SendMessageBatch call.
MAX_ENTRIES = 10
#: SQS's message size limit, and that of a whole batch, unless the queue says less.
MAX_BYTES = 1_048_576
#: Rounds of re-sending the entries SQS failed for a transient reason.
RESEND_ROUNDS = 3
DEFAULT_GROUP = "default"


def chunk(sizes: Sequence[int], *, entries: int = MAX_ENTRIES, limit: int = MAX_BYTES) -> list[list[int]]:
    """Indexes of ``sizes`` grouped into batches of at most ``entries`` items and ``limit`` bytes."""
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for index, size in enumerate(sizes):
        if current and (len(current) >= entries or total + size > limit):
            batches.append(current)
            current, total = [], 0
        current.append(index)
        total += size
    if current:
        batches.append(current)
    return batches


class SqsProducer(Producer):
    """Sends messages to one logical queue's SQS queue."""

    driver: SqsDriver

    def __init__(self, driver: SqsDriver, queue: QueueSpec) -> None:
        super().__init__(driver, queue)
        self._fifo = driver.is_fifo(queue.name)
        self._url: str | None = None
        self._max_bytes = MAX_BYTES

    def _connect(self) -> str:
        if self._url is None:
            url = self.driver.queue_url(self.queue.name)
            try:
                found = self.driver.client().get_queue_attributes(
                    QueueUrl=url, AttributeNames=["MaximumMessageSize"]
                )["Attributes"]
                self._max_bytes = int(found.get("MaximumMessageSize", MAX_BYTES))
            except (botocore.exceptions.ClientError, ValueError):
                logger.debug("queue %s: MaximumMessageSize unknown, assuming %d", self.queue.name, MAX_BYTES)
            self._url = url
        return self._url

    def _send_batch(self, messages: Sequence[Message]) -> None:
        keys = self.queue.routing_keys
        routed = [m for m in messages if matches_any(keys, m.routing_key)]
        for message in messages:
            if not matches_any(keys, message.routing_key):
                logger.info(
                    "queue %s message %s: routing key %r matches none of the queue's routing_keys %s; "
                    "not sent (as an AMQP exchange would route it)",
                    self.queue.name,
                    message.message_id,
                    message.routing_key,
                    list(keys),
                )
        if not routed:
            return
        url = self._connect()
        now = time.time()
        packed = [pack(m, now=now) for m in routed]
        for message, item in zip(routed, packed, strict=True):
            if item.size > self._max_bytes:
                raise MessageFormatError(
                    f"message {message.message_id} is {item.size} bytes in SQS (body and attributes), more "
                    f"than queue {self.queue.name}'s limit of {self._max_bytes}; nothing was sent"
                )
        entries = [self._entry(n, m, p) for n, (m, p) in enumerate(zip(routed, packed, strict=True))]
        published: list[str] = []
        for batch in chunk([p.size for p in packed], limit=self._max_bytes):
            try:
                failed = self._send_chunk(url, [entries[i] for i in batch])
            except Exception as exc:
                self._raise_partial(exc, routed, published)
            ok = [routed[i].message_id for i in batch if str(i) not in failed]
            published += ok
            if failed:
                reasons = "; ".join(sorted(set(failed.values())))
                raise PublishError(
                    f"queue {self.queue.name}: SQS refused {len(failed)} of {len(routed)} messages "
                    f"({reasons}); {len(published)} were published",
                    published=published,
                    failed=[m.message_id for m in routed if m.message_id not in published],
                )
        logger.debug("queue %s: published %d messages", self.queue.name, len(published))

    def _entry(self, index: int, message: Message, packed: Packed) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "Id": str(index),
            "MessageBody": packed.body,
            "MessageAttributes": packed.attributes,
        }
        if self._fifo:
            entry["MessageGroupId"] = (
                message.headers.get(GROUP) or self.queue.options["group_id"] or DEFAULT_GROUP
            )
            # Fresh per publish call, reused only by the re-sends of this call.
            entry["MessageDeduplicationId"] = uuid.uuid4().hex
        elif message.delay:
            entry["DelaySeconds"] = math.ceil(message.delay)
        return entry

    def _send_chunk(self, url: str, entries: list[dict[str, Any]]) -> dict[str, str]:
        """Send ``entries``, re-sending those failed for a transient reason; return the ids still failed
        with SQS's reason."""
        permanent: dict[str, str] = {}
        pending = entries
        for attempt in range(RESEND_ROUNDS + 1):
            response = self.driver.client().send_message_batch(QueueUrl=url, Entries=pending)
            transient: dict[str, str] = {}
            for failure in response.get("Failed", []):
                reason = f"{failure.get('Code', '?')}: {failure.get('Message', '')}"
                (permanent if failure.get("SenderFault", False) else transient)[failure["Id"]] = reason
            if not transient:
                break
            if attempt == RESEND_ROUNDS:
                return {**permanent, **transient}
            logger.warning(
                "queue %s: SQS failed %d entries for a transient reason (%s); sending them again",
                self.queue.name,
                len(transient),
                next(iter(transient.values())),
            )
            time.sleep(0.2 * 2**attempt)
            pending = [e for e in pending if e["Id"] in transient]
        return permanent

    def _raise_partial(self, exc: Exception, routed: Sequence[Message], published: list[str]) -> None:
        if error_code(exc) in MISSING_QUEUE:
            # Deleted since it was looked up: the next publish looks it up (and creates it) again.
            self.driver.forget(self.queue.name)
            self._url = None
        error = self.driver.request_error(exc, f"publishing to queue {self.queue.name}")
        if not published:
            if isinstance(exc, (*CONNECTION_ERRORS, botocore.exceptions.ClientError)):
                raise error from exc
            raise exc
        raise PublishError(
            f"queue {self.queue.name}: {error}; {len(published)} of {len(routed)} messages were published",
            published=published,
            failed=[m.message_id for m in routed if m.message_id not in published],
        ) from exc
