"""The errors this driver raises, each a kq.core error, so callers and the CLI need to know no driver.

- :class:`QueueMissingError` (an :class:`~kq.core.UnknownQueueError`): the SQS queue does not exist and
  ``create_queues`` is off, or a configured ``queue_url`` names none.
- :class:`SqsRequestError` (a :class:`~kq.core.KqError`): SQS refused a request for a reason a retry
  cannot cure (permissions, a bad attribute, a purge within 60 s of the last); the message has SQS's
  code and words.
- A batch published only in part raises kq's own :class:`~kq.core.PublishError`, naming the message ids
  published and those not; a message too large for the queue :class:`~kq.core.MessageFormatError`
  before anything is sent; an unreachable endpoint :class:`~kq.core.BrokerUnavailableError`; a bad
  option :class:`~kq.core.ConfigError`.
"""

from __future__ import annotations

from kq.core.driver import KqError, MessageFormatError, PublishError, UnknownQueueError

__all__ = ["MessageFormatError", "PublishError", "QueueMissingError", "SqsRequestError"]


class QueueMissingError(UnknownQueueError):
    """The SQS queue of a logical queue does not exist, and the driver may not create it."""


class SqsRequestError(KqError):
    """SQS refused a request for a reason a retry cannot cure.

    Attributes:
        code: SQS's error code (``AWS.SimpleQueueService.PurgeQueueInProgress``, ``AccessDenied``, ...).
    """

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code
