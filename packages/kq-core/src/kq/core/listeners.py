"""Ready-made event listeners, the useful ones of the PHP library.

Use them from the configuration (``events`` defaults to what each listens to; ``options`` are passed to
the constructor)::

    [[listeners]]
    handler = "kq.core.listeners:Monitor"

    [[listeners]]
    handler = "kq.core.listeners:Stopwatch"
    options = { every = 1000 }

    [[listeners]]
    handler = "kq.core.listeners:RequeueFailedCommands"
    queue = "jobs"
    options = { max_attempts = 3, delay = 60 }

or in Python: ``app.dispatcher.add_listener("message_consumed", Accumulator())``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from kq.core._events import Event, MessageConsumed, MessageConsumptionFailed, MessageReceived
from kq.core._failures import RETRIED_REASONS
from kq.core._numbers import check_number, check_whole_number
from kq.core.handlers._console import ConsoleCommandHandler
from kq.core.handlers._process import CommandResult

logger = logging.getLogger("kq.monitor")


class Monitor:
    """Logs each message received, consumed or failed, with a preview of its body and result."""

    events: ClassVar[tuple[str, ...]] = ("message_received", "message_consumed", "message_consumption_failed")

    def __init__(self, preview: int = 200) -> None:
        self.preview = check_whole_number(preview, "preview")

    def __call__(self, event: Event) -> None:
        """Log the event (logger ``kq.monitor``, level INFO; failures at WARNING)."""
        if isinstance(event, MessageReceived):
            delivery = event.delivery
            logger.info(
                "received queue %s message %s key %r delivery %d: %s",
                delivery.queue,
                delivery.message_id,
                delivery.routing_key,
                delivery.delivery_count,
                self._cut(event.body),
            )
        elif isinstance(event, MessageConsumed):
            logger.info(
                "consumed queue %s message %s in %.3fs: %s",
                event.delivery.queue,
                event.delivery.message_id,
                event.duration,
                self._result(event.result),
            )
        elif isinstance(event, MessageConsumptionFailed):
            logger.warning(
                "failed queue %s message %s attempt %d (%s, %s): %s",
                event.delivery.queue,
                event.delivery.message_id,
                event.attempt,
                event.reason,
                event.outcome or _planned(event),
                event.error,
            )

    def _result(self, result: Any) -> str:
        if isinstance(result, CommandResult):
            return f"exit {result.exit_code}, stdout {self._cut(result.stdout.strip())}"
        return self._cut(result)

    def _cut(self, value: Any) -> str:
        text = repr(value) if not isinstance(value, str) else value
        return text if len(text) <= self.preview else text[: self.preview] + "..."


class Stopwatch:
    """Logs the throughput every ``every`` messages: "1000 messages in 12.3 s (81.3 msg/s)"."""

    events: ClassVar[tuple[str, ...]] = ("message_consumed", "message_consumption_failed")

    def __init__(self, every: int = 100) -> None:
        self.every = check_whole_number(every, "every", minimum=1)
        self.count = 0
        self._since = time.monotonic()

    def __call__(self, event: Event) -> None:
        """Count the message; every ``every`` of them, log the rate and start again."""
        self.count += 1
        if self.count % self.every == 0:
            now = time.monotonic()
            elapsed = now - self._since
            logging.getLogger("kq.stopwatch").info(
                "%d messages in %.1f s (%.1f msg/s)",
                self.every,
                elapsed,
                self.every / elapsed if elapsed else 0.0,
            )
            self._since = now


class Accumulator:
    """Keeps the events it receives, for tests: ``results`` holds the results of consumed messages."""

    events: ClassVar[tuple[str, ...]] = ("message_consumed", "message_consumption_failed")

    def __init__(self) -> None:
        self.received: list[Event] = []

    def __call__(self, event: Event) -> None:
        """Keep the event."""
        self.received.append(event)

    @property
    def results(self) -> list[Any]:
        """The results of the consumed messages, in order."""
        return [e.result for e in self.received if isinstance(e, MessageConsumed)]

    @property
    def failures(self) -> list[MessageConsumptionFailed]:
        """The failure events, in order."""
        return [e for e in self.received if isinstance(e, MessageConsumptionFailed)]

    def result(self, index: int = -1) -> Any:
        """One result (the last by default); IndexError when there is none at ``index``."""
        return self.results[index]

    def reset(self) -> None:
        """Forget everything."""
        self.received.clear()


class RequeueFailedCommands:
    """Queues a failed console command again, up to ``max_attempts`` executions, ``delay`` seconds later.

    What the PHP library's RequeueFailedConsoleCommandsFilter sample meant, with the attempt limit it
    lacked: the copy carries ``kq-attempt``; after the last attempt the message goes to the dead-letter
    queue as usual. Messages that can never succeed (not allowed, malformed) are not retried.
    """

    events: ClassVar[tuple[str, ...]] = ("message_consumption_failed",)

    def __init__(self, max_attempts: int = 3, delay: float = 0.0) -> None:
        self.max_attempts = check_whole_number(max_attempts, "max_attempts", minimum=1)
        self.delay = check_number(delay, "delay")

    def __call__(self, event: Event) -> None:
        """Ask for a retry of a failed console command below the attempt limit."""
        if not isinstance(event, MessageConsumptionFailed) or event.reason not in RETRIED_REASONS:
            return
        if not isinstance(event.handler, ConsoleCommandHandler):
            return
        if event.attempt < self.max_attempts:
            event.retry(self.delay)


def _planned(event: MessageConsumptionFailed) -> str:
    """What kq will do once the listeners ran."""
    retrying = event.reason in RETRIED_REASONS and event.retry_delay is not None
    return "to be retried" if retrying else "to be dead-lettered"


__all__ = ["Accumulator", "Monitor", "RequeueFailedCommands", "Stopwatch"]
