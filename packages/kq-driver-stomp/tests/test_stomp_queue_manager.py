"""The STOMP queue manager against real brokers: ActiveMQ Classic (statistics plugin, browser count,
draining) and RabbitMQ (management API), with messages sent and held by plain stomp.py.

Set ``KQ_TEST_STOMP_ACTIVEMQ=host:port`` (an ActiveMQ with ``<statisticsBrokerPlugin/>`` and xstream and
jettison on its classpath, see docs/stomp.md), ``KQ_TEST_STOMP_RABBITMQ=host:port`` (RabbitMQ's STOMP
plugin, guest/guest) and ``KQ_TEST_STOMP_RABBITMQ_MANAGEMENT_URL=http://host:port`` (its management API);
tests of a broker that is not set are skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue as queues
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import stomp  # type: ignore[import-untyped,unused-ignore]

from kq.core.driver import DriverSpec, QueueSpec, UnsupportedOperationError
from kq.core.testing import unique_queue_name, wait_for
from kq.drivers.stomp._activemq_admin import PLUGIN_NEEDS, StatisticsUnavailableError, parse_statistics
from kq.drivers.stomp._driver import StompDriver
from kq.drivers.stomp._queue_manager import NO_DELETE, StompQueueManager
from kq.drivers.stomp._rabbitmq_admin import ManagementError

ACTIVEMQ = os.environ.get("KQ_TEST_STOMP_ACTIVEMQ", "")
RABBITMQ = os.environ.get("KQ_TEST_STOMP_RABBITMQ", "")
RABBITMQ_MANAGEMENT = os.environ.get("KQ_TEST_STOMP_RABBITMQ_MANAGEMENT_URL", "")

needs_activemq = pytest.mark.skipif(
    not ACTIVEMQ, reason="set KQ_TEST_STOMP_ACTIVEMQ=host:port (ActiveMQ's STOMP)"
)
needs_rabbitmq = pytest.mark.skipif(
    not (RABBITMQ and RABBITMQ_MANAGEMENT),
    reason="set KQ_TEST_STOMP_RABBITMQ=host:port and KQ_TEST_STOMP_RABBITMQ_MANAGEMENT_URL=http://host:port",
)
#: RabbitMQ's management counters lag (collect_statistics_interval, 5 s by default).
STATS_TIMEOUT = 15.0


@contextlib.contextmanager
def stomp_manager(
    flavour: str, hosts: str, destinations: dict[str, str] | None = None, **options: Any
) -> Iterator[StompQueueManager]:
    """The queue manager of a real :class:`StompDriver` for ``hosts``, with ``destinations`` as queues
    configured with a ``destination`` option; the driver is closed afterwards."""
    settings: dict[str, Any] = {"flavour": flavour, "hosts": [hosts]}
    if flavour == "rabbitmq":
        settings.update(login="guest", passcode="guest", management_url=RABBITMQ_MANAGEMENT)
    queues = [
        QueueSpec(name=name, driver="stomp-test", options={"destination": destination})
        for name, destination in (destinations or {}).items()
    ]
    driver = StompDriver(DriverSpec(name="stomp-test", type="stomp", options={**settings, **options}), queues)
    try:
        manager = driver.queue_manager()
        assert isinstance(manager, StompQueueManager)
        yield manager
    finally:
        driver.close()


class Client:
    """Plain stomp.py: sends, and holds deliveries unacknowledged, as another program would."""

    def __init__(
        self, hosts: str, vhost: str | None = None, login: str | None = None, passcode: str | None = None
    ) -> None:
        host, port = hosts.rsplit(":", 1)
        self.frames: queues.Queue[Any] = queues.Queue()
        self.receipts: queues.Queue[str] = queues.Queue()
        self.connection = stomp.Connection12([(host, int(port))], vhost=vhost)
        self.connection.set_listener("test", self)
        self.connection.connect(login, passcode, wait=True)

    def on_message(self, frame: Any) -> None:
        self.frames.put(frame)

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def send(self, queue: str, count: int, delay_ms: int = 0) -> None:
        """Send ``count`` persistent messages (ActiveMQ: scheduled ``delay_ms`` later); return once the
        broker confirmed the last (and so all)."""
        receipt = f"r-{uuid.uuid4().hex}"
        for number in range(count):
            headers = {"persistent": "true"}
            if delay_ms:
                headers["AMQ_SCHEDULED_DELAY"] = str(delay_ms)
            if number == count - 1:
                headers["receipt"] = receipt
            self.connection.send(f"/queue/{queue}", f"m{number}", headers=headers)
        assert self.receipts.get(timeout=10) == receipt

    def hold(self, queue: str) -> Any:
        """Subscribe with prefetch 1 and return the first delivery, unacknowledged."""
        self.connection.subscribe(
            f"/queue/{queue}",
            id=f"hold-{queue}",
            ack="client-individual",
            headers={"activemq.prefetchSize": "1", "prefetch-count": "1"},
        )
        return self.frames.get(timeout=10)

    def receive(self, queue: str, timeout: float) -> Any:
        self.connection.subscribe(f"/queue/{queue}", id=f"get-{queue}", ack="auto")
        try:
            return self.frames.get(timeout=timeout)
        except queues.Empty:
            return None

    def close(self) -> None:
        self.connection.disconnect()


# -- offline -------------------------------------------------------------------------------------------


def test_parse_statistics_reads_numbers_strings_and_a_single_entry() -> None:
    body = (
        '{"map":{"entry":[{"string":"size","long":7},{"string":["destinationName","queue:\\/\\/a.b"]},'
        '{"string":"memoryPercentUsage","int":0},{"string":"averageEnqueueTime","double":1.5}]}}'
    )
    assert parse_statistics(body) == {
        "size": 7,
        "destinationName": "queue://a.b",
        "memoryPercentUsage": 0,
        "averageEnqueueTime": 1.5,
    }
    assert parse_statistics(b'{"map":{"entry":{"string":"size","long":2}}}') == {"size": 2}


def test_a_destination_that_is_not_a_queue_is_refused() -> None:
    with (
        stomp_manager("activemq", "127.0.0.1:1", {"news": "/topic/news"}) as manager,
        pytest.raises(UnsupportedOperationError, match=r"/topic/news.*not a queue"),
    ):
        manager.info("news")


def test_activemq_refuses_delete_saying_why() -> None:
    with stomp_manager("activemq", "127.0.0.1:1") as manager:
        with pytest.raises(UnsupportedOperationError, match="web console or JMX"):
            manager.delete("demo")
        with pytest.raises(UnsupportedOperationError, match="available: list-configured"):
            manager.execute("delete", "demo")
    assert "JMX" in NO_DELETE


# -- ActiveMQ ------------------------------------------------------------------------------------------


@pytest.fixture
def activemq() -> Iterator[Client]:
    client = Client(ACTIVEMQ)
    yield client
    client.close()


@needs_activemq
def test_activemq_info_counts_waiting_in_flight_and_consumers(activemq: Client) -> None:
    queue = unique_queue_name()
    activemq.send(queue, 3)
    with stomp_manager("activemq", ACTIVEMQ) as manager:
        info = manager.info(queue)
        assert info["exists"] is True
        assert (info["messages"], info["in_flight"], info["consumers"]) == (3, 0, 0)
        assert info["destination"] == f"/queue/{queue}"
        assert info["enqueued"] == 3
        activemq.hold(queue)
        info = wait_for(
            lambda: (i := manager.info(queue))["in_flight"] == 1 and i, timeout=5, message="in flight"
        )
        assert (info["messages"], info["in_flight"], info["consumers"]) == (2, 1, 1)
        assert manager.execute("info", queue)["messages"] == 2


@needs_activemq
def test_activemq_info_of_a_missing_queue_creates_nothing() -> None:
    queue = unique_queue_name()
    with stomp_manager("activemq", ACTIVEMQ) as manager:
        assert manager.info(queue) == {
            "queue": queue,
            "destination": f"/queue/{queue}",
            "exists": False,
            "messages": 0,
            "in_flight": 0,
            "delayed": 0,
            "consumers": 0,
        }
        assert queue not in manager.list_available()


@needs_activemq
def test_activemq_list_available_lists_queues_by_logical_name(activemq: Client) -> None:
    plain, physical = unique_queue_name(), unique_queue_name()
    activemq.send(plain, 1)
    activemq.send(physical, 1)
    with stomp_manager("activemq", ACTIVEMQ, {"logical": f"/queue/{physical}"}) as manager:
        listed = manager.list_available()
    assert plain in listed
    assert "logical" in listed
    assert physical not in listed
    assert not [name for name in listed if name.startswith("ActiveMQ.Statistics")]


@needs_activemq
def test_activemq_purge_drains_and_counts(activemq: Client) -> None:
    queue = unique_queue_name()
    activemq.send(queue, 5)
    with stomp_manager("activemq", ACTIVEMQ) as manager:
        assert manager.purge(queue) == 5
        assert manager.info(queue)["messages"] == 0
    assert activemq.receive(queue, 1.0) is None


@needs_activemq
def test_activemq_purge_leaves_messages_in_flight(activemq: Client) -> None:
    queue = unique_queue_name()
    activemq.send(queue, 3)
    held = activemq.hold(queue)
    with stomp_manager("activemq", ACTIVEMQ) as manager:
        assert manager.purge(queue) == 2
        info = manager.info(queue)
    assert (info["messages"], info["in_flight"]) == (0, 1)
    activemq.connection.ack(held.headers["ack"])


@needs_activemq
def test_activemq_counts_and_purges_scheduled_messages(activemq: Client) -> None:
    queue, other = unique_queue_name(), unique_queue_name()
    activemq.send(queue, 1)
    activemq.send(queue, 2, delay_ms=120_000)
    activemq.send(other, 1, delay_ms=120_000)
    with stomp_manager("activemq", ACTIVEMQ) as manager:
        info = manager.info(queue)
        if info["delayed"] == 0 and info["messages"] == 3:
            pytest.skip("the ActiveMQ of KQ_TEST_STOMP_ACTIVEMQ runs without schedulerSupport")
        assert (info["messages"], info["delayed"]) == (1, 2)
        assert manager.purge(queue) == 3
        assert (manager.info(queue)["messages"], manager.info(queue)["delayed"]) == (0, 0)
        assert manager.info(other)["delayed"] == 1, "another queue's scheduled message stays"
        assert manager.purge(other) == 1


@needs_activemq
def test_activemq_purge_of_a_missing_queue_is_0_and_creates_nothing() -> None:
    queue = unique_queue_name()
    with stomp_manager("activemq", ACTIVEMQ) as manager:
        assert manager.purge(queue) == 0
        assert manager.info(queue)["exists"] is False


@needs_activemq
def test_activemq_without_statistics_counts_with_a_browser(
    activemq: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A statistics prefix nobody answers acts as a broker without the plugin (checked by hand on a
    broker without it, and on one without xstream, which closes the connection instead)."""
    queue = unique_queue_name()
    activemq.send(queue, 4)
    with stomp_manager("activemq", ACTIVEMQ) as manager:
        admin = manager._activemq
        # One fixed prefix: ActiveMQ cannot delete queues over STOMP, so each run reuses the same ones.
        admin.statistics_prefix = "kqtest_nostats."
        admin.timeout = 1.0
        try:
            with caplog.at_level(logging.WARNING):
                info = manager.info(queue)
            assert (info["messages"], info["in_flight"], info["consumers"]) == (4, None, None)
            assert info["statistics"].startswith("browser count")
            assert "statisticsBrokerPlugin" in caplog.text
            assert "queue browser" in caplog.text
            assert manager.info(queue)["messages"] == 4  # asks the plugin no more, still counts
            assert manager.purge(queue) == 4
            assert manager.info(queue)["messages"] == 0
            with pytest.raises(StatisticsUnavailableError, match="did not answer") as raised:
                manager.list_available()
            assert PLUGIN_NEEDS in str(raised.value)
        finally:
            # The unanswered requests wait (expiring) in queues of the test prefix: clear them.
            for leftover in ("Broker", f"Destination.{queue}", "Destination.>"):
                admin.drain(admin.statistics_prefix + leftover)


# -- RabbitMQ ------------------------------------------------------------------------------------------


@pytest.fixture
def rabbitmq() -> Iterator[Client]:
    client = Client(RABBITMQ, vhost="/", login="guest", passcode="guest")
    yield client
    client.close()


def counts(info: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``info``'s messages waiting, in flight, and consumers."""
    return info["messages"], info["in_flight"], info["consumers"]


@needs_rabbitmq
def test_rabbitmq_info_counts_waiting_in_flight_and_consumers(rabbitmq: Client) -> None:
    queue = unique_queue_name()
    rabbitmq.send(queue, 3)
    with stomp_manager("rabbitmq", RABBITMQ) as manager:
        info = wait_for(
            lambda: (i := manager.info(queue))["messages"] == 3 and i, timeout=STATS_TIMEOUT, message="3"
        )
        assert (info["exists"], info["in_flight"], info["consumers"], info["vhost"]) == (True, 0, 0, "/")
        rabbitmq.hold(queue)
        # The management API samples its counters: wait until all three show the held delivery.
        wait_for(
            lambda: counts(manager.info(queue)) == (2, 1, 1),
            timeout=STATS_TIMEOUT,
            message="2 waiting, 1 in flight, 1 consumer",
        )
        manager.delete(queue)


@needs_rabbitmq
def test_rabbitmq_info_of_a_missing_queue() -> None:
    queue = unique_queue_name()
    with stomp_manager("rabbitmq", RABBITMQ) as manager:
        info = manager.info(queue)
    assert (info["exists"], info["messages"], info["in_flight"], info["consumers"]) == (False, 0, 0, 0)


@needs_rabbitmq
def test_rabbitmq_list_purge_and_delete(rabbitmq: Client, caplog: pytest.LogCaptureFixture) -> None:
    queue = unique_queue_name()
    rabbitmq.send(queue, 4)
    with stomp_manager("rabbitmq", RABBITMQ) as manager:
        assert queue in manager.list_available()
        wait_for(lambda: manager.info(queue)["messages"] == 4, timeout=STATS_TIMEOUT, message="4 messages")
        assert manager.purge(queue) is None
        wait_for(lambda: manager.info(queue)["messages"] == 0, timeout=STATS_TIMEOUT, message="purged")
        assert rabbitmq.receive(queue, 1.0) is None
        rabbitmq.connection.unsubscribe(f"get-{queue}")
        manager.delete(queue)
        assert queue not in manager.list_available()
        assert manager.info(queue)["exists"] is False
        with caplog.at_level(logging.INFO):
            manager.delete(queue)
            assert manager.purge(queue) == 0
    assert f"RabbitMQ has no queue {queue}; nothing to delete" in caplog.text
    assert f"RabbitMQ has no queue {queue}; nothing to purge" in caplog.text


@needs_rabbitmq
def test_rabbitmq_logical_names_and_amq_queue_destinations(rabbitmq: Client) -> None:
    physical = unique_queue_name()
    rabbitmq.send(physical, 1)
    with stomp_manager("rabbitmq", RABBITMQ, {"logical": f"/amq/queue/{physical}"}) as manager:
        assert "logical" in manager.list_available()
        wait_for(lambda: manager.info("logical")["messages"] == 1, timeout=STATS_TIMEOUT, message="1 message")
        manager.delete("logical")
        assert manager.info("logical")["exists"] is False


@needs_rabbitmq
def test_rabbitmq_management_errors_say_what_to_set() -> None:
    with (
        stomp_manager("rabbitmq", RABBITMQ, management_password="wrong") as manager,
        pytest.raises(ManagementError, match=r"401.*management_user"),
    ):
        manager.list_available()
    with (
        stomp_manager("rabbitmq", RABBITMQ, vhost="kq-no-such-vhost") as manager,
        pytest.raises(ManagementError, match="virtual host 'kq-no-such-vhost'"),
    ):
        manager.list_available()
    with (
        stomp_manager("rabbitmq", RABBITMQ, management_url="http://127.0.0.1:9") as manager,
        pytest.raises(ManagementError, match=r"unreachable.*management_url"),
    ):
        manager.list_available()
