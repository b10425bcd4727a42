"""kq's memory driver: queues inside one Python process, for tests.

Configure it like any driver::

    [drivers.test]
    type = "memory"
    namespace = "default"       # instances with the same namespace share queues
    visibility_timeout = 30     # seconds an unacknowledged delivery stays reserved

It behaves like the sqlite driver (routing keys, delays, TTL, leases that expire) without touching the
disk. :meth:`MemoryDriver.join` waits until a queue is drained, and :meth:`MemoryDriver.reset` forgets
every queue between tests.
"""

from kq.drivers.memory._driver import MemoryConsumer, MemoryDriver, MemoryProducer, MemoryQueueManager

__all__ = ["MemoryConsumer", "MemoryDriver", "MemoryProducer", "MemoryQueueManager"]
