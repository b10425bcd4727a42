"""Message consumers the conformance tests hand to the consume loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kq.core._message import JSON, Delivery
from kq.core.handlers._base import Handler


class Failing(Handler):
    """Fails every message."""

    accepted_content_types = None
    kind = "failing"

    def consume(self, body: Any, delivery: Delivery) -> Any:
        raise RuntimeError(f"cannot handle {body!r}")


class Recording(Handler):
    """Accepts JSON only and records the ids of what it consumed."""

    accepted_content_types = frozenset({JSON})
    kind = "recording"

    def __init__(self) -> None:
        self.ids: list[str] = []

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.ids.append(delivery.message_id)
        return body


class FailingTwice(Handler):
    """Fails the first two executions of each message, then succeeds; records when each one ran."""

    accepted_content_types = None
    kind = "failing-twice"

    def __init__(self) -> None:
        self.runs: list[tuple[str, float]] = []

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.runs.append((delivery.message_id, time.monotonic()))
        if sum(1 for message_id, _ in self.runs if message_id == delivery.message_id) <= 2:
            raise RuntimeError("not yet")
        return body


@dataclass(frozen=True)
class Handling:
    """One execution of a message by a handler: who ran it, when, and the lease it had."""

    message_id: str
    worker: str
    delivery_count: int
    started: float
    finished: float
    #: ``Delivery.lease_expires`` when the handler started (``None``: no lease).
    lease_expires: float | None


class Timed(Handler):
    """Takes ``seconds`` per message (after calling ``on_start`` with the delivery, when given) and
    records every execution in a shared list, with the lease the delivery had when it started."""

    accepted_content_types = None
    kind = "timed"

    def __init__(
        self,
        worker: str,
        log: list[Handling],
        *,
        seconds: float = 0.0,
        on_start: Callable[[Delivery], None] | None = None,
    ) -> None:
        self.worker = worker
        self.log = log
        self.seconds = seconds
        self.on_start = on_start
        self._lock = threading.Lock()

    def consume(self, body: Any, delivery: Delivery) -> Any:
        started = time.monotonic()
        lease = delivery.lease_expires
        if self.on_start is not None:
            self.on_start(delivery)
        if self.seconds:
            time.sleep(self.seconds)
        handling = Handling(
            delivery.message_id, self.worker, delivery.delivery_count, started, time.monotonic(), lease
        )
        with self._lock:
            self.log.append(handling)
        return None
