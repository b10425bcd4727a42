"""The counters of one consume loop run (:attr:`ConsumeLoop.stats`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class LoopStats:
    """Counters of one consume loop run.

    Attributes:
        received: Deliveries received (each is then consumed, failed or vetoed).
        consumed: Messages handled and acknowledged.
        failed: Messages that could not be handled, for any reason.
        vetoed: Messages a ``message_received`` listener skipped (acknowledged unhandled).
        dead_lettered: Failed messages moved to the dead-letter queue.
        requeued: Failed messages put back on their queue because the dead-letter queue would not
            take them (parked ones included).
        parked: Of those, the ones the dead-letter queue refuses for good (back for an hour).
        retried: Failed messages queued again for another attempt.
        reconnects: Times the consumer was rebuilt after a lost connection or a driver error.
        started_at: ``time.monotonic()`` when the run began.
    """

    received: int = 0
    consumed: int = 0
    failed: int = 0
    vetoed: int = 0
    dead_lettered: int = 0
    requeued: int = 0
    parked: int = 0
    retried: int = 0
    reconnects: int = 0
    started_at: float = field(default_factory=time.monotonic)
