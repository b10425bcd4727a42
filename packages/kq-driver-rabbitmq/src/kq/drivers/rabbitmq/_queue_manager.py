"""``kq managequeue`` on RabbitMQ: AMQP for info, purge, delete and setup; the management API to list."""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

import pika.exceptions

from kq.core.driver import QueueManager
from kq.drivers.rabbitmq._driver import options_summary
from kq.drivers.rabbitmq._management import Management
from kq.drivers.rabbitmq._topology import Topology

if TYPE_CHECKING:
    from kq.drivers.rabbitmq._driver import RabbitMQDriver

logger = logging.getLogger(__name__.replace("._", "."))


class RabbitMQQueueManager(QueueManager):
    """Administers the logical queues of one RabbitMQ driver instance."""

    driver: RabbitMQDriver

    def info(self, queue: str) -> dict[str, Any]:
        """``messages`` ready for delivery and ``consumers``, from a passive declaration (exact, instant)."""
        spec = self.driver.queue(queue)
        topology = Topology.of(spec)
        result: dict[str, Any] = {"queue": queue, "amqp_queue": topology.queue, "exchange": topology.exchange}
        try:
            with self.driver.channel() as channel:
                declared = channel.queue_declare(topology.queue, passive=True).method
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            return {**result, "exists": False, "messages": 0, "consumers": 0}
        return {
            **result,
            "exists": True,
            "messages": declared.message_count,
            "consumers": declared.consumer_count,
            "settings": options_summary(spec),
        }

    def purge(self, queue: str) -> int:
        """Delete the messages waiting in the queue (unacknowledged ones stay); return how many."""
        topology = Topology.of(self.driver.queue(queue))
        with self.driver.channel() as channel:
            purged: int = channel.queue_purge(topology.queue).method.message_count
        return purged

    def delete(self, queue: str) -> bool:
        """Delete the queue; also its exchange when it is the queue's own (named after it) and unused.

        ``False`` when the broker has no such queue: RabbitMQ deletes a missing queue without a word, so
        a passive declaration asks first (and nothing is declared on the way).
        """
        spec = self.driver.queue(queue)
        topology = Topology.of(spec)
        try:
            with self.driver.channel() as channel:
                channel.queue_declare(topology.queue, passive=True)
                channel.queue_delete(topology.queue)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            logger.info("queue %s: RabbitMQ has no queue %s; nothing to delete", queue, topology.queue)
            return False
        if spec.options["exchange"] is None:
            # Another queue still bound to it keeps it: if_unused makes the broker refuse (406).
            with contextlib.suppress(pika.exceptions.ChannelClosedByBroker), self.driver.channel() as channel:
                channel.exchange_delete(topology.exchange, if_unused=True)
        logger.info("queue %s: deleted RabbitMQ queue %s and its messages", queue, topology.queue)
        return True

    def setup(self, queue: str | None = None) -> list[dict[str, Any]]:
        """Declare the exchange, queue and bindings of ``queue``, or of every configured queue."""
        names = [queue] if queue else sorted(self.driver.configured_queues)
        declared = []
        with self.driver.channel() as channel:
            for name in names:
                spec = self.driver.queue(name)
                topology = Topology.of(spec)
                topology.declare(channel, spec, self.driver.describe())
                declared.append(
                    {
                        "queue": name,
                        "amqp_queue": topology.queue,
                        "exchange": topology.exchange,
                        "bindings": list(topology.bindings),
                    }
                )
        return declared

    def list_available(self) -> list[str]:
        """The queues of the virtual host, from the management API."""
        return sorted(q["name"] for q in self._management().queues())

    def _management(self) -> Management:
        parameters = self.driver.parameters
        url = self.driver.options["management_url"]
        if not url:
            host = parameters.host if ":" not in parameters.host else f"[{parameters.host}]"
            url = f"http://{host}:15672"
        credentials = parameters.credentials
        return Management(
            urllib.parse.urlsplit(url).geturl(),
            getattr(credentials, "username", "guest"),
            getattr(credentials, "password", "guest"),
            parameters.virtual_host,
            timeout=self.driver.options["socket_timeout"],
        )
