"""The SQS driver class: options, capabilities per queue, the boto3 clients and queue URLs.

Capabilities depend on the queue (:meth:`SqsDriver.capabilities_for`): a standard queue delays
published messages up to 900 s (``DelaySeconds``); a FIFO queue cannot delay a single message, so its
``max_publish_delay`` is 0 (a delayed retry is done at once). Both requeue with a delay up to 12 h
(the visibility timeout), count receives (``ApproximateReceiveCount``), and emulate routing keys on
the producer side.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable
from typing import Any, ClassVar

import boto3
import botocore.config
import botocore.exceptions

from kq.core.driver import (
    STANDARD_ACTIONS,
    BrokerUnavailableError,
    Capabilities,
    ConfigError,
    Consumer,
    Driver,
    DriverSpec,
    Option,
    Producer,
    QueueManager,
    QueueSpec,
)
from kq.drivers.sqs._errors import QueueMissingError, SqsRequestError
from kq.drivers.sqs._names import is_fifo_name, logical_name, sqs_queue_name

logger = logging.getLogger(__name__.replace("._", "."))

#: Longest ``DelaySeconds`` of a published message.
MAX_PUBLISH_DELAY = 900.0
#: Longest visibility timeout, hence longest delay of a requeue.
MAX_VISIBILITY = 43_200
#: Longest long poll SQS allows.
MAX_WAIT = 20
#: Errors meaning the endpoint could not be reached or the connection broke.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.HTTPClientError,
)
#: What a request can raise: what SQS answered, or that it could not be reached (``request_error`` turns
#: either into kq's error).
REQUEST_ERRORS: tuple[type[BaseException], ...] = (botocore.exceptions.ClientError, *CONNECTION_ERRORS)
#: Error codes meaning the queue does not exist.
MISSING_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


#: The session of :func:`_shared_session`, made on first use.
_SESSIONS: dict[str, boto3.session.Session] = {}
_SESSION_LOCK = threading.Lock()


def _shared_session() -> boto3.session.Session:
    """The boto3 session every SQS client of this process is made from (the caller holds the lock).

    A client made from a new session loads SQS's service model and AWS's endpoint rules again: 50 to
    80 ms each, and a worker makes three (lookups, long polls, settling). From one session the second
    and later clients cost 2 to 3 ms. Credentials and region stay each driver's own: they are given to
    each client, and only what a driver leaves unset comes from boto3's chain (environment, profile,
    instance role), resolved once per process as ``boto3.client`` does.
    """
    session = _SESSIONS.get("shared")
    if session is None:
        session = _SESSIONS["shared"] = boto3.session.Session()
    return session


class SqsDriver(Driver):
    """Amazon SQS (or LocalStack, moto) through boto3."""

    #: A standard queue; :meth:`capabilities_for` has a FIFO queue's.
    capabilities: ClassVar[Capabilities] = Capabilities(
        routing_keys="emulated",
        consumer_routing="none",
        delayed_delivery=True,
        max_publish_delay=MAX_PUBLISH_DELAY,
        max_requeue_delay=float(MAX_VISIBILITY),
        delivery_count="receives",
        batch_send=True,
        batch_receive=True,
        message_ttl=True,
        lease_extension=True,
        queue_actions=(*STANDARD_ACTIONS, "create", "setup"),
    )
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = CONNECTION_ERRORS
    driver_options: ClassVar[dict[str, Option]] = {
        "region": Option(None, str, "AWS region (default: boto3's configuration, AWS_DEFAULT_REGION)."),
        "endpoint_url": Option(None, str, "SQS endpoint, e.g. http://127.0.0.1:4566 for LocalStack."),
        "access_key_id": Option(None, str, "Access key id (default: boto3's credential chain)."),
        "secret_access_key": Option(None, str, "Secret access key (default: boto3's credential chain)."),
        "session_token": Option(None, str, "Session token of temporary credentials."),
        "queue_prefix": Option("", str, "Prefix of every SQS queue name (e.g. 'prod-')."),
        "create_queues": Option(True, bool, "Create a missing queue on first use."),
        "visibility_timeout": Option(
            30,
            int,
            "Seconds a received message stays invisible to others.",
            positive=True,
            maximum=MAX_VISIBILITY,
            duration=True,
        ),
        "wait_time": Option(
            MAX_WAIT,
            int,
            "Longest long poll, in seconds (0: short polls).",
            minimum=0,
            maximum=MAX_WAIT,
            duration=True,
        ),
        "connect_timeout": Option(
            5.0, float, "Seconds to wait for a connection.", positive=True, duration=True
        ),
        "request_timeout": Option(
            10.0,
            float,
            "Seconds to wait for an answer (a long poll waits wait_time more).",
            positive=True,
            duration=True,
        ),
        "max_attempts": Option(3, int, "Attempts of a request (boto3 retries).", positive=True, maximum=10),
    }
    queue_options: ClassVar[dict[str, Option]] = {
        "fifo": Option(False, bool, "A FIFO queue (its SQS name ends in .fifo)."),
        "group_id": Option(None, str, "FIFO MessageGroupId of messages without a kq-group header."),
        "attributes": Option({}, dict, "SQS attributes of a queue kq creates (VisibilityTimeout, ...)."),
        "queue_url": Option(None, str, "The queue's URL; kq then neither looks it up nor creates it."),
        "sqs_name": Option(None, str, "The queue's SQS name (default: mapped from the logical name)."),
    }
    client_loggers = ("boto3", "botocore", "urllib3")
    dynamic_queues = True
    description = "Amazon SQS through boto3: long polling, batches, visibility leases, FIFO queues."

    def __init__(self, spec: DriverSpec, queues: Iterable[QueueSpec] = ()) -> None:
        super().__init__(spec, queues)
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._urls: dict[str, str] = {}
        self._owners: dict[str, str] = {}
        self._capabilities: dict[str, Capabilities] = {}
        for queue in list(self.configured_queues.values()):
            # Known now, so that list-available names them and a clash is an error at once.
            self.sqs_name(queue.name)
            self.sqs_name(queue.dead_letter_queue)

    # -- capabilities ------------------------------------------------------------------------------

    def capabilities_for(self, queue: str | None = None) -> Capabilities:
        """What this instance can do for ``queue`` (FIFO or standard), cached per queue."""
        if queue is None:
            return self.capabilities
        capabilities = self._capabilities.get(queue)
        if capabilities is None:
            capabilities = self.capabilities
            if self.is_fifo(queue):
                # No per-message delay on FIFO queues; a retry stays at the head of its group.
                capabilities = dataclasses.replace(capabilities, max_publish_delay=0.0, retry_in_place=True)
            self._capabilities[queue] = capabilities
        return capabilities

    def is_fifo(self, queue: str) -> bool:
        """Whether logical queue ``queue`` is a FIFO queue (option ``fifo``, or a ``.fifo`` name)."""
        spec = self.queue(queue)
        url = spec.options["queue_url"] or ""
        return bool(spec.options["fifo"]) or is_fifo_name(queue) or url.endswith(".fifo")

    # -- names and URLs ----------------------------------------------------------------------------

    def sqs_name(self, queue: str) -> str:
        """The SQS name of logical queue ``queue``.

        Raises:
            ConfigError: another logical queue maps to the same SQS queue.
        """
        spec = self.queue(queue)
        name = spec.options["sqs_name"] or sqs_queue_name(
            queue, prefix=self.options["queue_prefix"], fifo=self.is_fifo(queue)
        )
        with self._lock:
            owner = self._owners.setdefault(name, queue)
        if owner != queue:
            raise ConfigError(
                f"queues '{owner}' and '{queue}' would both be the SQS queue '{name}': set sqs_name on one",
                key=f"queues.{queue}.sqs_name",
                source=spec.source,
            )
        return name

    def logical_name(self, sqs_name: str) -> str | None:
        """The logical queue of SQS queue ``sqs_name``: a queue this driver knows by that SQS name, else
        the SQS name without ``queue_prefix`` (which maps back to it); ``None`` without the prefix."""
        with self._lock:
            known = self._owners.get(sqs_name)
        return known or logical_name(sqs_name, prefix=self.options["queue_prefix"])

    def queue_url(self, queue: str, *, create: bool | None = None) -> str:
        """The URL of logical queue ``queue``, looked up once (and created where configured).

        Raises:
            QueueMissingError: the queue does not exist and may not be created.
        """
        url = self._urls.get(queue)
        if url is not None:
            return url
        spec = self.queue(queue)
        url = spec.options["queue_url"]
        if not url:
            url = self._lookup(queue, self.options["create_queues"] if create is None else create)
        self._urls[queue] = url
        return str(url)

    def forget(self, queue: str) -> None:
        """Forget the cached URL of ``queue`` (after deleting it)."""
        self._urls.pop(queue, None)

    def _lookup(self, queue: str, create: bool) -> str:
        name = self.sqs_name(queue)
        try:
            return str(self.client().get_queue_url(QueueName=name)["QueueUrl"])
        except REQUEST_ERRORS as exc:
            if error_code(exc) not in MISSING_QUEUE:
                raise self.request_error(exc, f"looking up queue {queue} ({name})") from exc
        if not create:
            raise QueueMissingError(
                f"SQS queue '{name}' of queue '{queue}' does not exist (driver {self.name}, "
                "create_queues off)"
            )
        return self.create_queue(queue)

    def create_queue(self, queue: str, attributes: dict[str, str] | None = None) -> str:
        """Create the SQS queue of ``queue`` (idempotent with the same attributes); return its URL."""
        name = self.sqs_name(queue)
        wanted = {str(k): str(v) for k, v in self.queue(queue).options["attributes"].items()}
        wanted.update(attributes or {})
        if self.is_fifo(queue):
            wanted["FifoQueue"] = "true"
        try:
            url = str(self.client().create_queue(QueueName=name, Attributes=wanted)["QueueUrl"])
        except REQUEST_ERRORS as exc:
            raise self.request_error(exc, f"creating queue {queue} ({name})") from exc
        logger.info("queue %s: created SQS queue %s (%s)", queue, name, url)
        self._urls[queue] = url
        return url

    # -- clients -----------------------------------------------------------------------------------

    def client(self, purpose: str = "default") -> Any:
        """A boto3 SQS client (thread-safe, shared): ``"poll"`` for long polls, ``"lease"`` for the
        calls made while a message is leased (short timeouts, two attempts), ``"default"`` otherwise."""
        with self._lock:
            client = self._clients.get(purpose)
            if client is None:
                client = self._clients[purpose] = self._new_client(purpose)
        return client

    def _new_client(self, purpose: str) -> Any:
        options = self.options
        read = options["request_timeout"] + (options["wait_time"] if purpose == "poll" else 0)
        attempts = min(2, options["max_attempts"]) if purpose == "lease" else options["max_attempts"]
        config = botocore.config.Config(
            connect_timeout=options["connect_timeout"],
            read_timeout=read,
            retries={"max_attempts": attempts, "mode": "standard"},
        )
        try:
            with _SESSION_LOCK:  # a botocore session does not promise thread-safe client creation
                return _shared_session().client(
                    "sqs",
                    region_name=options["region"],
                    endpoint_url=options["endpoint_url"],
                    aws_access_key_id=options["access_key_id"],
                    aws_secret_access_key=options["secret_access_key"],
                    aws_session_token=options["session_token"],
                    config=config,
                )
        except botocore.exceptions.NoRegionError:
            raise ConfigError(
                "no AWS region: set region, or AWS_DEFAULT_REGION",
                key=f"drivers.{self.name}.region",
                source=self.source,
            ) from None

    def describe(self) -> str:
        """The endpoint, for messages (no credentials)."""
        return self.options["endpoint_url"] or f"SQS in {self.options['region'] or 'the default region'}"

    def request_error(self, exc: BaseException, what: str) -> Exception:
        """The kq error for a failed request: unreachable endpoint, or what SQS said."""
        if isinstance(exc, (*CONNECTION_ERRORS, botocore.exceptions.NoCredentialsError)):
            return BrokerUnavailableError(
                f"cannot reach {self.describe()} (driver {self.name}) {what}: {exc}"
            )
        code = error_code(exc)
        return SqsRequestError(f"SQS refused {what}: {code}: {error_message(exc)}", code=code)

    def _close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            try:
                client.close()
            except Exception:  # a client that fails to close is garbage anyway
                logger.debug("driver %s: closing a boto3 client failed", self.name, exc_info=True)

    # -- parts -------------------------------------------------------------------------------------

    def _create_producer(self, queue: QueueSpec) -> Producer:
        from kq.drivers.sqs._producer import SqsProducer

        return SqsProducer(self, queue)

    def _create_consumer(self, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int) -> Consumer:
        from kq.drivers.sqs._consumer import SqsConsumer

        return SqsConsumer(self, queue, routing_keys, prefetch)

    def _create_queue_manager(self) -> QueueManager:
        from kq.drivers.sqs._queue_manager import SqsQueueManager

        return SqsQueueManager(self)


def error_code(exc: BaseException) -> str:
    """SQS's error code of a botocore ``ClientError`` (empty for other errors)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def error_message(exc: BaseException) -> str:
    """SQS's error message of a botocore ``ClientError`` (``str(exc)`` for other errors)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", "")) or str(exc)
