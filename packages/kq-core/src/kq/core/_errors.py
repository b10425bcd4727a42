"""The exceptions kq raises.

Every error a user can cause (bad configuration, unknown driver or queue, malformed message) is a
:class:`KqError`, whose message says what was wrong and where; the CLI prints it without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kq.core._message import Delivery


class KqError(Exception):
    """Base class of every error kq raises on purpose."""


class ConfigError(KqError):
    """The configuration is invalid: the message names the key and the file."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        self.key = key
        self.source = source
        where = []
        if key:
            where.append(f"key '{key}'")
        if source:
            where.append(f"in {source}")
        super().__init__(f"{message} ({' '.join(where)})" if where else message)


class UnknownPluginError(KqError):
    """No driver (type or configured instance) has the requested name."""

    def __init__(self, name: str, known: Iterable[str], *, what: str = "driver") -> None:
        self.name = name
        self.known = sorted(known)
        listing = ", ".join(self.known) if self.known else "none"
        super().__init__(f"unknown {what} '{name}'; available: {listing}")


class BrokerUnavailableError(KqError, ConnectionError):
    """The broker cannot be reached, or refused the connection (credentials, virtual host).

    Drivers raise it with the broker's address (never its credentials) and the cause. It is a
    :class:`ConnectionError`, so consume loops treat it as a lost connection: they log it and retry.
    """


class PluginLoadError(KqError):
    """A plugin (driver, handler, listener, command) is registered but its module or client library
    cannot be imported."""


class MissingExtraError(KqError):
    """An optional feature needs a package that is not installed; the message names the extra to install."""


class UnknownQueueError(KqError):
    """A queue name is not configured and the driver does not create queues on demand."""


class UnsupportedOperationError(KqError):
    """The driver or queue manager does not support the requested action."""


class MessageFormatError(KqError):
    """A message body or header does not have the expected shape; it can never succeed as is."""


class NotAllowedError(KqError):
    """The message asks for something outside the allow-list; it was not executed."""


class ExecutionFailedError(KqError):
    """The work a message asked for ran and failed (for example a non-zero exit code)."""

    def __init__(self, message: str, result: object = None) -> None:
        self.result = result
        super().__init__(message)


class HandlerTimeoutError(ExecutionFailedError):
    """The work a message asked for ran past its time limit and was stopped (a command's process group
    killed, an in-process call interrupted): the failure reason is ``timeout``."""


class DeliveryStateError(KqError):
    """A delivery was settled twice, or settled through a consumer that does not own it."""


class LeaseLostError(DeliveryStateError):
    """A delivery's lease had lapsed before it was settled or extended: another consumer may hold the
    message now, and the driver left that copy alone.

    Attributes:
        deliveries: The deliveries whose leases were lost (for the batch calls; may be empty).
    """

    def __init__(self, message: str, deliveries: Sequence[Delivery] = ()) -> None:
        super().__init__(message)
        self.deliveries = list(deliveries)


class PublishError(KqError):
    """A batch was published only in part.

    Attributes:
        published: Ids of the messages the broker accepted (in the order given).
        failed: Ids of the messages that were not published.
    """

    def __init__(self, message: str, *, published: Sequence[str], failed: Sequence[str]) -> None:
        super().__init__(message)
        self.published = list(published)
        self.failed = list(failed)


class ClosedError(KqError):
    """A driver, producer or consumer was used after its ``close()``."""


class SignatureError(KqError):
    """A message's signature is missing, wrong, expired or replayed; ``reason`` says which."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class WatchdogError(KqError):
    """A watchdog command could not do its job.

    For example: another watchdog holds the lock, the configuration is not a file, or kq-cli (whose
    ``kq consume`` every worker runs) is not installed.
    """
