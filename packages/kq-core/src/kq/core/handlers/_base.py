"""Handlers: what a queue's messages are handed to once received and decoded.

A handler declares the content types it accepts and implements :meth:`Handler.consume`; it returns a
result (for ``message_consumed``) or raises (for ``message_consumption_failed``). Raising
:class:`~kq.core.MessageFormatError` or :class:`~kq.core.NotAllowedError` means the message can never
succeed; anything else is an execution failure. :func:`build_handler` finds the handler a queue's
``consumer`` key names, through the ``kq.handlers`` entry points or a ``module:attr`` name.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from kq.core._config import Config
from kq.core._errors import ConfigError, UnknownPluginError
from kq.core._imports import import_object
from kq.core._message import JSON, Delivery
from kq.core._registry import HANDLER_GROUP, load_plugin
from kq.core._spec import QueueSpec
from kq.core.handlers._codecs import decode_body

logger = logging.getLogger(__name__.replace("._", "."))


class Handler(abc.ABC):
    """Base class of handlers: one subclass per execution type (console command, service, HTTP, ...)."""

    #: Media types this handler decodes; ``None`` accepts every type kq can decode.
    accepted_content_types: ClassVar[frozenset[str] | None] = frozenset({JSON})
    #: Name used in logs and ``kq managequeue list-configured``.
    kind: ClassVar[str] = ""
    #: The ``[allow]`` section this handler reads (``config.allow.allow_list(name)`` or ``allow_map``),
    #: ``None`` when it reads none: a near miss of it in ``kq.toml`` is then an error, not a silent denial.
    allow_section: ClassVar[str | None] = None
    #: Whether its queues accept only signed messages unless configured otherwise (``[signing]
    #: require``, a queue's ``require_signature``): true for handlers that execute what messages ask.
    requires_signature: ClassVar[bool] = False
    #: Seconds one :meth:`consume` call may run before the consume loop interrupts it and the message
    #: fails with reason ``timeout`` (:mod:`kq.core._time_limit`); ``None``: no limit of the handler's
    #: own (a queue's ``handler_timeout`` or ``kq consume --handler-timeout`` still sets one, and
    #: overrides this). In-process console commands take ``[console] timeout``, the subprocess mode's;
    #: handlers that bound their own work (a command's process, an HTTP request) need none.
    time_limit: float | None = None
    #: Deliveries a worker takes ahead of time for this handler when ``kq consume --prefetch`` (or
    #: ``App.consume_loop(prefetch=...)``) does not say: 1 where one message may take long (a console
    #: command, an HTTP call), so that a busy worker holds back nothing another could run; more for
    #: quick in-process calls, where a round trip to the broker per message would cost more than the
    #: work. A worker that stops or crashes hands the messages it held back to the broker.
    prefetch: ClassVar[int] = 1

    def decode(self, delivery: Delivery) -> Any:
        """Decode the delivery's body by its content type (raises MessageFormatError)."""
        return decode_body(delivery.body, delivery.content_type, self.accepted_content_types)

    @abc.abstractmethod
    def consume(self, body: Any, delivery: Delivery) -> Any:
        """Do what the message asks and return the result; raise on failure."""

    def describe(self, body: Any) -> str:
        """A short description of the work ``body`` asks for, for log lines."""
        return self.kind or type(self).__name__

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources when the consume loop ends."""

    @classmethod
    def from_context(cls, context: HandlerContext) -> Handler:
        """Build the handler for a queue; the default takes no arguments. Override to read the
        configuration (``context.config.allow``, ``context.config.console``, ...)."""
        return cls()


class NoopHandler(Handler):
    """Acknowledges every message without reading it (for tests and throughput measurements).

    The body is not decoded (decoding a body nobody reads was a tenth of a no-op worker's time), so
    listeners and results see the raw bytes, and a body that is not valid JSON is acknowledged too.
    """

    accepted_content_types = None
    kind = "noop"
    prefetch = 16

    def decode(self, delivery: Delivery) -> Any:
        """The raw body: a no-op has no use for its content."""
        return delivery.body

    def consume(self, body: Any, delivery: Delivery) -> Any:
        """Return ``body`` (the raw bytes) unchanged."""
        return body


class CallableHandler(Handler):
    """Adapts a plain function ``f(body, delivery) -> result`` named in the configuration."""

    accepted_content_types = None
    prefetch = 16  # a Python call, as Celery's and Dramatiq's tasks (which prefetch 4 and 16)

    def __init__(self, function: Callable[[Any, Delivery], Any], name: str) -> None:
        self.function = function
        self.kind = name  # type: ignore[misc]

    def consume(self, body: Any, delivery: Delivery) -> Any:
        """Call the function."""
        return self.function(body, delivery)


@dataclass(frozen=True)
class HandlerContext:
    """What :meth:`Handler.from_context` may use to build a handler for a queue."""

    config: Config
    queue: QueueSpec
    label: str | None = None


def build_handler(context: HandlerContext) -> Handler:
    """Build the handler configured for ``context.queue`` (its ``consumer`` key).

    A plain name (``console_command``, ``service``, ``http``, ``noop``, ...) is looked up in the
    ``kq.handlers`` entry points; ``module:attr`` names a :class:`Handler` subclass or a function
    ``f(body, delivery)``. A class is built with its ``from_context(context)`` classmethod when it has
    one, else without arguments.
    """
    name = context.queue.consumer
    key = f"queues.{context.queue.name}.consumer"
    if ":" in name:
        target = import_object(name, what="consumer", key=key, source=context.queue.source)
    else:
        try:
            target = load_plugin(HANDLER_GROUP, name)
        except UnknownPluginError as exc:
            raise ConfigError(str(exc), key=key, source=context.queue.source) from None
    if isinstance(target, type) and issubclass(target, Handler):
        return target.from_context(context)
    if callable(target):
        return CallableHandler(target, name)
    raise ConfigError(
        f"{name} is neither a Handler subclass nor a function", key=key, source=context.queue.source
    )
