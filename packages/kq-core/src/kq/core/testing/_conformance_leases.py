"""Lease conformance: drivers whose deliveries time out unless extended (sqlite, SQS, memory).

A lease that lapsed belongs to nobody: the broker hands the message to another consumer, and whatever
the first holder does afterwards (ack, reject, extend) must leave the new holder's copy alone.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from kq.core._driver import Driver
from kq.core._errors import LeaseLostError
from kq.core._limits import Limits
from kq.core._loop import ConsumeLoop
from kq.core._message import Delivery, Message
from kq.core.testing._conformance_base import DriverTestBase, requires_for_class
from kq.core.testing._handlers import Handling, Timed
from kq.core.testing._helpers import receive_within, wait_for

#: The ways a holder settles or keeps a delivery, tried late by the settlement test.
LATE_ACTIONS = ("ack", "reject-requeue", "reject-drop", "extend")


@requires_for_class(lambda caps: caps.lease_extension, "lease_extension=True")
class LeaseConformance(DriverTestBase):
    """Drivers with visibility timeouts: leases are stamped on deliveries, an extended delivery stays
    reserved, an expired one comes back, and a late holder never disturbs the new one.

    Configure the driver with a short visibility timeout (a second or two) for these tests.
    """

    def _lease(self, driver: Driver, queue: str) -> float:
        with driver.consumer(queue) as consumer:
            lease = consumer.lease_duration
        assert lease, "a driver with lease_extension must set Consumer.lease_duration"
        return lease

    def test_deliveries_carry_their_lease_deadline(self, driver: Driver, queue: str) -> None:
        """A delivery says when its lease ends (``Delivery.lease_expires``, monotonic clock): after it
        was handed out, at most one lease later. The loop's lease keeper schedules extensions from it."""
        self.publish(driver, queue, Message(b"leased", content_type="text/plain"))
        with driver.consumer(queue) as consumer:
            lease = consumer.lease_duration
            assert lease, "a driver with lease_extension must set Consumer.lease_duration"
            got = receive_within(consumer, self.receive_timeout)
            now = time.monotonic()
            consumer.ack(got)
        assert got.lease_expires is not None, (
            "a driver with lease_extension must set Delivery.lease_expires when it hands a delivery out"
        )
        assert now < got.lease_expires <= now + lease + 0.1, (
            f"lease_expires is {got.lease_expires - now:+.3f}s from the hand-out, for a lease of {lease:g}s"
        )

    def test_extended_delivery_stays_reserved(self, driver: Driver, queue: str) -> None:
        """While the holder extends its lease, no other consumer receives the message."""
        self.publish(driver, queue, Message(b"long job", content_type="text/plain"))
        with driver.consumer(queue) as holder, driver.consumer(queue) as other:
            lease = holder.lease_duration
            assert lease is not None, "a driver with lease_extension must set Consumer.lease_duration"
            got = receive_within(holder, self.receive_timeout)
            deadline = time.monotonic() + lease * 2.5
            while time.monotonic() < deadline:
                holder.extend(got, lease)
                assert other.receive(lease / 3) is None
            holder.ack(got)

    def test_expired_lease_redelivers(self, driver: Driver, queue: str) -> None:
        """A delivery neither settled nor extended goes to another consumer once its lease expires."""
        self.publish(driver, queue, Message(b"slow", content_type="text/plain"))
        with driver.consumer(queue) as holder, driver.consumer(queue) as other:
            lease = holder.lease_duration
            assert lease is not None
            got = receive_within(holder, self.receive_timeout)
            again = receive_within(other, lease + self.receive_timeout)
            assert again.message_id == got.message_id
            assert again.delivery_count == got.delivery_count + 1
            other.ack(again)

    def test_late_settlement_leaves_the_new_holders_copy_alone(
        self, driver: Driver, queue: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A's leases lapse and B receives the messages. Then A acks one (no error: the base class logs
        the lost lease), rejects one with and one without requeue, and extends one (LeaseLostError).
        B's copies are untouched: B can still extend and ack each, and none comes back afterwards."""
        self.publish(driver, queue, *(Message(a.encode(), content_type="text/plain") for a in LATE_ACTIONS))
        lease = self._lease(driver, queue)
        n = len(LATE_ACTIONS)
        with driver.consumer(queue, prefetch=n) as a, driver.consumer(queue, prefetch=n) as b:
            first = _by_body(receive_within(a, self.receive_timeout) for _ in LATE_ACTIONS)
            # A neither settles nor extends: once its leases lapse, B gets the messages.
            second = _by_body(receive_within(b, lease + self.receive_timeout) for _ in LATE_ACTIONS)
            for action, delivery in second.items():
                count = delivery.delivery_count
                assert count >= 2, f"{action}: redelivered with delivery count {count}"
            a.ack(first["ack"])
            a.reject(first["reject-requeue"], requeue=True)
            a.reject(first["reject-drop"], requeue=False)
            with pytest.raises(LeaseLostError):
                a.extend(first["extend"], lease)
            for action, delivery in second.items():
                try:
                    b.extend(delivery, lease)
                except LeaseLostError:
                    pytest.fail(f"A's late {action} took the copy B holds (B can no longer extend it)")
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="kq.core._driver_consumer"):
                for delivery in second.values():
                    b.ack(delivery)
            lost = [r.getMessage() for r in caplog.records if r.name == "kq.core._driver_consumer"]
            assert not lost, f"B's acknowledgements found their leases gone: {lost}"
        with driver.consumer(queue) as third:
            again = third.receive(self.idle_timeout)
            assert again is None, f"{again!r} came back after A's late settlement and B's ack"

    def test_prefetched_deliveries_are_never_held_by_two_consumers_at_once(
        self, driver: Driver, queue: str
    ) -> None:
        """Two consume loops with prefetch 5 and handlers slower than lease / prefetch (a full buffer
        takes longer than a lease to work through): no message is handled by both at once, none is
        lost, and every delivery says when its lease ends (a buffered delivery's lease started when
        the broker handed it over, so the keeper must extend it from there)."""
        lease = self._lease(driver, queue)
        prefetch = 5
        seconds = lease / prefetch * 1.5
        sent = [Message(f'"{i}"'.encode()) for i in range(prefetch * 2)]
        self.publish(driver, queue, *sent)
        log: list[Handling] = []
        bound = seconds * len(sent) + self.receive_timeout * 2
        loops = [
            ConsumeLoop(
                driver,
                queue,
                Timed(f"loop-{n}", log, seconds=seconds),
                prefetch=prefetch,
                poll_interval=0.2,
                limits=Limits(time=bound),
            )
            for n in range(2)
        ]
        errors: list[BaseException] = []
        threads = [threading.Thread(target=_run, args=(loop, errors), daemon=True) for loop in loops]
        for thread in threads:
            thread.start()
        try:
            wait_for(
                lambda: len({h.message_id for h in log}) >= len(sent),
                timeout=bound,
                message="every message handled",
            )
        finally:
            for loop in loops:
                loop.stop("test over")
            for thread in threads:
                thread.join(bound)
        assert not errors, f"a consume loop raised {errors[0]!r}"
        missing = [h for h in log if h.lease_expires is None]
        assert not missing, "a driver with lease_extension must set Delivery.lease_expires on every delivery"
        for handling in log:
            left = (handling.lease_expires or 0.0) - handling.started
            assert left <= lease + 0.1, f"{handling}: lease ends {left:.2f}s ahead, for a lease of {lease:g}s"
        overlaps = [
            (earlier, later)
            for earlier in log
            for later in log
            if earlier.message_id == later.message_id
            and earlier is not later
            and earlier.started <= later.started < earlier.finished
        ]
        assert not overlaps, f"messages handled by two consumers at once: {overlaps[:2]}"
        assert {h.message_id for h in log} == {m.message_id for m in sent}
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None, "a message was left behind"

    def test_a_loop_whose_lease_lapsed_mid_handler_keeps_running(self, driver: Driver, queue: str) -> None:
        """The lease of the message being handled lapses (the extension did not happen: a stalled
        process, a hung call) and another consumer takes it. The loop's acknowledgement then finds the
        lease gone: it is logged, the loop goes on with the next message, and the other consumer's copy
        is intact."""
        first = Message(b'"first"')
        second = Message(b'"second"')
        self.publish(driver, queue, first)
        other = driver.consumer(queue)
        taken: list[Delivery] = []

        def lose_the_lease(delivery: Delivery) -> None:
            if delivery.message_id != first.message_id:
                return
            owner: Any = delivery.owner
            owner.extend = lambda *args, **kwargs: None  # the keeper's extensions do nothing now
            try:
                assert delivery.lease_expires is not None
                time.sleep(max(0.0, delivery.lease_expires - time.monotonic()))
                taken.append(receive_within(other, self.receive_timeout))
            finally:
                del owner.extend
            self.publish(driver, queue, second)

        log: list[Handling] = []
        loop = ConsumeLoop(
            driver,
            queue,
            Timed("loop", log, on_start=lose_the_lease),
            poll_interval=0.2,
            limits=Limits(messages=2, time=self.receive_timeout * 3),
        )
        try:
            reason = loop.run()  # must return, not raise
            assert [h.message_id for h in log] == [first.message_id, second.message_id], reason
            assert loop.stats.consumed == 2, reason
            assert [d.message_id for d in taken] == [first.message_id]
            other.extend(taken[0], self._lease(driver, queue))  # still held by the other consumer
            other.ack(taken[0])
        finally:
            other.close()
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None


def _by_body(deliveries: Any) -> dict[str, Delivery]:
    received: dict[str, Delivery] = {d.body.decode(): d for d in deliveries}
    assert sorted(received) == sorted(LATE_ACTIONS), f"received {sorted(received)}"
    return received


def _run(loop: ConsumeLoop, errors: list[BaseException]) -> None:
    try:
        loop.run()
    except BaseException as exc:  # reported by the test, not lost in a thread
        errors.append(exc)
