"""kq's sqlite driver: durable queues in one file, the zero-configuration default.

With no configuration at all, kq keeps its queues in ``./.kq/kq.sqlite3``. Several producer and
consumer processes on one machine can share the file safely: a consumer *leases* a message for
``visibility_timeout`` seconds (like SQS), the consume loop extends the lease while a long handler runs,
and a consumer that dies without acknowledging loses nothing: its message becomes visible again when the
lease expires. Delays, per-message TTL and routing-key filters (AMQP topic patterns, matched by kq) work
as on the brokers.

A worker commits once per message: acknowledging a message (deleting its row) leases the next one in the
same transaction, and ``ack`` returns once that transaction is committed. Writers take turns on a lock
file beside the database (``kq.sqlite3-lock``) rather than in sqlite's busy handler, so that two workers
on one file do not wait for each other's millisecond sleeps.

::

    [drivers.local]
    type = "sqlite"
    path = ".kq/kq.sqlite3"        # relative to the configuration file
    visibility_timeout = 30        # seconds
    poll_interval = 0.2            # longest pause between two looks at an empty queue
    busy_timeout = 30              # seconds to wait for another writer
    synchronous = "NORMAL"         # FULL to survive power loss: a disk sync per commit

    [queues.reports]
    driver = "local"
    visibility_timeout = 600       # per-queue override

Routing keys are filters on one queue: a consumer bound to ``hello.*`` takes only matching messages and
leaves the others for consumers with other bindings.
"""

from kq.drivers.sqlite._driver import SqliteDriver

__all__ = ["SqliteDriver"]
