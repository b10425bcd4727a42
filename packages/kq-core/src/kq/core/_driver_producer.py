"""The driver-level :class:`Producer`: sends messages to one logical queue, in batches."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kq.core._errors import ClosedError, UnsupportedOperationError
from kq.core._message import Message
from kq.core._spec import QueueSpec

if TYPE_CHECKING:
    from kq.core._driver import Driver


class Producer(abc.ABC):
    """Publishes messages to one logical queue. A single message is a batch of one."""

    def __init__(self, driver: Driver, queue: QueueSpec) -> None:
        self.driver = driver
        self.queue = queue
        self.closed = False

    def send(self, message: Message) -> None:
        """Send one message."""
        self.send_batch((message,))

    def send_batch(self, messages: Sequence[Message]) -> None:
        """Send ``messages``; confirms, transactions and batch calls are paid once per batch.

        A message id and a body are not unique per publication: retry copies, requeue copies and
        re-drives publish them again. A driver must never derive a broker de-duplication id from them
        (an SQS FIFO ``MessageDeduplicationId`` is fresh per publish call), or copies are dropped.

        Raises:
            UnsupportedOperationError: a message asks for a delay or a TTL the queue cannot honour.
            PublishError: the batch failed part-way; it says which messages were published.
        """
        if self.closed:
            raise ClosedError(f"the producer of queue '{self.queue.name}' is closed")
        if not messages:
            return
        caps = self.driver.capabilities_for(self.queue.name)
        for message in messages:
            if message.ttl is not None and not caps.message_ttl:
                raise UnsupportedOperationError(
                    f"driver '{self.driver.name}' cannot expire messages "
                    f"(message {message.message_id} has a TTL)"
                )
            problem = caps.delay_problem(message.delay, requeue=False)
            if problem:
                raise UnsupportedOperationError(
                    f"driver '{self.driver.name}' {problem} on queue '{self.queue.name}' "
                    f"(message {message.message_id} asks for {message.delay:g}s)"
                )
        self._send_batch(messages)

    def close(self) -> None:
        """Release the producer's resources."""
        if not self.closed:
            self.closed = True
            self._close()

    @abc.abstractmethod
    def _send_batch(self, messages: Sequence[Message]) -> None:
        """Send ``messages`` (validated, non-empty)."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
