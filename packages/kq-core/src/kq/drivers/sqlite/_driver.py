"""The sqlite driver class: options, capabilities, and where the database file is."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from kq.core.driver import (
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
from kq.drivers.sqlite._store import Checkpoints, WriteLock, connect


class SqliteDriver(Driver):
    """Durable queues in one sqlite file, shared safely by processes on one machine."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        routing_keys="emulated",
        # -r takes matching messages from the shared queue and leaves the others (docs/drivers.md).
        consumer_routing="filter",
        # Counts leases handed out and not settled: poison protection works (docs/failures.md).
        delivery_count="exact",
        delayed_delivery=True,
        batch_send=True,
        message_ttl=True,
        lease_extension=True,
        cross_process=True,
    )
    # "database is locked" past the busy timeout, or a file deleted or replaced under the consumer
    # (DatabaseFileChangedError): rebuild the consumer, which opens the file at the path again.
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.OperationalError,)
    driver_options: ClassVar[dict[str, Option]] = {
        "path": Option(
            ".kq/kq.sqlite3", str, "Database file; relative to the configuration file's directory."
        ),
        "visibility_timeout": Option(
            30.0,
            float,
            "Seconds a received message stays reserved unless acked.",
            positive=True,
            duration=True,
        ),
        "poll_interval": Option(
            0.2,
            float,
            "Longest pause between two looks at an empty queue, in seconds.",
            positive=True,
            duration=True,
        ),
        "busy_timeout": Option(
            30.0,
            float,
            "Seconds to wait for another writer's turn (kq's lock file, then sqlite's lock).",
            positive=True,
            duration=True,
        ),
        "synchronous": Option(
            "NORMAL", str, "sqlite 'synchronous' pragma: NORMAL, or FULL to survive power loss."
        ),
    }
    queue_options: ClassVar[dict[str, Option]] = {
        "visibility_timeout": Option(
            None,
            float,
            "Overrides the driver's visibility timeout for this queue.",
            positive=True,
            duration=True,
        ),
    }
    dynamic_queues = True
    description = "Embedded durable queues in a sqlite file (the zero-configuration default)."

    def __init__(self, spec: DriverSpec, queues: Iterable[QueueSpec] = ()) -> None:
        super().__init__(spec, queues)
        synchronous = self.options["synchronous"].upper()
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(
                "must be OFF, NORMAL, FULL or EXTRA",
                key=f"drivers.{self.name}.synchronous",
                source=self.source,
            )
        self.options["synchronous"] = synchronous

    @property
    def path(self) -> Path:
        """The database file."""
        path = Path(self.options["path"]).expanduser()
        if not path.is_absolute() and self.root is not None:
            path = Path(self.root) / path
        return path

    def connect(self) -> sqlite3.Connection:
        """A new connection to the database."""
        return connect(
            self.path, busy_timeout=self.options["busy_timeout"], synchronous=self.options["synchronous"]
        )

    def write_lock(self) -> WriteLock:
        """A new handle on the lock file kq's writers to the database take turns on."""
        return WriteLock(self.path, self.options["busy_timeout"])

    def checkpoints(self, connection: sqlite3.Connection, *, autocheckpoint: bool = False) -> Checkpoints:
        """The checkpoints a producer's or consumer's ``connection`` runs itself, outside the lock."""
        synced = self.options["synchronous"] in ("FULL", "EXTRA")
        return Checkpoints(connection, synced=synced, autocheckpoint=autocheckpoint)

    def visibility_timeout(self, queue: QueueSpec) -> float:
        """The lease length of ``queue``'s deliveries."""
        override = queue.options.get("visibility_timeout")
        return float(override if override is not None else self.options["visibility_timeout"])

    def _create_producer(self, queue: QueueSpec) -> Producer:
        from kq.drivers.sqlite._producer import SqliteProducer

        return SqliteProducer(self, queue)

    def _create_consumer(self, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int) -> Consumer:
        from kq.drivers.sqlite._consumer import SqliteConsumer

        return SqliteConsumer(self, queue, routing_keys, prefetch)

    def _create_queue_manager(self) -> QueueManager:
        from kq.drivers.sqlite._queue_manager import SqliteQueueManager

        return SqliteQueueManager(self)
