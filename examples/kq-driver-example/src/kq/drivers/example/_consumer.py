"""ExampleConsumer: claims message files by renaming them, with a lease."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
import uuid

from kq.core.driver import Consumer, Delivery, LeaseLostError, QueueSpec, matches_any
from kq.drivers.example._driver import ExampleDriver
from kq.drivers.example._store import Claim, Name, QueueFolder, decode

logger = logging.getLogger("kq.drivers.example")


class ExampleConsumer(Consumer):
    """Takes the first waiting message file whose routing key matches, for ``visibility_timeout`` seconds."""

    driver: ExampleDriver
    wakeable = True  # waits go through self._pause(), which wake() interrupts

    def __init__(
        self, driver: ExampleDriver, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int
    ) -> None:
        super().__init__(driver, queue, routing_keys, prefetch)
        self._lease_seconds = float(driver.options["visibility_timeout"])
        self.lease_duration = self._lease_seconds
        self._poll_interval = float(driver.options["poll_interval"])
        self._folder = QueueFolder(driver.folder, queue.name)
        self._folder.create()
        self._held: dict[str, Claim] = {}  # token -> the claim's current file name
        self._lock = threading.Lock()  # the loop's lease keeper extends from another thread

    def _receive(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        while True:
            delivery = self._claim_next()
            if delivery is not None:
                return delivery
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._pause(min(self._poll_interval, remaining)):
                return None

    def _claim_next(self) -> Delivery | None:
        now = time.time_ns()
        self._folder.reclaim(now)
        for name in self._folder.waiting():
            source = self._folder.ready / str(name)
            if name.available > now:
                continue
            if name.expires and name.expires <= now:
                with contextlib.suppress(FileNotFoundError):
                    source.unlink()
                logger.debug("queue %s: dropped expired message file %s", self.queue.name, name.id)
                continue
            if self.routing_keys and not matches_any(self.routing_keys, self._routing_key(source)):
                continue  # left for the consumers it is meant for
            claim = Claim(now + int(self._lease_seconds * 1e9), uuid.uuid4().hex, _counted(name))
            try:
                os.rename(source, self._folder.claimed / str(claim))
            except FileNotFoundError:
                continue  # another consumer took it first
            delivery = self._delivery(claim)
            if delivery is not None:
                return delivery
        return None

    @staticmethod
    def _routing_key(source: os.PathLike[str]) -> str:
        try:
            with open(source, "rb") as file:
                fields, _ = decode(file.read())
        except FileNotFoundError:
            return ""
        key = fields.get("routing_key", "")
        return key if isinstance(key, str) else ""

    def _delivery(self, claim: Claim) -> Delivery | None:
        try:
            data = (self._folder.claimed / str(claim)).read_bytes()
        except FileNotFoundError:
            return None  # the lease lapsed already and someone put it back
        fields, defect = decode(data)
        with self._lock:
            self._held[claim.token] = claim
        return Delivery(
            body=fields.get("body", data),
            content_type=fields.get("content_type", "application/octet-stream"),
            headers=dict(fields.get("headers", {})),
            routing_key=fields.get("routing_key", ""),
            message_id=fields.get("message_id") or claim.name.id,
            queue=self.queue.name,
            delivery_count=claim.name.count,
            handle=claim.token,
            lease_expires=time.monotonic() + (claim.deadline - time.time_ns()) / 1e9,
            defect=defect,
        )

    def _take(self, delivery: Delivery) -> Claim:
        """The delivery's claim, forgotten by this consumer; LeaseLostError if its lease lapsed."""
        with self._lock:
            claim = self._held.pop(delivery.handle, None)
        if claim is None or claim.deadline <= time.time_ns():
            raise _lapsed(delivery)
        return claim

    def _ack(self, delivery: Delivery) -> None:
        claim = self._take(delivery)
        try:
            (self._folder.claimed / str(claim)).unlink()
        except FileNotFoundError:
            raise _lapsed(delivery) from None

    def _reject(self, delivery: Delivery, requeue: bool, delay: float) -> None:
        claim = self._take(delivery)
        source = self._folder.claimed / str(claim)
        try:
            if requeue:
                back = dataclasses.replace(claim.name, available=time.time_ns() + int(delay * 1e9))
                os.rename(source, self._folder.ready / str(back))
            else:
                source.unlink()
        except FileNotFoundError:
            raise _lapsed(delivery) from None

    def _extend(self, delivery: Delivery, seconds: float) -> None:
        with self._lock:
            claim = self._held.get(delivery.handle)
            if claim is None or claim.deadline <= time.time_ns():
                raise _lapsed(delivery)
            extended = dataclasses.replace(claim, deadline=time.time_ns() + int(seconds * 1e9))
            try:
                os.rename(self._folder.claimed / str(claim), self._folder.claimed / str(extended))
            except FileNotFoundError:
                del self._held[delivery.handle]
                raise _lapsed(delivery) from None
            self._held[delivery.handle] = extended

    def _close(self) -> None:
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for claim in held:
            with contextlib.suppress(FileNotFoundError):
                os.rename(self._folder.claimed / str(claim), self._folder.ready / str(claim.name))
        if held:
            logger.info("queue %s: released %d unacknowledged message(s)", self.queue.name, len(held))

    def abandon(self) -> None:
        """Drop this consumer without releasing its deliveries, as a crash would (for tests): they come
        back when their leases lapse."""
        with self._lock:
            self._held.clear()
        self.close()


def _counted(name: Name) -> Name:
    return dataclasses.replace(name, count=name.count + 1)


def _lapsed(delivery: Delivery) -> LeaseLostError:
    return LeaseLostError(f"the lease of message {delivery.message_id} had lapsed")
