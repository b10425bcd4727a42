"""``kq managequeue`` on SQS: list (by prefix, paginated), info, purge (once per 60 s), delete, create
and setup (standard and FIFO queues, with attributes)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from kq.core.driver import QueueManager
from kq.drivers.sqs._driver import MISSING_QUEUE, REQUEST_ERRORS, error_code
from kq.drivers.sqs._errors import QueueMissingError, SqsRequestError

if TYPE_CHECKING:
    from kq.drivers.sqs._driver import SqsDriver

logger = logging.getLogger(__name__.replace("._", "."))

#: info's names for SQS's counters.
COUNTERS = {
    "ApproximateNumberOfMessages": "messages",
    "ApproximateNumberOfMessagesNotVisible": "in_flight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}


class SqsQueueManager(QueueManager):
    """Administers the logical queues of one SQS driver instance."""

    driver: SqsDriver
    queue_actions: ClassVar[frozenset[str]] = frozenset({"info", "purge", "delete", "create"})

    def list_available(self) -> list[str]:
        """The logical names of the SQS queues whose names start with ``queue_prefix`` (every page)."""
        prefix = self.driver.options["queue_prefix"]
        arguments: dict[str, Any] = {"MaxResults": 1000}
        if prefix:
            arguments["QueueNamePrefix"] = prefix
        names: list[str] = []
        client = self.driver.client()
        while True:
            try:
                page = client.list_queues(**arguments)
            except REQUEST_ERRORS as exc:
                raise self.driver.request_error(exc, "listing queues") from exc
            for url in page.get("QueueUrls", []):
                name = self.driver.logical_name(str(url).rstrip("/").rsplit("/", 1)[-1])
                if name:
                    names.append(name)
            token = page.get("NextToken")
            if not token:
                return sorted(names)
            arguments["NextToken"] = token

    def info(self, queue: str) -> dict[str, Any]:
        """Visible (``messages``), ``in_flight`` and ``delayed`` messages, and the queue's attributes."""
        result: dict[str, Any] = {"queue": queue, "sqs_name": self.driver.sqs_name(queue)}
        try:
            url = self.driver.queue_url(queue, create=False)
            attributes = self.driver.client().get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
                "Attributes"
            ]
        except QueueMissingError:
            return {**result, "exists": False, "messages": 0, "in_flight": 0, "delayed": 0}
        except REQUEST_ERRORS as exc:
            if _missing(exc):
                self.driver.forget(queue)
                return {**result, "exists": False, "messages": 0, "in_flight": 0, "delayed": 0}
            raise self.driver.request_error(exc, f"reading the attributes of queue {queue}") from exc
        counters = {name: int(attributes.pop(key, 0)) for key, name in COUNTERS.items()}
        return {**result, "exists": True, "url": url, **counters, "attributes": attributes}

    def purge(self, queue: str) -> None:
        """Delete every message, in flight ones included. SQS allows one purge per queue every 60 s and
        may take up to 60 s to finish; it does not say how many messages went."""
        url = self.driver.queue_url(queue, create=False)
        try:
            self.driver.client().purge_queue(QueueUrl=url)
        except REQUEST_ERRORS as exc:
            if "PurgeQueueInProgress" in error_code(exc):
                raise SqsRequestError(
                    f"queue {queue} was purged less than 60 seconds ago; SQS allows one purge per 60 s: "
                    "try again in a minute",
                    code=error_code(exc),
                ) from exc
            raise self.driver.request_error(exc, f"purging queue {queue}") from exc
        logger.info("queue %s: purged (SQS may take up to 60 s to finish)", queue)

    def delete(self, queue: str) -> bool:
        """Delete the queue and its messages (SQS blocks its name for 60 s afterwards); ``False`` when
        SQS has no such queue."""
        try:
            url = self.driver.queue_url(queue, create=False)
            self.driver.client().delete_queue(QueueUrl=url)
        except QueueMissingError:
            logger.info("queue %s: SQS has no such queue; nothing to delete", queue)
            return False
        except REQUEST_ERRORS as exc:
            if not _missing(exc):
                raise self.driver.request_error(exc, f"deleting queue {queue}") from exc
            logger.info("queue %s: SQS has no such queue; nothing to delete", queue)
            return False
        finally:
            self.driver.forget(queue)
        logger.info("queue %s: deleted its SQS queue", queue)
        return True

    def create(
        self,
        queue: str,
        visibility_timeout: str | None = None,
        retention: str | None = None,
        dead_letter_queue: str | None = None,
        max_receives: str | None = None,
    ) -> dict[str, Any]:
        """Create the SQS queue of ``queue`` (FIFO where configured) with the configured ``attributes``
        and these: ``visibility_timeout`` and ``retention`` in seconds, and a redrive policy sending a
        message to logical queue ``dead_letter_queue`` after ``max_receives`` receives (default 10)."""
        attributes: dict[str, str] = {}
        if visibility_timeout is not None:
            attributes["VisibilityTimeout"] = str(int(visibility_timeout))
        if retention is not None:
            attributes["MessageRetentionPeriod"] = str(int(retention))
        if dead_letter_queue:
            target = self.driver.queue_url(dead_letter_queue)
            try:
                arn = self.driver.client().get_queue_attributes(QueueUrl=target, AttributeNames=["QueueArn"])[
                    "Attributes"
                ]["QueueArn"]
            except REQUEST_ERRORS as exc:
                raise self.driver.request_error(exc, f"reading the ARN of {dead_letter_queue}") from exc
            receives = int(max_receives or 10)
            attributes["RedrivePolicy"] = f'{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{receives}"}}'
        url = self.driver.create_queue(queue, attributes)
        return {"queue": queue, "sqs_name": self.driver.sqs_name(queue), "url": url, "attributes": attributes}

    def setup(self, queue: str | None = None) -> list[dict[str, Any]]:
        """Create the SQS queue of ``queue``, or of every configured queue, with its ``attributes``."""
        names = [queue] if queue else sorted(self.driver.configured_queues)
        return [
            {"queue": name, "sqs_name": self.driver.sqs_name(name), "url": self.driver.create_queue(name)}
            for name in names
        ]


def _missing(exc: BaseException) -> bool:
    return error_code(exc) in MISSING_QUEUE
