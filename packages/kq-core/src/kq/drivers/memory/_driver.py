"""The memory driver: queues in a dict, for tests in one process."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kq.core.driver import (
    Capabilities,
    Consumer,
    Delivery,
    Driver,
    LeaseLostError,
    Message,
    Option,
    Producer,
    QueueManager,
    QueueSpec,
    matches_any,
)


@dataclass
class _Entry:
    seq: int
    message: Message
    available_at: float
    expires_at: float | None
    delivery_count: int = 0


@dataclass
class _Queue:
    ready: list[_Entry] = field(default_factory=list)
    # token -> (entry, lease deadline)
    in_flight: dict[str, tuple[_Entry, float]] = field(default_factory=dict)


class _Store:
    """The queues of one namespace, shared by every memory driver instance that names it."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.queues: dict[str, _Queue] = {}
        self.sequence = itertools.count()

    def queue(self, name: str) -> _Queue:
        found = self.queues.get(name)
        if found is None:
            found = self.queues[name] = _Queue()
        return found

    def reclaim(self, queue: _Queue, now: float) -> None:
        """Return expired leases to the ready list (caller holds the lock).

        Messages past their TTL are dropped where they are met: by receivers scanning the ready list,
        and by :meth:`drop_expired`.
        """
        if not queue.in_flight:
            return
        expired = [token for token, (_, deadline) in queue.in_flight.items() if deadline <= now]
        for token in expired:
            entry, _ = queue.in_flight.pop(token)
            self.insert(queue, entry)

    @staticmethod
    def drop_expired(queue: _Queue, now: float) -> None:
        """Remove messages past their TTL from the ready list (caller holds the lock)."""
        queue.ready[:] = [e for e in queue.ready if e.expires_at is None or e.expires_at > now]

    @staticmethod
    def insert(queue: _Queue, entry: _Entry) -> None:
        # Keep the ready list in publication order so redelivered messages keep their place.
        index = len(queue.ready)
        while index > 0 and queue.ready[index - 1].seq > entry.seq:
            index -= 1
        queue.ready.insert(index, entry)


class MemoryDriver(Driver):
    """Queues in process memory. Messages vanish with the process; for tests and examples.

    Driver instances with the same ``namespace`` option share their queues, so a producer app and a
    consumer app in one test see the same messages.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        routing_keys="emulated",
        # -r takes matching messages from the shared queue and leaves the others (docs/drivers.md).
        consumer_routing="filter",
        # Counts leases handed out and not settled: poison protection works (docs/failures.md).
        delivery_count="exact",
        delayed_delivery=True,
        batch_send=True,
        message_ttl=True,
        lease_extension=True,
        cross_process=False,
    )
    driver_options: ClassVar[dict[str, Option]] = {
        "namespace": Option("default", str, "Driver instances with the same namespace share queues."),
        "visibility_timeout": Option(
            30.0,
            float,
            "Seconds a received message stays reserved unless acked.",
            positive=True,
            duration=True,
        ),
    }
    dynamic_queues = True
    description = "In-process queues for tests (not durable, one process)."

    _stores: ClassVar[dict[str, _Store]] = {}
    _stores_lock: ClassVar[threading.Lock] = threading.Lock()

    @property
    def store(self) -> _Store:
        """This instance's namespace."""
        namespace = self.options["namespace"]
        with self._stores_lock:
            store = self._stores.get(namespace)
            if store is None:
                store = self._stores[namespace] = _Store()
            return store

    @classmethod
    def reset(cls) -> None:
        """Forget every namespace (between tests)."""
        with cls._stores_lock:
            cls._stores.clear()

    def join(self, queue: str, timeout: float | None = None, *, fail_fast: bool = False) -> None:
        """Block until ``queue`` has no waiting, delayed or unacknowledged message.

        Args:
            queue: The logical queue.
            timeout: Seconds to wait at most (``None``: no limit).
            fail_fast: Raise as soon as a message of ``queue`` reaches its dead-letter queue while
                waiting, with the reason and error kq recorded, instead of waiting for the rest.

        Raises:
            TimeoutError: the queue was not drained within ``timeout`` seconds.
            ExecutionFailedError: with ``fail_fast``, a message was dead-lettered while waiting.
        """
        store = self.store
        dead_letter_queue = self.queue(queue).dead_letter_queue
        deadline = None if timeout is None else time.monotonic() + timeout
        with store.condition:
            seen = self._dead_letter_seqs(dead_letter_queue)
            while True:
                if fail_fast:
                    self._raise_for_new_dead_letter(queue, dead_letter_queue, seen)
                found = store.queues.get(queue)
                if found is None or (not found.ready and not found.in_flight):
                    return
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"memory queue {queue!r} still holds {len(found.ready)} waiting and "
                        f"{len(found.in_flight)} unacknowledged messages"
                    )
                store.condition.wait(timeout=0.05 if remaining is None else min(remaining, 0.05))

    def _dead_letter_seqs(self, dead_letter_queue: str) -> set[int]:
        """The entries of ``dead_letter_queue``, waiting or in flight (caller holds the lock)."""
        found = self.store.queues.get(dead_letter_queue)
        if found is None:
            return set()
        return {entry.seq for entry in found.ready} | {entry.seq for entry, _ in found.in_flight.values()}

    def _raise_for_new_dead_letter(self, queue: str, dead_letter_queue: str, seen: set[int]) -> None:
        found = self.store.queues.get(dead_letter_queue)
        if found is None:
            return
        for entry in found.ready:
            if entry.seq not in seen:
                from kq.core import DEAD_LETTER_ERROR, DEAD_LETTER_REASON, ExecutionFailedError

                headers = entry.message.headers
                raise ExecutionFailedError(
                    f"queue {queue!r} message {entry.message.message_id} was dead-lettered to "
                    f"{dead_letter_queue!r} ({headers.get(DEAD_LETTER_REASON, 'no reason recorded')}): "
                    f"{headers.get(DEAD_LETTER_ERROR, '')}"
                )

    def _create_producer(self, queue: QueueSpec) -> Producer:
        return MemoryProducer(self, queue)

    def _create_consumer(self, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int) -> Consumer:
        return MemoryConsumer(self, queue, routing_keys, prefetch)

    def _create_queue_manager(self) -> QueueManager:
        return MemoryQueueManager(self)


class MemoryProducer(Producer):
    """Appends messages to the shared store."""

    driver: MemoryDriver

    def _send_batch(self, messages: Sequence[Message]) -> None:
        store = self.driver.store
        now = time.monotonic()
        with store.condition:
            queue = store.queue(self.queue.name)
            for message in messages:
                queue.ready.append(
                    _Entry(
                        seq=next(store.sequence),
                        message=message,
                        available_at=now + message.delay,
                        expires_at=None if message.ttl is None else now + message.ttl,
                    )
                )
            store.condition.notify_all()


class MemoryConsumer(Consumer):
    """Takes messages from the shared store with a lease of ``visibility_timeout`` seconds."""

    driver: MemoryDriver
    wakeable = True

    def __init__(
        self, driver: MemoryDriver, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int
    ) -> None:
        super().__init__(driver, queue, routing_keys, prefetch)
        self.lease_duration = float(driver.options["visibility_timeout"])
        self._store = driver.store
        self._tokens: set[str] = set()
        self._token_prefix = f"{uuid.uuid4().hex[:8]}-"
        self._tokens_issued = itertools.count()

    def _receive(self, timeout: float) -> Delivery | None:
        store = self._store
        deadline = time.monotonic() + timeout
        with store.condition:
            queue = store.queue(self.queue.name)
            while True:
                now = time.monotonic()
                store.reclaim(queue, now)
                wake = deadline
                for index, entry in enumerate(queue.ready):
                    if entry.expires_at is not None and entry.expires_at <= now:
                        store.drop_expired(queue, now)
                        break  # the list changed under the scan: look again
                    if entry.available_at > now:
                        wake = min(wake, entry.available_at)
                        continue
                    if not matches_any(self.routing_keys, entry.message.routing_key):
                        continue
                    del queue.ready[index]
                    return self._lease(queue, entry, now)
                else:
                    for _, lease_end in queue.in_flight.values():
                        wake = min(wake, lease_end)
                    if now >= deadline or self.woken:
                        return None
                    store.condition.wait(timeout=max(0.0, wake - now))

    def _wake(self) -> None:
        with self._store.condition:  # reentrant, so a signal handler on the receiving thread is safe
            self._store.condition.notify_all()

    def _lease(self, queue: _Queue, entry: _Entry, now: float) -> Delivery:
        entry.delivery_count += 1
        token = f"{self._token_prefix}{next(self._tokens_issued)}"
        queue.in_flight[token] = (entry, now + (self.lease_duration or 0.0))
        self._tokens.add(token)
        message = entry.message
        return Delivery(
            body=message.body,
            content_type=message.content_type,
            headers=dict(message.headers),
            routing_key=message.routing_key,
            message_id=message.message_id,
            queue=self.queue.name,
            delivery_count=entry.delivery_count,
            handle=token,
            lease_expires=now + (self.lease_duration or 0.0),
        )

    def _ack(self, delivery: Delivery) -> None:
        with self._store.condition:
            found = self._store.queue(self.queue.name).in_flight.pop(delivery.handle, None)
            self._tokens.discard(delivery.handle)
            self._store.condition.notify_all()
        if found is None:
            raise _lapsed(delivery)

    def _reject(self, delivery: Delivery, requeue: bool, delay: float) -> None:
        store = self._store
        with store.condition:
            queue = store.queue(self.queue.name)
            found = queue.in_flight.pop(delivery.handle, None)
            self._tokens.discard(delivery.handle)
            if found is not None and requeue:
                entry = found[0]
                entry.available_at = time.monotonic() + delay
                store.insert(queue, entry)
            store.condition.notify_all()
        if found is None:
            raise _lapsed(delivery)

    def _extend(self, delivery: Delivery, seconds: float) -> None:
        with self._store.condition:
            queue = self._store.queue(self.queue.name)
            found = queue.in_flight.get(delivery.handle)
            if found is None:
                raise _lapsed(delivery)
            queue.in_flight[delivery.handle] = (found[0], time.monotonic() + seconds)

    def _close(self) -> None:
        store = self._store
        with store.condition:
            queue = store.queue(self.queue.name)
            for token in self._tokens:
                found = queue.in_flight.pop(token, None)
                if found is not None:
                    store.insert(queue, found[0])
            self._tokens.clear()
            store.condition.notify_all()

    def abandon(self) -> None:
        """Drop this consumer without releasing its deliveries, as a crash would (for tests).

        Its unacknowledged messages come back once their lease (``visibility_timeout``) expires.
        """
        self._tokens.clear()
        self.close()


def _lapsed(delivery: Delivery) -> LeaseLostError:
    return LeaseLostError(f"the lease of message {delivery.message_id} had lapsed")


class MemoryQueueManager(QueueManager):
    """Inspects the shared store."""

    driver: MemoryDriver

    def list_available(self) -> list[str]:
        """Queues that hold or held messages in this namespace."""
        with self.driver.store.condition:
            return sorted(self.driver.store.queues)

    def info(self, queue: str) -> dict[str, Any]:
        """Counts of waiting (``messages``), delayed and unacknowledged (``in_flight``) messages."""
        store = self.driver.store
        with store.condition:
            found = store.queues.get(queue)
            if found is None:
                return {"queue": queue, "exists": False, "messages": 0, "delayed": 0, "in_flight": 0}
            now = time.monotonic()
            store.reclaim(found, now)
            store.drop_expired(found, now)
            delayed = sum(1 for e in found.ready if e.available_at > now)
            return {
                "queue": queue,
                "exists": True,
                "messages": len(found.ready) - delayed,
                "delayed": delayed,
                "in_flight": len(found.in_flight),
            }

    def purge(self, queue: str) -> int:
        """Drop every waiting and delayed message; return how many."""
        store = self.driver.store
        with store.condition:
            found = store.queues.get(queue)
            if found is None:
                return 0
            count = len(found.ready)
            found.ready.clear()
            store.condition.notify_all()
            return count

    def delete(self, queue: str) -> bool:
        """Forget the queue and everything in it; ``False`` when there was no such queue."""
        store = self.driver.store
        with store.condition:
            found = store.queues.pop(queue, None)
            store.condition.notify_all()
        return found is not None
