"""Resolved settings of a driver instance and of a logical queue, as drivers receive them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kq.core._retry import RetryPolicy

#: Suffix of the default dead-letter queue of a queue (``demo`` -> ``demo.failed``).
DEAD_LETTER_SUFFIX = ".failed"


@dataclass(frozen=True)
class DriverSpec:
    """A ``[drivers.<name>]`` table: an instance of a driver type with its options."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None
    #: Directory that relative paths in the options are relative to (``None``: the working directory).
    root: str | None = None


@dataclass(frozen=True)
class QueueSpec:
    """A logical queue: what kq users name on the command line and in code.

    Attributes:
        name: The logical name (``kq consume <name>``).
        driver: Name of the driver instance that holds it.
        consumer: The message consumer that handles its messages (``console_command``, ``noop``,
            or ``module:attr``).
        routing_keys: Binding keys of consumers (AMQP topic patterns); empty means every message.
        options: Broker-specific settings, checked against the driver's ``queue_options``.
        dead_letter_queue: Where messages that cannot be processed go; given empty, ``<name>.failed``.
        require_signature: Accept only signed messages (``None``: as ``[signing] require`` says for
            the queue's consumer).
        retry: When failed messages are tried again (default: never).
        max_deliveries: A message delivered more often than this (its workers keep dying or losing it)
            is dead-lettered as poison instead of being handled again; 0 disables the check.
        handler_timeout: Seconds one call of its handler may run inside the worker before the consume
            loop interrupts it and the message fails with reason ``timeout`` (``None``: the handler's
            own limit, if any).
        configured: ``False`` for a queue that was not in the configuration and was created on demand.
        source: The configuration file that defined it.
    """

    name: str
    driver: str
    consumer: str = "console_command"
    routing_keys: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    dead_letter_queue: str = ""
    require_signature: bool | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_deliveries: int = 10
    handler_timeout: float | None = None
    configured: bool = True
    source: str | None = None

    def __post_init__(self) -> None:
        if not self.dead_letter_queue:
            object.__setattr__(self, "dead_letter_queue", f"{self.name}{DEAD_LETTER_SUFFIX}")
