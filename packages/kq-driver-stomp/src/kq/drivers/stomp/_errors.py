"""The errors this driver raises, each a kq.core error, so callers and the CLI need to know no driver.

- :class:`StompBrokerError` (a :class:`~kq.core.KqError`): the broker answered a frame with an ERROR
  frame for a reason a reconnection cannot cure (a refused header, an unknown destination); the message
  has the broker's words.
- A batch the broker did not confirm (an ERROR frame, or receipts missing after ``receipt_timeout``)
  raises kq's own :class:`~kq.core.PublishError`, naming the message ids confirmed and those not; a
  broker that cannot be reached, or a connection lost, :class:`~kq.core.BrokerUnavailableError`; a
  routing key the flavour cannot filter on :class:`~kq.core.UnsupportedOperationError`; a bad option
  :class:`~kq.core.ConfigError`.
"""

from __future__ import annotations

from kq.core.driver import (
    BrokerUnavailableError,
    KqError,
    MessageFormatError,
    PublishError,
    UnsupportedOperationError,
)

__all__ = [
    "BrokerUnavailableError",
    "MessageFormatError",
    "PublishError",
    "StompBrokerError",
    "UnsupportedOperationError",
]


class StompBrokerError(KqError):
    """The broker sent an ERROR frame for a request a retry cannot cure.

    Attributes:
        broker_message: The ERROR frame's ``message`` header (the broker's summary).
        details: The ERROR frame's body, as text.
    """

    def __init__(self, message: str, *, broker_message: str = "", details: str = "") -> None:
        super().__init__(message)
        self.broker_message = broker_message
        self.details = details
