"""ExampleProducer: writes each message to a file of the queue's ``ready/`` folder."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kq.core.driver import Message, Producer, PublishError
from kq.drivers.example._driver import ExampleDriver
from kq.drivers.example._store import QueueFolder

logger = logging.getLogger("kq.drivers.example")


class ExampleProducer(Producer):
    """Publishes to one queue folder, one complete file per message, in the batch's order."""

    driver: ExampleDriver

    def _send_batch(self, messages: Sequence[Message]) -> None:
        folder = QueueFolder(self.driver.folder, self.queue.name)
        for index, message in enumerate(messages):
            try:
                folder.write(message)
            except OSError as exc:
                if index == 0:
                    raise
                # The files before this one are queued: say which, so that re-drive acks only those.
                raise PublishError(
                    f"queue {self.queue.name}: wrote {index} of {len(messages)} messages, then: {exc}",
                    published=[m.message_id for m in messages[:index]],
                    failed=[m.message_id for m in messages[index:]],
                ) from exc
        logger.debug("queue %s: wrote %d message file(s)", self.queue.name, len(messages))
