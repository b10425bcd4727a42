"""The driver conformance suite and test helpers (needs pytest).

Every driver, ours and third parties', proves it honours the driver contract by subclassing these
classes in its tests; see ``docs/writing-a-driver.md``::

    class TestMyDriver(BasicConformance, RoutingConformance, LeaseConformance, ConsumeLoopConformance):
        def driver_spec(self) -> DriverSpec:
            return DriverSpec(name="test", type="mydriver", options={"url": "..."})

        def crash_consumer(self, consumer: Consumer) -> None:
            consumer._connection.close()  # whatever drops it without a clean close

The classes:

- :class:`BasicConformance` — every driver: round trips of text, binary and empty bodies; headers (more
  than 10, empty values, control characters) unchanged and broker-reserved names refused at publish;
  bounded waits, cut short by ``wake()`` where the consumer is ``wakeable``; ack, reject with and
  without requeue (delivery count increases), retry copies, release on close (acks among prefetched
  deliveries kept, only the unacknowledged ones back), no loss when a consumer
  crashes, two crashes counted (unless the count is a flag), batches, settle-once rules; competing
  consumers in threads and, with ``cross_process``, in processes (one killed while holding a message):
  each message handled once, nothing lost.
- :class:`OrderingConformance` — FIFO delivery to a single consumer.
- :class:`RoutingConformance` — AMQP topic routing (``routing_keys`` native or emulated), and what a
  consumer's own routing key does (``consumer_routing``).
- :class:`TTLConformance` — per-message TTL (``message_ttl``).
- :class:`DelayConformance` — delayed messages and delayed requeues (``delayed_delivery``, within
  ``max_publish_delay`` / ``max_requeue_delay``).
- :class:`LeaseConformance` — visibility-timeout drivers (``lease_extension``): lease deadlines on
  deliveries, extension, expiry, late settlement that leaves the new holder's copy alone, prefetched
  leases never held twice, a loop that survives a lapsed lease.
- :class:`QueueManagerConformance` — info, purge, delete, list-available, list-configured, each where
  offered (``queue_actions``).
- :class:`ConsumeLoopConformance` — the core consume loop on the driver: acknowledgement, dead letters,
  hostile input, no poison from released deliveries, re-driving dead letters (``retry_dead_letters``).
- :class:`FailureHandlingConformance` — retries with measured backoff (where delays are possible), dead
  letters after the last attempt, poison messages after crashes (unless the count is of receives).
- :class:`SigningConformance` — signed messages verify after the trip; altered ones do not.

Tests needing a capability read what the driver declares for the test queue
(``Driver.capabilities_for``) and skip, naming it, where it is not declared; in the other direction,
``test_declared_capabilities_are_tested`` (in every class) fails when the driver declares
``lease_extension``, ``delayed_delivery``, ``message_ttl`` or routing keys and the test module does not
include the matching class. :func:`requires` gates a driver's own extra tests the same way.

A subclass must override :meth:`DriverTestBase.driver_spec` and :meth:`DriverTestBase.crash_consumer`;
it may override ``queue_options``, ``build_driver``, ``cleanup`` and ``inject_malformed``. The timing
knobs (``receive_timeout``, ``idle_timeout``, ``redelivery_timeout``, ``stats_timeout``, ``ttl``,
``delay``, ``retry_delay``) and sizes (``competing_messages``, ``competing_consumers``,
``redrive_messages``) are class attributes.

:class:`Workspace` (and the :func:`workspace` fixture) runs real ``kq`` processes in a folder with its
own ``kq.toml``, for end-to-end tests.

:func:`modules_loaded_after` tells what a fresh interpreter loads (a worker that imports no producer, a
``--help`` that imports no driver), and :func:`check_lazy_exports` checks a package built with
:func:`kq.core.plugins.lazy_exports`.
"""

try:
    import pytest
except ImportError:
    raise ImportError(
        "kq.core.testing (the driver conformance suite and test helpers) needs pytest, which is not "
        "installed: pip install 'kq-core[testing]'",
        name="pytest",
    ) from None

# Failed assertions in the suite show the values compared, as in the driver's own test modules; pytest
# rewrites only modules named before they are imported (hence the imports below the call: E402).
pytest.register_assert_rewrite(
    *(
        f"kq.core.testing._{name}"
        for name in (
            "conformance_base",
            "conformance_basic",
            "conformance_competing",
            "conformance_failures",
            "conformance_headers",
            "conformance_leases",
            "conformance_loop",
            "conformance_manager",
            "conformance_redrive",
            "conformance_routing",
            "conformance_signing",
            "conformance_timing",
            "handlers",
            "helpers",
            "imports",
        )
    )
)

from kq.core.testing._conformance_base import Condition, DriverTestBase, requires, requires_for_class  # noqa: E402
from kq.core.testing._conformance_basic import BasicConformance, OrderingConformance  # noqa: E402
from kq.core.testing._conformance_failures import FailureHandlingConformance  # noqa: E402
from kq.core.testing._conformance_leases import LeaseConformance  # noqa: E402
from kq.core.testing._conformance_loop import ConsumeLoopConformance  # noqa: E402
from kq.core.testing._conformance_manager import QueueManagerConformance  # noqa: E402
from kq.core.testing._conformance_routing import ROUTING_CASES, ROUTING_KEYS, RoutingConformance  # noqa: E402
from kq.core.testing._conformance_signing import SigningConformance  # noqa: E402
from kq.core.testing._conformance_timing import DelayConformance, TTLConformance  # noqa: E402
from kq.core.testing._helpers import drain, receive_within, unique_queue_name, wait_for  # noqa: E402
from kq.core.testing._imports import check_lazy_exports, modules_loaded_after  # noqa: E402
from kq.core.testing._workspace import RECORDER_COMMAND, RECORDER_CONSUMER, Workspace, workspace  # noqa: E402

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
    # capability gates
    "Condition",
    "requires",
    "requires_for_class",
    # helpers
    "RECORDER_COMMAND",
    "RECORDER_CONSUMER",
    "Workspace",
    "check_lazy_exports",
    "drain",
    "modules_loaded_after",
    "receive_within",
    "unique_queue_name",
    "wait_for",
    "workspace",
]
