"""ExampleDriver: its options, its capabilities, and the classes it builds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

from kq.core.driver import Capabilities, Consumer, Driver, Option, Producer, QueueManager, QueueSpec

logger = logging.getLogger("kq.drivers.example")


class ExampleDriver(Driver):
    """Durable queues as folders of files under ``path``, one file per message.

    Any number of processes on one machine (or sharing a POSIX file system whose renames are atomic)
    can publish and consume: a consumer claims a message by renaming its file, with a lease of
    ``visibility_timeout`` seconds.
    """

    description = "Example driver: durable queues as folders of files, one file per message."
    capabilities: ClassVar[Capabilities] = Capabilities(
        routing_keys="emulated",
        consumer_routing="filter",
        delivery_count="exact",
        delayed_delivery=True,
        message_ttl=True,
        lease_extension=True,
        cross_process=True,
    )
    # The folder can vanish under a worker (deleted, unmounted): rebuilding the consumer recreates it.
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (FileNotFoundError,)
    driver_options: ClassVar[dict[str, Option]] = {
        "path": Option(
            ".kq/example-queues", str, "Folder of the queues; relative to the configuration file."
        ),
        "visibility_timeout": Option(
            30.0, float, "Seconds a received message stays reserved unless acked.", positive=True
        ),
        "poll_interval": Option(
            0.05, float, "Seconds between two looks at an empty queue.", positive=True, maximum=60.0
        ),
    }
    dynamic_queues = True

    @property
    def folder(self) -> Path:
        """The folder holding one folder per queue."""
        path = Path(self.options["path"]).expanduser()
        if not path.is_absolute() and self.root is not None:
            path = Path(self.root) / path
        return path

    def _create_producer(self, queue: QueueSpec) -> Producer:
        from kq.drivers.example._producer import ExampleProducer

        return ExampleProducer(self, queue)

    def _create_consumer(self, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int) -> Consumer:
        from kq.drivers.example._consumer import ExampleConsumer

        return ExampleConsumer(self, queue, routing_keys, prefetch)

    def _create_queue_manager(self) -> QueueManager:
        from kq.drivers.example._queue_manager import ExampleQueueManager

        return ExampleQueueManager(self)
