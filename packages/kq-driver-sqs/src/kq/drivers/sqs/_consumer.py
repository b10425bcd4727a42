"""Consuming from SQS: long polls into a buffer, visibility leases, deletes and visibility changes.

``receive(timeout)`` long-polls (``WaitTimeSeconds`` = min(``wait_time``, floor(timeout)); below one
second a short poll) for up to min(10, prefetch) messages and buffers the extra ones with their lease,
counted from the answer that brought them. The poll runs in a helper thread and ``receive`` waits on
the buffer, so that ``wake()`` (the consume loop's ``stop``) returns it at once: the consumer is
``wakeable`` and its ``idle_wait`` is ``wait_time``. A poll still in flight then fills the buffer for
the next receive, or, once the consumer closed, makes what it brought visible again at once.

A buffered message whose visibility is more than half spent is refreshed (``ChangeMessageVisibility``)
before it is handed out, and one whose visibility lapsed is dropped (another consumer may hold it now):
none is ever handed out with a lapsed lease.

Settling checks the lease first: after it lapsed, another consumer may have received the message, so
the driver changes nothing and raises :class:`LeaseLostError`. While more received messages wait in
the buffer, an ack is held back to leave with the next ones in one ``DeleteMessageBatch`` (at most 10,
at the latest when the buffer runs dry, ``DELETE_DELAY`` seconds later from a helper thread, or on
close), so that short handlers cost one request per batch instead of one per message; a held delete
that fails is logged with the message ids, and SQS delivers those messages again. Otherwise ``ack`` is
``DeleteMessage``,
``reject(requeue=True, delay=d)`` ``ChangeMessageVisibility(d)``, ``reject(requeue=False)`` a delete,
``extend`` ``ChangeMessageVisibility``; the batch forms serve ``ack_many``/``extend_many``. Closing
makes the buffered and unsettled messages visible again at once.

On a FIFO queue a retry stays in place (capability ``retry_in_place``): the delivery's visibility is
set to the retry delay (at most 12 h). The messages of its group this consumer buffered are released
at once when there is no delay; otherwise they are held back (their visibility extended) and released
``HOLD_MARGIN`` seconds after the delay ends, so that they come after it: SQS hands out nothing more of
a group while one of its messages is in flight, but releasing them at once would let LocalStack hand
them out during the delay. The attempt is then counted from ``ApproximateReceiveCount``: a FIFO
delivery's ``kq-attempt`` is the published one plus its receives before this one (releases included).
A requeue holds or releases the buffered messages of its group the same way.

A message past its TTL is deleted on receive. A message whose routing key matches none of the queue's
``routing_keys`` (sent by another producer: kq's producers never send one) is handed out with a defect,
so the loop dead-letters it (kept, not lost, no hot loop, no 30-second limbo).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from kq.core.driver import (
    ATTEMPT,
    BrokerUnavailableError,
    Consumer,
    Delivery,
    LeaseLostError,
    QueueSpec,
    matches_any,
)
from kq.drivers.sqs._driver import MISSING_QUEUE, error_code
from kq.drivers.sqs._wire import unpack

if TYPE_CHECKING:
    from kq.drivers.sqs._driver import SqsDriver

logger = logging.getLogger(__name__.replace("._", "."))

#: Most messages one ReceiveMessage call returns, and most entries of a batch call.
MAX_BATCH = 10
#: Seconds between SQS returning a message and the driver reading the answer, at most (assumed).
TRANSIT_MARGIN = 0.25
#: Seconds a receive waits past its deadline for the answer of the long poll it started.
TRANSIT_WAIT = 2.0
#: Receive calls made past the timeout when every message fetched had expired (and was deleted).
EXTRA_ROUNDS = 5
#: Seconds past a retried FIFO message's delay before the messages of its group held behind it are
#: released: it must be back in the queue first (LocalStack returns lapsed messages once a second).
HOLD_MARGIN = 1.5
#: Seconds an ack held back for a batch waits for the consumer to send it with the next ones before a
#: helper thread sends it: a handler that runs longer does not delay the deletes of those before it.
DELETE_DELAY = 0.005
#: Error codes meaning "this receipt handle is no longer yours".
LOST = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidParameterValue",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)


@dataclasses.dataclass(frozen=True)
class Receipt:
    """What settles an SQS delivery (``Delivery.handle``): its receipt handle, and its FIFO group."""

    handle: str
    group: str | None = None


def fifo_attempt(headers: dict[str, str], receives: int) -> str:
    """The ``kq-attempt`` of a FIFO delivery: the published attempt plus its earlier receives."""
    try:
        published = max(1, int(headers.get(ATTEMPT, "1")))
    except ValueError:
        published = 1
    return str(published + receives - 1)


class SqsConsumer(Consumer):
    """Receives from one logical queue's SQS queue."""

    driver: SqsDriver
    wakeable = True

    def __init__(
        self, driver: SqsDriver, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int
    ) -> None:
        super().__init__(driver, queue, routing_keys, prefetch)
        self.lease_duration = float(driver.options["visibility_timeout"])
        self.idle_wait = float(driver.options["wait_time"]) or None
        self._url = driver.queue_url(queue.name)
        self._fifo = driver.is_fifo(queue.name)
        self._poll = driver.client("poll")
        self._lease = driver.client("lease")
        self._buffer: collections.deque[Delivery] = collections.deque()
        self._out: list[Delivery] = []  # handed out, maybe not settled yet
        self._lock = threading.Lock()  # the lease keeper extends from another thread
        # The poll runs in a helper thread so that wake() can cut a receive short: it fills the buffer
        # under this condition, which receive waits on.
        self._cond = threading.Condition(threading.RLock())
        self._polling = False
        self._poll_ends = 0.0  # when the poll in flight asked SQS to answer at the latest
        self._fetched = 0  # messages the last poll fetched (expired ones included)
        self._failure: Exception | None = None
        # FIFO messages held back behind a retried message of their group: (release time, deliveries).
        self._held: list[tuple[float, list[Delivery]]] = []
        # Acknowledged deliveries whose DeleteMessage waits to leave with the next ones (see _ack).
        self._deletes: list[Delivery] = []
        self._delete_delay = DELETE_DELAY
        # A helper thread, started on the first held delete, sends what the consumer did not send within
        # the delay; an event wakes it (no thread per batch).
        self._deletes_held = threading.Event()
        self._keeper_stop = threading.Event()
        self._keeper: threading.Thread | None = None

    # -- receiving ---------------------------------------------------------------------------------

    def _receive(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        extra = EXTRA_ROUNDS
        polled = False  # whether this receive started a poll yet
        with self._cond:
            while True:
                self._release_held(due_only=True)
                delivery = self._from_buffer()
                if delivery is not None:
                    return delivery
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    raise failure
                if self.woken:
                    return None
                now = time.monotonic()
                if self._polling:
                    # Wait for the poll in flight: past the deadline only for the one this receive
                    # started to end within it (its answer is on its way).
                    until = max(deadline, self._poll_ends + TRANSIT_WAIT) if polled else deadline
                    if now >= until:
                        return None
                    self._cond.wait(min(until, self._next_release()) - now)
                    continue
                if polled and self._fetched and extra > 0:
                    # Everything fetched was dropped (expired): the queue is not empty, so look again.
                    extra -= 1
                elif polled and deadline - now < 1.0:
                    return None
                self._start_poll(max(0.0, deadline - now))
                polled = True

    def _start_poll(self, timeout: float) -> None:
        """Start one ReceiveMessage call in a helper thread (the caller holds the condition)."""
        # The few microseconds since the receive began must not turn a 20 s wait into a 19 s poll.
        wait = min(int(self.driver.options["wait_time"]), math.floor(timeout + 0.05))
        self._out = [d for d in self._out if not d.settled]
        wanted = max(1, min(MAX_BATCH, self.prefetch - len(self._out)))
        self._polling = True
        self._poll_ends = time.monotonic() + wait
        thread = threading.Thread(
            target=self._poll_in_background,
            args=(wait, wanted),
            name=f"kq-sqs-poll-{self.queue.name}",
            daemon=True,  # a long poll must not keep the process alive; SQS redelivers what it held
        )
        thread.start()

    def _poll_in_background(self, wait: int, wanted: int) -> None:
        """Run one poll and hand its deliveries to the buffer, or release them if the consumer closed."""
        deliveries: list[Delivery] = []
        failure: Exception | None = None
        fetched = 0
        try:
            fetched, deliveries = self._fetch(wait, wanted)
        except Exception as exc:  # raised by the receive waiting for it, in the consumer's thread
            failure = exc
        release: list[Delivery] = []
        with self._cond:
            self._polling = False
            self._fetched = fetched
            if self.closed:
                release = deliveries
                if failure is not None:
                    logger.debug("queue %s: a poll ended after close: %s", self.queue.name, failure)
            else:
                self._buffer.extend(deliveries)
                self._failure = failure
            self._cond.notify_all()
        if release:
            logger.info(
                "queue %s: a long poll brought %d messages after the consumer closed; releasing them",
                self.queue.name,
                len(release),
            )
            self._release(release)

    def _fetch(self, wait: int, wanted: int) -> tuple[int, list[Delivery]]:
        """One ReceiveMessage call: how many messages it fetched, and the deliveries of those unexpired."""
        started = time.monotonic()
        try:
            response = self._poll.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=wanted,
                WaitTimeSeconds=wait,
                VisibilityTimeout=math.ceil(self.lease_duration or 0),
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount", "MessageGroupId"],
            )
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in MISSING_QUEUE:
                # Deleted under the worker: the loop rebuilds the consumer, which looks the queue up again.
                self.driver.forget(self.queue.name)
                raise BrokerUnavailableError(
                    f"queue {self.queue.name}: its SQS queue {self._url} no longer exists"
                ) from exc
            raise self.driver.request_error(exc, f"receiving from queue {self.queue.name}") from exc
        # SQS starts the visibility timeout when it returns the messages, at the end of a long poll:
        # count from the answer, less a margin for its transit, never from before the call.
        expires = max(started, time.monotonic() - TRANSIT_MARGIN) + (self.lease_duration or 0)
        messages = response.get("Messages", [])
        deliveries = [self._delivery(raw, expires) for raw in messages]
        return len(messages), [d for d in deliveries if d is not None]

    def _wake(self) -> None:
        with self._cond:  # reentrant, so a signal handler on the receiving thread is safe
            self._cond.notify_all()

    def _from_buffer(self) -> Delivery | None:
        while self._buffer:
            delivery = self._buffer.popleft()
            left = (delivery.lease_expires or 0.0) - time.monotonic()
            if left <= 0.5:
                logger.info(
                    "queue %s message %s: its visibility lapsed while buffered; dropped (SQS delivers it "
                    "again)",
                    self.queue.name,
                    delivery.message_id,
                )
                continue
            if left < (self.lease_duration or 0.0) / 2 and not self._refresh(delivery):
                continue
            self._out.append(delivery)
            return delivery
        return None

    def _refresh(self, delivery: Delivery) -> bool:
        """Renew a buffered delivery's visibility; ``False`` when it was lost meanwhile."""
        try:
            self._extend(delivery, self.lease_duration or 0.0)
        except LeaseLostError:
            return False
        delivery.lease_expires = time.monotonic() + (self.lease_duration or 0.0)
        return True

    def _delivery(self, raw: dict[str, Any], expires: float) -> Delivery | None:
        """The delivery of one received message; ``None`` when it expired (and was deleted)."""
        sqs_id = str(raw.get("MessageId", ""))
        handle = raw.get("ReceiptHandle")
        system = raw.get("Attributes", {})
        found = unpack(str(raw.get("Body", "")), raw.get("MessageAttributes", {}) or {}, sqs_id)
        if found.expires is not None and found.expires <= time.time():
            logger.info(
                "queue %s message %s: its TTL ended %.1fs ago; deleted unread",
                self.queue.name,
                found.message_id,
                time.time() - found.expires,
            )
            self._delete_quietly(str(handle))
            return None
        defects = list(found.defects)
        if not matches_any(self.routing_keys, found.routing_key):
            defects.append(
                f"routing key {found.routing_key!r} matches none of the queue's routing_keys "
                f"{list(self.routing_keys)} (sent by a producer that does not route as kq does)"
            )
        try:
            count = max(1, int(system.get("ApproximateReceiveCount", 1)))
        except ValueError:
            count = 1
        headers = found.headers
        if self._fifo and count > 1:
            # Retries stay in place on a FIFO queue: their attempts are counted in receives.
            headers = {**headers, ATTEMPT: fifo_attempt(headers, count)}
        return Delivery(
            body=found.body,
            content_type=found.content_type,
            headers=headers,
            routing_key=found.routing_key,
            message_id=found.message_id,
            queue=self.queue.name,
            delivery_count=count,
            handle=Receipt(str(handle), system.get("MessageGroupId") if self._fifo else None),
            defect="; ".join(defects) or None,
            lease_expires=expires,
        )

    # -- settling ----------------------------------------------------------------------------------

    def _ack(self, delivery: Delivery) -> None:
        self._check_lease(delivery)
        with self._cond:
            self._deletes.append(delivery)
            if self._buffer and len(self._deletes) < MAX_BATCH:
                # More messages are here already: this delete leaves with theirs, in one request.
                if len(self._deletes) == 1:
                    self._start_keeper()
                    self._deletes_held.set()
                return
            deletes = self._take_deletes()
        if len(deletes) == 1:
            self._call("delete_message", delivery, ReceiptHandle=delivery.handle.handle)
        else:
            self._batch("delete_message_batch", deletes, {})

    def _take_deletes(self) -> list[Delivery]:
        """The held deletes, now the caller's to send (the caller holds the condition)."""
        deletes, self._deletes = self._deletes, []
        return deletes

    def _start_keeper(self) -> None:
        if self._keeper is None:
            self._keeper = threading.Thread(
                target=self._keep_deletes, name=f"kq-sqs-deletes-{self.queue.name}", daemon=True
            )
            self._keeper.start()

    def _keep_deletes(self) -> None:
        """Send held deletes ``_delete_delay`` after the first was held, unless the consumer did: a
        handler that runs longer must not hold the deletes (and the visibility) of those before it."""
        # The stop flag is checked after each round: a stop that came while this thread cleared the
        # event (undoing the stop's own wake-up) ends the loop here instead of leaving it waiting.
        while not self._keeper_stop.is_set():
            self._deletes_held.wait()
            if self._keeper_stop.wait(self._delete_delay):
                return  # closing: close() sends them
            self._deletes_held.clear()
            self._send_held_deletes()

    def _stop_keeper(self, *, wait: bool) -> None:
        """End the helper thread; ``wait``: until a batch it is sending has been sent."""
        self._keeper_stop.set()
        self._deletes_held.set()
        keeper = self._keeper
        if wait and keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=float(self.driver.options["request_timeout"]))

    def _send_held_deletes(self) -> None:
        """Send the deletes ``_ack`` held back; a failure is logged, not raised: the handlers of those
        messages ran, and SQS delivers them again once their visibility ends."""
        with self._cond:
            deletes = self._take_deletes()
        if not deletes:
            return
        try:
            self._batch("delete_message_batch", deletes, {})
        except LeaseLostError as exc:
            logger.warning(
                "queue %s message %s: deleting it after its handler came after its visibility had lapsed; "
                "the copy another consumer may hold was left alone, so the message may run again",
                self.queue.name,
                ", ".join(d.message_id for d in exc.deliveries),
            )
        except Exception as exc:
            logger.warning(
                "queue %s message %s: deleting it after its handler failed (%s); SQS delivers it again "
                "once its visibility ends",
                self.queue.name,
                ", ".join(d.message_id for d in deletes),
                exc,
            )

    def _ack_many(self, deliveries: Sequence[Delivery]) -> None:
        self._batch("delete_message_batch", deliveries, {})

    def _reject(self, delivery: Delivery, requeue: bool, delay: float) -> None:
        self._check_lease(delivery)
        if requeue:
            self._call(
                "change_message_visibility",
                delivery,
                ReceiptHandle=delivery.handle.handle,
                VisibilityTimeout=math.ceil(delay),
            )
            self._hold_group(delivery, delay)
        else:
            self._call("delete_message", delivery, ReceiptHandle=delivery.handle.handle)

    def _retry(self, delivery: Delivery, headers: dict[str, str], delay: float) -> None:
        if not self._fifo:
            super()._retry(delivery, headers, delay)
            return
        delivery.to_message(headers=headers)  # refuses what a copy's publish would, changing nothing
        self._reject(delivery, True, delay)

    def _hold_group(self, delivery: Delivery, delay: float) -> None:
        """Keep the buffered messages of ``delivery``'s FIFO group from running before it comes back:
        released at once without a delay, else held (visibility extended) until the delay ends."""
        group = delivery.handle.group
        if group is None:
            return
        with self._cond:
            behind = [d for d in self._buffer if d.handle.group == group]
            for other in behind:
                self._buffer.remove(other)
            if not behind:
                return
            if delay > 0:
                hold = delay + HOLD_MARGIN
                try:
                    self._extend_many(behind, hold + (self.lease_duration or 0.0))
                except LeaseLostError as exc:
                    behind = [d for d in behind if d not in exc.deliveries]  # back in SQS by themselves
                now = time.monotonic()
                for other in behind:
                    other.lease_expires = now + hold + (self.lease_duration or 0.0)
                self._held.append((now + hold, behind))
        logger.info(
            "queue %s message %s: back in its FIFO group %s%s; %d buffered messages of the group %s",
            self.queue.name,
            delivery.message_id,
            group,
            f" in {delay:g}s" if delay > 0 else "",
            len(behind),
            "held until then, so that they run after it" if delay > 0 else "released, to run after it",
        )
        if delay <= 0:
            self._release(behind)

    def _next_release(self) -> float:
        """When the first held group is due (infinity when none is held)."""
        return min((due for due, _ in self._held), default=math.inf)

    def _release_held(self, *, due_only: bool) -> None:
        """Release the held messages whose retried group head is visible again (all, on close)."""
        if not self._held:
            return
        now = time.monotonic()
        due = [deliveries for when, deliveries in self._held if not due_only or when <= now]
        if due:
            self._held = [(when, ds) for when, ds in self._held if due_only and when > now]
            self._release([d for deliveries in due for d in deliveries])

    def _extend(self, delivery: Delivery, seconds: float) -> None:
        self._check_lease(delivery)
        self._call(
            "change_message_visibility",
            delivery,
            ReceiptHandle=delivery.handle.handle,
            VisibilityTimeout=min(43_200, math.ceil(seconds)),
        )

    def _extend_many(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        self._batch(
            "change_message_visibility_batch",
            deliveries,
            {"VisibilityTimeout": min(43_200, math.ceil(seconds))},
        )

    def _check_lease(self, delivery: Delivery) -> None:
        if delivery.lease_expires is not None and delivery.lease_expires <= time.monotonic():
            raise LeaseLostError(f"the visibility of message {delivery.message_id} had lapsed", [delivery])

    def _call(self, method: str, delivery: Delivery, **arguments: Any) -> None:
        try:
            with self._lock:
                getattr(self._lease, method)(QueueUrl=self._url, **arguments)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in LOST:
                raise LeaseLostError(
                    f"SQS refused the receipt of message {delivery.message_id} ({code})", [delivery]
                ) from None
            raise self.driver.request_error(exc, f"{method} of message {delivery.message_id}") from exc

    def _batch(self, method: str, deliveries: Sequence[Delivery], extra: dict[str, Any]) -> None:
        """A batch call in chunks of 10; lapsed or refused receipts are raised together at the end."""
        now = time.monotonic()
        lost = [d for d in deliveries if d.lease_expires is not None and d.lease_expires <= now]
        live = [d for d in deliveries if d not in lost]
        for start in range(0, len(live), MAX_BATCH):
            part = live[start : start + MAX_BATCH]
            entries = [{"Id": str(n), "ReceiptHandle": d.handle.handle, **extra} for n, d in enumerate(part)]
            try:
                with self._lock:
                    response = getattr(self._lease, method)(QueueUrl=self._url, Entries=entries)
            except botocore.exceptions.ClientError as exc:
                raise self.driver.request_error(exc, f"{method} on queue {self.queue.name}") from exc
            for failure in response.get("Failed", []):
                lost.append(part[int(failure["Id"])])
        if lost:
            raise LeaseLostError(f"{len(lost)} of {len(deliveries)} leases had lapsed", lost)

    # -- closing -----------------------------------------------------------------------------------

    def _close(self) -> None:
        """Send the held deletes, then make the buffered and unsettled deliveries visible again at once."""
        self._stop_keeper(wait=True)  # a batch it is sending is sent before anything is released
        self._send_held_deletes()  # what was handled stays handled
        with self._cond:  # a poll ending now either buffered its deliveries already or releases them
            held = [d for _, deliveries in self._held for d in deliveries]
            pending = [d for d in (*self._buffer, *self._out, *held) if not d.settled]
            self._buffer.clear()
            self._out.clear()
            self._held.clear()
        self._release(pending)

    def _release(self, pending: list[Delivery]) -> None:
        """Make ``pending`` visible again at once."""
        if pending:
            try:
                self._batch("change_message_visibility_batch", pending, {"VisibilityTimeout": 0})
            except LeaseLostError:
                pass  # those came back by themselves already
            except Exception:
                logger.warning(
                    "queue %s: releasing %d messages on close failed; they come back when their visibility "
                    "ends",
                    self.queue.name,
                    len(pending),
                    exc_info=True,
                )
            else:
                logger.debug("queue %s: released %d messages on close", self.queue.name, len(pending))

    def abandon(self) -> None:
        """Forget every delivery without releasing it and close, as a killed process would (tests)."""
        with self._cond:
            self._buffer.clear()
            self._out.clear()
            self._held.clear()
            self._take_deletes()
            self.closed = True
        self._stop_keeper(wait=False)

    def _delete_quietly(self, handle: str) -> None:
        try:
            with self._lock:
                self._lease.delete_message(QueueUrl=self._url, ReceiptHandle=handle)
        except Exception:
            logger.warning(
                "queue %s: deleting an expired message failed; it comes back and is deleted then",
                self.queue.name,
                exc_info=True,
            )
