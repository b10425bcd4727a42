"""The STOMP driver class: options, capabilities per flavour, destinations and connections.

Capabilities depend on the broker (option ``flavour``) and on its configuration (``scheduler``):

- ActiveMQ Classic: routing keys emulated on the producer side, and a consumer's own key filtered by a
  selector on the ``kq_routing_key`` property (the other messages stay for other consumers); delays
  through ``AMQ_SCHEDULED_DELAY`` only when the broker runs its scheduler (``scheduler = true``;
  otherwise ActiveMQ delivers at once, so delays are refused); TTL; a delivery count that is a flag;
  queue actions without ``delete`` (STOMP cannot delete a queue).
- RabbitMQ's STOMP plugin: routing keys emulated on the producer side, a consumer's own key refused;
  no delays; TTL; a flag count (``x-delivery-count`` on quorum queues); every standard queue action
  through the management API.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable
from typing import Any, ClassVar

import stomp  # type: ignore[import-untyped,unused-ignore]
import stomp.exception  # type: ignore[import-untyped,unused-ignore]
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
from kq.drivers.stomp._connection import SESSION_LISTENER, Session, Settings, parse_hosts
from kq.drivers.stomp._wire import ACTIVEMQ, FLAVOURS, RABBITMQ

logger = logging.getLogger(__name__.replace("._", "."))

#: ActiveMQ Classic: selectors filter a consumer's own key; no delete over STOMP.
ACTIVEMQ_CAPABILITIES = Capabilities(
    routing_keys="emulated",
    consumer_routing="filter",
    delayed_delivery=False,
    max_publish_delay=None,
    max_requeue_delay=None,
    delivery_count="flag",
    batch_send=True,
    batch_receive=False,
    message_ttl=True,
    lease_extension=False,
    queue_actions=("list-configured", "list-available", "info", "purge"),
)
#: RabbitMQ's STOMP plugin: the management API manages queues.
RABBITMQ_CAPABILITIES = Capabilities(
    routing_keys="emulated",
    consumer_routing="none",
    delayed_delivery=False,
    delivery_count="flag",
    batch_send=True,
    batch_receive=False,
    message_ttl=True,
    lease_extension=False,
    queue_actions=STANDARD_ACTIONS,
)
#: Errors meaning "the connection is gone" (BrokerUnavailableError is always one).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    BrokerUnavailableError,
    stomp.exception.ConnectFailedException,
    stomp.exception.NotConnectedException,
    stomp.exception.ConnectionClosedException,
    ConnectionError,
)
#: Default STOMP port, and RabbitMQ's management port.
DEFAULT_HOST = "127.0.0.1:61613"
MANAGEMENT_PORT = 15672


class StompDriver(Driver):
    """ActiveMQ Classic or RabbitMQ's STOMP plugin, through stomp.py (STOMP 1.2)."""

    #: ActiveMQ's, the default flavour; :meth:`capabilities_for` has the instance's.
    capabilities: ClassVar[Capabilities] = ACTIVEMQ_CAPABILITIES
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = CONNECTION_ERRORS
    driver_options: ClassVar[dict[str, Option]] = {
        "flavour": Option(ACTIVEMQ, str, "The broker: 'activemq' (Classic) or 'rabbitmq' (STOMP plugin)."),
        "hosts": Option(
            [DEFAULT_HOST], (list, str), "'host:port' items, tried in order (failover).", required=False
        ),
        "login": Option(None, str, "User name (CONNECT login)."),
        "passcode": Option(None, str, "Password (CONNECT passcode)."),
        "vhost": Option(None, str, "Virtual host (CONNECT host header; RabbitMQ default '/')."),
        "ssl": Option(False, bool, "Connect with TLS (the system's CA certificates)."),
        "heartbeat": Option(
            10_000, int, "Heart-beat interval in ms, both directions (0: none).", minimum=0, maximum=3_600_000
        ),
        "heartbeat_grace": Option(
            2.0, float, "Missed heart-beats tolerated (factor of the interval).", minimum=1.0, maximum=100.0
        ),
        "connect_timeout": Option(
            5.0, float, "Seconds to wait for a connection.", positive=True, duration=True
        ),
        "receipt_timeout": Option(
            10.0,
            float,
            "Seconds to wait for the broker's receipts of a published batch.",
            positive=True,
            duration=True,
        ),
        "scheduler": Option(
            False, bool, 'ActiveMQ runs with schedulerSupport="true": delays through AMQ_SCHEDULED_DELAY.'
        ),
        "management_url": Option(None, str, "RabbitMQ management API (default: http://<first host>:15672)."),
        "management_user": Option(None, str, "Management API user (default: login, else guest)."),
        "management_password": Option(None, str, "Management API password (default: passcode, else guest)."),
    }
    queue_options: ClassVar[dict[str, Option]] = {
        "destination": Option(None, str, "Full STOMP destination (default: /queue/<name>)."),
    }
    client_loggers = ("stomp",)
    dynamic_queues = True
    description = "STOMP 1.2 through stomp.py: ActiveMQ Classic or RabbitMQ's STOMP plugin."

    def __init__(self, spec: DriverSpec, queues: Iterable[QueueSpec] = ()) -> None:
        super().__init__(spec, queues)
        options = self.options
        flavour = str(options["flavour"]).strip().lower()
        if flavour not in FLAVOURS:
            raise ConfigError(
                f"unknown STOMP flavour {options['flavour']!r}: use one of {', '.join(FLAVOURS)}",
                key=f"drivers.{self.name}.flavour",
                source=self.source,
            )
        options["flavour"] = flavour
        hosts = parse_hosts(options["hosts"], key=f"drivers.{self.name}.hosts", source=self.source)
        options["hosts"] = [f"{host}:{port}" for host, port in hosts]
        if flavour == RABBITMQ:
            if options["scheduler"]:
                raise ConfigError(
                    "scheduler is ActiveMQ's (AMQ_SCHEDULED_DELAY): RabbitMQ's STOMP plugin cannot delay",
                    key=f"drivers.{self.name}.scheduler",
                    source=self.source,
                )
            options["vhost"] = options["vhost"] or "/"  # RabbitMQ refuses the default host header
            options["management_url"] = options["management_url"] or f"http://{hosts[0][0]}:{MANAGEMENT_PORT}"
            options["management_user"] = options["management_user"] or options["login"] or "guest"
            options["management_password"] = options["management_password"] or options["passcode"] or "guest"
        self.settings = Settings(
            hosts=hosts,
            login=options["login"],
            passcode=options["passcode"],
            vhost=options["vhost"],
            ssl=bool(options["ssl"]),
            heartbeat=int(options["heartbeat"]),
            heartbeat_grace=float(options["heartbeat_grace"]),
            connect_timeout=float(options["connect_timeout"]),
            receipt_timeout=float(options["receipt_timeout"]),
        )
        base = ACTIVEMQ_CAPABILITIES if flavour == ACTIVEMQ else RABBITMQ_CAPABILITIES
        if flavour == ACTIVEMQ and options["scheduler"]:
            base = dataclasses.replace(base, delayed_delivery=True)
        self._capabilities = base
        self._lock = threading.Lock()
        self._publisher: Any = None

    # -- what this instance is ---------------------------------------------------------------------

    @property
    def flavour(self) -> str:
        """``"activemq"`` or ``"rabbitmq"``."""
        return str(self.options["flavour"])

    def capabilities_for(self, queue: str | None = None) -> Capabilities:
        """What this instance can do (the flavour's capabilities, delays with ActiveMQ's scheduler)."""
        return self._capabilities

    def destination(self, queue: str) -> str:
        """The STOMP destination of logical queue ``queue``: its ``destination`` option, else
        ``/queue/<name>`` (a durable queue on both flavours)."""
        return str(self.queue(queue).options.get("destination") or f"/queue/{queue}")

    def describe(self) -> str:
        """The broker's addresses, for messages (no credentials)."""
        return self.settings.describe()

    # -- connections -------------------------------------------------------------------------------

    def session(self, purpose: str, on_message: Any = None, on_trouble: Any = None) -> Session:
        """A NEW connected :class:`Session` (the caller closes it; see :class:`Session` for the
        callbacks).

        Raises:
            BrokerUnavailableError: no broker could be reached or it refused the connection.
        """
        return Session(self.settings, f"driver {self.name}: {purpose}", on_message, on_trouble).open()

    def connect(self, purpose: str) -> stomp.Connection12:
        """A NEW connected stomp.py ``Connection12`` (the caller disconnects it), with heart-beats, the
        virtual host and credentials of this instance; bodies of received frames are bytes. Its
        :class:`Session` listener (``connection.get_listener("kq-session")``) tracks receipts and errors.

        Raises:
            BrokerUnavailableError: no broker could be reached or it refused the connection.
        """
        return self.session(purpose).connection

    def publisher(self) -> Any:
        """The driver's publishing connection (one per driver instance, connected on first use)."""
        with self._lock:
            if self._publisher is None:
                from kq.drivers.stomp._producer import Publisher

                self._publisher = Publisher(self)
            return self._publisher

    def _close(self) -> None:
        with self._lock:
            publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()

    # -- parts -------------------------------------------------------------------------------------

    def _create_producer(self, queue: QueueSpec) -> Producer:
        from kq.drivers.stomp._producer import StompProducer

        return StompProducer(self, queue)

    def _create_consumer(self, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int) -> Consumer:
        from kq.drivers.stomp._consumer import StompConsumer

        return StompConsumer(self, queue, routing_keys, prefetch)

    def _create_queue_manager(self) -> QueueManager:
        from kq.drivers.stomp._queue_manager import StompQueueManager

        manager: QueueManager = StompQueueManager(self)
        return manager


__all__ = ["SESSION_LISTENER", "StompDriver"]
