"""Events and their dispatcher.

Six events, as in the PHP library: ``message_sent``, ``message_received`` (a listener may veto),
``message_consumed``, ``message_consumption_failed``, ``process_started`` and ``process_stopped``.
Listeners run by descending priority (registration order among equals), may be bound to one logical
queue, and a listener that raises is logged and skipped without affecting the others or the consume loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from kq.core._message import Delivery, Message
from kq.core._numbers import check_number

if TYPE_CHECKING:
    from kq.core.handlers._base import Handler

logger = logging.getLogger(__name__.replace("._", "."))


@dataclass
class Event:
    """Base class of kq events."""

    name: ClassVar[str] = ""

    @property
    def queue(self) -> str | None:
        """The logical queue the event is about, when there is one."""
        return None


@dataclass
class MessageSent(Event):
    """A producer published ``messages`` (one event per batch) to ``queue_name``."""

    name: ClassVar[str] = "message_sent"
    queue_name: str
    messages: Sequence[Message]

    @property
    def queue(self) -> str | None:
        return self.queue_name


@dataclass
class MessageReceived(Event):
    """A message was received and decoded; call :meth:`veto` to skip it (it is acknowledged)."""

    name: ClassVar[str] = "message_received"
    delivery: Delivery
    body: Any
    handler: Handler | None
    vetoed_by: str | None = None

    @property
    def queue(self) -> str | None:
        return self.delivery.queue

    def veto(self, reason: str) -> None:
        """Skip this message: it is acknowledged without being consumed, and ``reason`` is logged."""
        self.vetoed_by = reason or "vetoed by a message_received listener"


@dataclass
class MessageConsumed(Event):
    """A handler handled a message successfully; ``result`` is what it returned."""

    name: ClassVar[str] = "message_consumed"
    delivery: Delivery
    body: Any
    handler: Handler | None
    result: Any
    duration: float = 0.0

    @property
    def queue(self) -> str | None:
        return self.delivery.queue


@dataclass
class MessageConsumptionFailed(Event):
    """Decoding or consuming a message failed; ``body`` is ``None`` when it could not be decoded.

    Listeners run before kq acts. By default the message goes to the dead-letter queue, unless the
    queue's retry policy plans a retry (``retry_delay`` is then already set); a listener may call
    :meth:`retry` for an execution failure (``reason == "failed"``), replacing the planned delay: a copy
    goes back on the queue with ``kq-attempt`` increased. Messages that can never succeed are
    dead-lettered regardless.

    Attributes:
        reason: ``"failed"`` (the work ran and failed), ``"malformed"`` (the driver could not read
            it), ``"undecodable"``, ``"invalid"`` (malformed for its handler), ``"not-allowed"``,
            ``"poison"`` (delivered more than ``max_deliveries`` times), or a signature problem
            (``"unsigned"``, ``"unknown-key"``, ``"bad-signature"``, ``"not-yet-valid"``,
            ``"expired"``, ``"replayed"``).
        attempt: Which execution attempt this was (``kq-attempt`` header, 1 for the first).
        outcome: What kq did, set after the listeners ran: ``"dead-lettered"``, ``"retried"``,
            ``"requeued"`` (the dead-letter publish failed, to be tried again in seconds) or ``"parked"``
            (the dead-letter queue refuses it for good: back on its queue for an hour).
        retry_delay: The retry kq will attempt, in seconds (``None``: none planned).
    """

    name: ClassVar[str] = "message_consumption_failed"
    delivery: Delivery
    body: Any
    handler: Handler | None
    error: BaseException
    reason: str = "failed"
    attempt: int = 1
    outcome: str = ""
    duration: float = 0.0
    retry_delay: float | None = None

    @property
    def queue(self) -> str | None:
        return self.delivery.queue

    def retry(self, delay: float = 0.0) -> None:
        """Ask kq to queue the message again (after ``delay`` seconds) instead of dead-lettering it."""
        self.retry_delay = check_number(delay, "delay")


@dataclass
class ProcessStarted(Event):
    """The watchdog started a worker process."""

    name: ClassVar[str] = "process_started"
    pid: int
    command: Sequence[str]
    worker: str = ""


@dataclass
class ProcessStopped(Event):
    """The watchdog stopped a worker process."""

    name: ClassVar[str] = "process_stopped"
    pid: int
    command: Sequence[str] = ()
    worker: str = ""


#: Event classes by name.
EVENTS: dict[str, type[Event]] = {
    cls.name: cls
    for cls in (
        MessageSent,
        MessageReceived,
        MessageConsumed,
        MessageConsumptionFailed,
        ProcessStarted,
        ProcessStopped,
    )
}

Listener = Callable[[Any], object]
E = TypeVar("E", bound=Event)


@dataclass(order=True)
class _Registration:
    sort_key: tuple[int, int]
    listener: Listener = field(compare=False)
    queue: str | None = field(compare=False)
    observer: bool = field(compare=False, default=False)


class EventDispatcher:
    """Calls listeners for events, by priority, optionally only for one queue."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[_Registration]] = {}
        self._counter = 0

    def add_listener(
        self,
        event: str,
        listener: Listener,
        *,
        priority: int = 0,
        queue: str | None = None,
        observer: bool = False,
    ) -> None:
        """Register ``listener`` for ``event``.

        Args:
            event: One of the event names (``message_received``, ...).
            listener: Called with the event object.
            priority: Higher runs first.
            queue: Only call it for events about this logical queue.
            observer: Still call it after a ``message_received`` veto (for metrics and audit logs,
                which must see every message; an observer should not veto).
        """
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; known: {', '.join(EVENTS)}")
        self._counter += 1
        registrations = self._listeners.setdefault(event, [])
        registrations.append(_Registration((-priority, self._counter), listener, queue, observer))
        registrations.sort()

    def remove_listener(self, event: str, listener: Listener) -> None:
        """Unregister ``listener`` from ``event`` (every registration of it)."""
        registrations = self._listeners.get(event, [])
        registrations[:] = [r for r in registrations if r.listener != listener]

    def has_listeners(self, event: str) -> bool:
        """Whether anything listens to ``event`` (lets hot paths skip building the event)."""
        return bool(self._listeners.get(event))

    def dispatch(self, event: E) -> E:
        """Call the listeners of ``event`` and return it. After a ``message_received`` veto, only observers
        are called."""
        registrations = self._listeners.get(event.name)
        if not registrations:
            return event
        queue = event.queue
        vetoed = False
        for registration in tuple(registrations):
            if registration.queue is not None and registration.queue != queue:
                continue
            if vetoed and not registration.observer:
                continue
            try:
                registration.listener(event)
            except Exception as exc:
                # One line a failure; the traceback only where the operator asked for details.
                logger.error(
                    "listener %s for %s failed on queue %s (%s: %s); the other listeners still run",
                    describe_callable(registration.listener),
                    event.name,
                    queue,
                    type(exc).__name__,
                    exc,
                    exc_info=logger.isEnabledFor(logging.DEBUG),
                )
            vetoed = isinstance(event, MessageReceived) and event.vetoed_by is not None
        return event


def describe_callable(function: object) -> str:
    """``module:qualname`` of a listener or check, for log lines."""
    module = getattr(function, "__module__", None) or ""
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}:{name}" if module else name
