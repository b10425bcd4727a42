"""The driver conformance suite and test helpers (needs pytest).

Every driver, ours and third parties', proves it honours the driver contract by subclassing these
classes in its tests; see ``docs/writing-a-driver.md``. Pick the classes matching the driver's
capabilities:

- :class:`BasicConformance` — every driver: round trips of text, binary and empty bodies and headers,
  bounded waits, ack, reject with and without requeue (delivery count increases), release on close,
  no loss when a consumer crashes, batches, settle-once rules.
- :class:`RoutingConformance` — AMQP topic routing (native or emulated).
- :class:`TTLConformance` — per-message TTL.
- :class:`DelayConformance` — delayed messages and delayed requeues.
- :class:`LeaseConformance` — visibility-timeout drivers (lease extension and expiry).
- :class:`OrderingConformance` — FIFO delivery to a single consumer.
- :class:`QueueManagerConformance` — info, purge, delete, list-available, list-configured.
- :class:`ConsumeLoopConformance` — the core consume loop on the driver, dead-lettering included.
- :class:`FailureHandlingConformance` — retries with measured backoff, dead letters after the last
  attempt, poison messages after crashes (needs delayed delivery).
- :class:`SigningConformance` — signed messages verify after the trip; altered ones do not.

A subclass must override :meth:`DriverTestBase.driver_spec` and :meth:`DriverTestBase.crash_consumer`;
the timing knobs (``receive_timeout``, ``idle_timeout``, ...) are class attributes.

:class:`Workspace` (and the :func:`workspace` fixture) runs real ``kq`` processes in a folder with its
own ``kq.toml``, for end-to-end tests.
"""

from kq.core.testing._conformance import (
    ROUTING_CASES,
    ROUTING_KEYS,
    BasicConformance,
    ConsumeLoopConformance,
    DelayConformance,
    DriverTestBase,
    FailureHandlingConformance,
    LeaseConformance,
    OrderingConformance,
    QueueManagerConformance,
    RoutingConformance,
    SigningConformance,
    TTLConformance,
)
from kq.core.testing._helpers import drain, receive_within, unique_queue_name, wait_for
from kq.core.testing._workspace import RECORDER_COMMAND, RECORDER_CONSUMER, Workspace, workspace

__all__ = [
    # conformance classes
    "BasicConformance",
    "ConsumeLoopConformance",
    "DelayConformance",
    "DriverTestBase",
    "FailureHandlingConformance",
    "LeaseConformance",
    "OrderingConformance",
    "QueueManagerConformance",
    "RoutingConformance",
    "SigningConformance",
    "TTLConformance",
    "ROUTING_CASES",
    "ROUTING_KEYS",
    # helpers
    "RECORDER_COMMAND",
    "RECORDER_CONSUMER",
    "Workspace",
    "drain",
    "receive_within",
    "unique_queue_name",
    "wait_for",
    "workspace",
]
