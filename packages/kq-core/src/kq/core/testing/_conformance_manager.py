"""Queue-manager conformance (``kq managequeue``): each test runs only where the driver offers the
actions it uses (``Capabilities.queue_actions``), so a broker without, say, ``delete`` loses that test
only."""

from __future__ import annotations

import pytest

from kq.core._capabilities import STANDARD_ACTIONS
from kq.core._driver import Driver
from kq.core._errors import UnsupportedOperationError
from kq.core._message import Message
from kq.core.testing._conformance_base import Condition, DriverTestBase, requires
from kq.core.testing._helpers import wait_for


def offers(*actions: str) -> Condition:
    """A capability check: the driver offers every one of ``actions`` for the queue."""
    return lambda caps: all(action in caps.queue_actions for action in actions)


def _messages(count: int) -> list[Message]:
    return [Message(b"m", content_type="text/plain") for _ in range(count)]


class QueueManagerConformance(DriverTestBase):
    """``kq managequeue``: list-configured, list-available, info, purge, delete, each where offered."""

    def _messages(self, driver: Driver, queue: str) -> int:
        info = driver.queue_manager().info(queue)
        assert "messages" in info, "info() must report 'messages'"
        return int(info["messages"])

    def _wait_for_count(self, driver: Driver, queue: str, count: int) -> None:
        if "info" in driver.capabilities_for(queue).queue_actions:
            wait_for(
                lambda: self._messages(driver, queue) == count,
                timeout=self.stats_timeout,
                message=f"info() reports {count} messages",
            )

    @requires(offers("info"), "the queue action 'info'")
    def test_info_counts_waiting_messages(self, driver: Driver, queue: str) -> None:
        """``info`` reports the number of waiting messages."""
        self.publish(driver, queue, *_messages(3))
        self._wait_for_count(driver, queue, 3)

    @requires(offers("purge"), "the queue action 'purge'")
    def test_purge_empties_the_queue(self, driver: Driver, queue: str) -> None:
        """``purge`` deletes waiting messages, and reports how many where the broker says."""
        self.publish(driver, queue, *_messages(4))
        self._wait_for_count(driver, queue, 4)
        purged = driver.queue_manager().purge(queue)
        assert purged in (4, None)
        self._wait_for_count(driver, queue, 0)
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None

    @requires(offers("list-available"), "the queue action 'list-available'")
    def test_list_available_lists_a_used_queue(self, driver: Driver, queue: str) -> None:
        """A queue that holds messages is listed."""
        self.publish(driver, queue, *_messages(1))
        wait_for(
            lambda: queue in driver.queue_manager().list_available(),
            timeout=self.stats_timeout,
            message=f"list_available() contains {queue}",
        )

    @requires(offers("delete"), "the queue action 'delete'")
    def test_delete_removes_the_queue(self, driver: Driver, queue: str) -> None:
        """A deleted queue loses its messages, and is no longer listed where the driver lists queues."""
        self.publish(driver, queue, *_messages(2))
        manager = driver.queue_manager()
        listing = "list-available" in driver.capabilities_for(queue).queue_actions
        if listing:
            wait_for(
                lambda: queue in manager.list_available(),
                timeout=self.stats_timeout,
                message=f"list_available() contains {queue}",
            )
        assert manager.delete(queue) is True, "delete() of a queue that existed must return True"
        if listing:
            wait_for(
                lambda: queue not in manager.list_available(),
                timeout=self.stats_timeout,
                message=f"list_available() no longer contains {queue}",
            )
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None, "a deleted queue kept its messages"

    @requires(offers("delete"), "the queue action 'delete'")
    def test_delete_of_a_missing_queue_says_so(self, driver: Driver, queue: str) -> None:
        """Deleting a queue that does not exist returns ``False`` (``{"deleted": false}`` in ``kq
        managequeue delete``), and creates nothing on the way; a second delete also says so."""
        manager = driver.queue_manager()
        assert manager.delete(queue) is False, "delete() of a queue never used must return False"
        if "list-available" in driver.capabilities_for(queue).queue_actions:
            assert queue not in manager.list_available(), "delete() of a missing queue created it"
        self.publish(driver, queue, *_messages(1))
        assert manager.delete(queue) is True
        assert manager.delete(queue) is False, "a second delete() must return False"

    @requires(offers("list-configured"), "the queue action 'list-configured'")
    def test_list_configured(self, driver: Driver, queue: str) -> None:
        """The configured test queue is listed with its driver."""
        listed = {item["queue"]: item for item in driver.queue_manager().list_configured()}
        assert listed[queue]["driver"] == driver.name

    @requires(offers("info"), "the queue action 'info'")
    def test_execute_dispatches_by_name(self, driver: Driver, queue: str) -> None:
        """``execute`` runs an action by its CLI name and needs a queue where the action does."""
        manager = driver.queue_manager()
        self.publish(driver, queue, *_messages(1))
        wait_for(
            lambda: manager.execute("info", queue)["messages"] == 1,
            timeout=self.stats_timeout,
            message="execute('info') reports 1 message",
        )
        with pytest.raises(UnsupportedOperationError, match="needs a queue"):
            manager.execute("info")

    def test_actions_not_offered_are_refused(self, driver: Driver, queue: str) -> None:
        """A standard action the driver does not offer is refused by name, listing those it has, with
        the reason the manager gives for it (``QueueManager.unavailable_actions``)."""
        offered = driver.capabilities_for(queue).queue_actions
        absent = [action for action in STANDARD_ACTIONS if action not in offered]
        if not absent:
            pytest.skip("the driver offers every standard queue action")
        manager = driver.queue_manager()
        for action in absent:
            with pytest.raises(UnsupportedOperationError, match="available") as refused:
                manager.execute(action, queue)
            reason = manager.unavailable_actions.get(action)
            if reason:
                assert reason in str(refused.value)
