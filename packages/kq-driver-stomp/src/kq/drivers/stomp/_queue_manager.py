"""``kq managequeue`` on STOMP, which has no admin frames: per broker flavour, what the broker offers.

- **ActiveMQ** (``flavour = "activemq"``): ``list-configured``; ``list-available`` and ``info`` through
  the statistics plugin (``info`` falls back to counting with a browser when the plugin does not answer);
  ``purge`` by removing the queue's scheduled messages and draining the queue. ``delete`` is refused:
  ActiveMQ removes queues only through JMX or its web console, which Debian's package does not ship.
- **RabbitMQ** (``flavour = "rabbitmq"``): every standard action through the management HTTP API
  (``management_url``, ``management_user`` and ``management_password``; vhost from ``vhost``).

``info`` returns ``messages`` (waiting to be delivered), ``in_flight`` (delivered, not yet acknowledged)
and ``consumers``, as the other drivers name them (ActiveMQ also ``delayed``: in its scheduler), plus
``exists`` and what the broker adds. Only destinations that are queues can be administered:
``/queue/<name>`` on both flavours, and ``/amq/queue/<name>`` on RabbitMQ; a queue whose
``destination`` option names a topic or an exchange is refused with
:class:`~kq.core.UnsupportedOperationError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kq.core.driver import QueueManager, UnsupportedOperationError
from kq.drivers.stomp._activemq_admin import ActiveMQAdmin, StatisticsUnavailableError
from kq.drivers.stomp._rabbitmq_admin import RabbitMQAdmin

if TYPE_CHECKING:
    from kq.drivers.stomp._driver import StompDriver

logger = logging.getLogger(__name__.replace("._", "."))

#: ActiveMQ's own queues, left out of ``list-available`` (its dead-letter queue ``ActiveMQ.DLQ`` holds
#: users' messages and is listed).
ACTIVEMQ_INTERNAL = ("ActiveMQ.Statistics.", "ActiveMQ.Advisory.", "ActiveMQ.Scheduler.")
#: STOMP destination prefixes that name a queue, per flavour.
QUEUE_PREFIXES = {"activemq": ("/queue/",), "rabbitmq": ("/queue/", "/amq/queue/")}
NO_DELETE = "ActiveMQ cannot delete a queue over STOMP; use its web console or JMX"


class StompQueueManager(QueueManager):
    """Administers the logical queues of one STOMP driver instance (see the module docstring)."""

    driver: StompDriver

    def __init__(self, driver: StompDriver) -> None:
        super().__init__(driver)
        self._statistics_missing = False
        options = driver.options
        self._activemq = ActiveMQAdmin(driver.connect, timeout=float(options.get("connect_timeout") or 5.0))

    @property
    def unavailable_actions(self) -> Mapping[str, str]:
        """Why ActiveMQ offers no ``delete`` (shown by ``kq managequeue delete``)."""
        return {"delete": NO_DELETE} if self._flavour != "rabbitmq" else {}

    # -- the actions ---------------------------------------------------------------------------------

    def list_available(self) -> list[str]:
        """The queues on the broker, by logical name where a configured queue maps to them.

        ActiveMQ: from the statistics plugin (every queue but ActiveMQ's own). RabbitMQ: the queues of
        the virtual host, from the management API.
        """
        if self._flavour == "rabbitmq":
            names = [str(found["name"]) for found in self._rabbitmq().queues()]
        else:
            names = [
                str(answer["destinationName"])[len("queue://") :]
                for answer in self._activemq.all_statistics()
            ]
            names = [name for name in names if not name.startswith(ACTIVEMQ_INTERNAL)]
        logical = self._logical_names()
        return sorted({logical.get(name, name) for name in names})

    def info(self, queue: str) -> dict[str, Any]:
        """``messages`` waiting, ``in_flight`` and ``consumers`` of ``queue``, and whether it ``exists``.

        ActiveMQ: from the statistics plugin, which counts instantly and exactly; its ``size`` includes
        the messages in flight, so ``messages`` is ``size - inflightCount``. ``delayed`` counts the
        messages waiting in the broker's scheduler for this queue (0 without ``schedulerSupport``).
        Asking about a queue that does not exist creates nothing and reports ``exists: false``. When
        the plugin does not answer, ``messages`` is a browser count (which includes messages in flight,
        and creates the queue, empty, if it was missing), ``in_flight`` and ``consumers`` are ``None``,
        and ``statistics`` says why.

        RabbitMQ: from the management API, whose counters lag a few seconds behind the queue.
        """
        name = self._broker_name(queue)
        result: dict[str, Any] = {"queue": queue, "destination": self.driver.destination(queue)}
        if self._flavour == "rabbitmq":
            return {**result, **self._rabbitmq_info(name)}
        return {**result, **self._activemq_info(queue, name)}

    def purge(self, queue: str) -> int | None:
        """Delete the messages waiting in ``queue``; those delivered and not yet acknowledged stay.

        ActiveMQ: removes the queue's delayed messages from the broker's scheduler, then drains the
        queue (consumes and acknowledges until it stays idle for a second), and returns how many went
        in all. RabbitMQ: the management API purges at once and does not say how many, so this returns
        ``None``. A queue that does not exist has nothing to purge: 0 (and it is not created).
        """
        name = self._broker_name(queue)
        if self._flavour == "rabbitmq":
            if not self._rabbitmq().purge(name):
                logger.info("queue %s: RabbitMQ has no queue %s; nothing to purge", queue, name)
                return 0
            logger.info(
                "queue %s: purged RabbitMQ queue %s (the management API does not say how many)", queue, name
            )
            return None
        removed = self._activemq.remove_scheduled(name)
        if removed:
            logger.info("queue %s: removed %d scheduled message(s) from ActiveMQ's scheduler", queue, removed)
        expected: int | None = None
        if not self._statistics_missing:
            try:
                statistics = self._activemq.statistics(name)
            except StatisticsUnavailableError as exc:
                self._statistics_missing = True
                logger.debug("queue %s: no statistics, draining without a count (%s)", queue, exc)
            else:
                if statistics is None:
                    logger.info("queue %s: ActiveMQ has no queue %s; nothing to drain", queue, name)
                    return removed
                expected = _waiting(statistics)
        drained = self._activemq.drain(name, expected)
        logger.info(
            "queue %s: purged %d message(s) from ActiveMQ queue %s by draining it", queue, drained, name
        )
        return drained + removed

    def delete(self, queue: str) -> bool:
        """Delete ``queue`` and its messages (RabbitMQ only; ActiveMQ refuses, see the module docstring).

        A queue that does not exist is logged as such and is not an error: ``False``.
        """
        if self._flavour != "rabbitmq":
            raise UnsupportedOperationError(NO_DELETE)
        name = self._broker_name(queue)
        if self._rabbitmq().delete(name):
            logger.info("queue %s: deleted RabbitMQ queue %s and its messages", queue, name)
            return True
        logger.info("queue %s: RabbitMQ has no queue %s; nothing to delete", queue, name)
        return False

    # -- per flavour ---------------------------------------------------------------------------------

    def _activemq_info(self, queue: str, name: str) -> dict[str, Any]:
        if not self._statistics_missing:
            try:
                statistics = self._activemq.statistics(name)
            except StatisticsUnavailableError as exc:
                self._statistics_missing = True
                logger.warning("queue %s: %s; counting its messages with a queue browser instead", queue, exc)
                reason = str(exc)
            else:
                delayed = len(self._activemq.scheduled(name))
                if statistics is None:
                    return {
                        "exists": False,
                        "messages": 0,
                        "in_flight": 0,
                        "delayed": delayed,
                        "consumers": 0,
                    }
                return {
                    "exists": True,
                    "messages": _waiting(statistics),
                    "in_flight": _count(statistics, "inflightCount"),
                    "delayed": delayed,
                    "consumers": _count(statistics, "consumerCount"),
                    "producers": _count(statistics, "producerCount"),
                    "enqueued": _count(statistics, "enqueueCount"),
                    "dequeued": _count(statistics, "dequeueCount"),
                    "expired": _count(statistics, "expiredCount"),
                    "statistics": "statisticsBrokerPlugin",
                }
        else:
            reason = "the statistics plugin did not answer earlier"
        return {
            "exists": True,
            "messages": self._activemq.browse_count(name),
            "in_flight": None,
            "delayed": len(self._activemq.scheduled(name)),
            "consumers": None,
            "statistics": f"browser count (in-flight messages included); {reason}",
        }

    def _rabbitmq_info(self, name: str) -> dict[str, Any]:
        found = self._rabbitmq().queue(name)
        if found is None:
            return {"exists": False, "messages": 0, "in_flight": 0, "consumers": 0}
        return {
            "exists": True,
            # A queue the statistics have not sampled yet has no counters: none seen means 0.
            "messages": int(found.get("messages_ready") or 0),
            "in_flight": int(found.get("messages_unacknowledged") or 0),
            "consumers": int(found.get("consumers") or 0),
            "type": found.get("type"),
            "durable": found.get("durable"),
            "state": found.get("state"),
            "vhost": found.get("vhost"),
        }

    def _rabbitmq(self) -> RabbitMQAdmin:
        # The driver fills in the defaults for the rabbitmq flavour: management_url from the first
        # host, management_user/management_password from login/passcode, else guest/guest.
        options = self.driver.options
        return RabbitMQAdmin(
            str(options["management_url"]),
            str(options.get("management_user") or "guest"),
            str(options.get("management_password") or "guest"),
            vhost=str(options.get("vhost") or "/"),
            timeout=float(options.get("connect_timeout") or 5.0),
        )

    # -- names ---------------------------------------------------------------------------------------

    @property
    def _flavour(self) -> str:
        return str(self.driver.flavour)

    def _broker_name(self, queue: str) -> str:
        """The broker's name for the queue behind logical ``queue`` (its destination without prefix)."""
        destination = self.driver.destination(queue)
        for prefix in QUEUE_PREFIXES.get(self._flavour, ("/queue/",)):
            if destination.startswith(prefix) and len(destination) > len(prefix):
                return destination[len(prefix) :]
        raise UnsupportedOperationError(
            f"queue {queue} maps to STOMP destination {destination}, which is not a queue this flavour "
            f"({self._flavour}) can administer: kq managequeue works on "
            f"{' and '.join(p + '<name>' for p in QUEUE_PREFIXES.get(self._flavour, ('/queue/',)))}"
        )

    def _logical_names(self) -> dict[str, str]:
        """Broker queue name -> logical name, for the configured queues whose names differ."""
        names: dict[str, str] = {}
        for queue in self.driver.configured_queues:
            try:
                names[self._broker_name(queue)] = queue
            except UnsupportedOperationError:
                continue
        return names


def _count(statistics: dict[str, Any], key: str) -> int:
    value = statistics.get(key)
    return int(value) if isinstance(value, (int, float)) else 0


def _waiting(statistics: dict[str, Any]) -> int:
    """Messages waiting for a consumer: ActiveMQ's ``size`` counts those in flight too."""
    return max(_count(statistics, "size") - _count(statistics, "inflightCount"), 0)
