"""The conformance suite must fail a driver that breaks the contract (a suite that cannot fail is useless),
and skip, saying why, what a driver does not claim to do.

Each broken driver is the memory driver with one fault, run by pytester against the test that must catch
it; the unbroken one must pass those same tests.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

import pytest

_MODULE = """
import dataclasses
import time

from kq.core.driver import DriverSpec, matches_any
from kq.core.testing import (
    BasicConformance,
    ConsumeLoopConformance,
    DelayConformance,
    FailureHandlingConformance,
    LeaseConformance,
    OrderingConformance,
    QueueManagerConformance,
    RoutingConformance,
    TTLConformance,
)
from kq.drivers.memory import MemoryDriver
from kq.drivers.memory._driver import MemoryConsumer, MemoryProducer


class BrokenConsumer(MemoryConsumer):
    BREAKAGE = {breakage!r}

    def _reject(self, delivery, requeue, delay):
        if self.BREAKAGE == "reject-drops":
            requeue = False
        super()._reject(delivery, requeue, delay)

    def _lease(self, queue, entry, now):
        delivery = super()._lease(queue, entry, now)
        if self.BREAKAGE == "count-stuck":
            delivery.delivery_count = 1
        return delivery

    def _receive(self, timeout):
        if self.BREAKAGE == "ignores-routing":
            self.routing_keys = ()
        if self.BREAKAGE == "racy-claim":
            return self._racy_receive(timeout)
        if self.BREAKAGE == "buffers-without-lease-expires":
            return self._buffered_receive(timeout)
        return super()._receive(timeout)

    def _racy_receive(self, timeout):
        # Read the first ready message, then take it out in a second step: two consumers can both read
        # it before either deletes it (a SELECT, then an UPDATE without "AND lease IS NULL").
        store = self._store
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            with store.condition:
                queue = store.queue(self.queue.name)
                store.reclaim(queue, now)
                keys = self.routing_keys
                ready = [e for e in queue.ready if e.available_at <= now]
                entry = next((e for e in ready if matches_any(keys, e.message.routing_key)), None)
            if entry is not None:
                time.sleep(0.002)
                with store.condition:
                    queue.ready[:] = [e for e in queue.ready if e is not entry]
                    return self._lease(queue, entry, time.monotonic())
            if now >= deadline:
                return None
            time.sleep(0.005)

    def _buffered_receive(self, timeout):
        # Fetch a whole prefetch at once (their leases start now), hand them out one by one later, and
        # say nothing about when their leases end.
        buffer = self.__dict__.setdefault("buffer", [])
        if not buffer:
            first = super()._receive(timeout)
            if first is None:
                return None
            buffer.append(first)
            while len(buffer) < self.prefetch:
                more = super()._receive(0)
                if more is None:
                    break
                buffer.append(more)
        delivery = buffer.pop(0)
        delivery.lease_expires = None
        return delivery

    def _ack(self, delivery):
        lapsed = delivery.handle not in self._store.queue(self.queue.name).in_flight
        if lapsed and self.BREAKAGE == "late-ack-deletes":
            # "Delete by message id": takes the copy another consumer holds now.
            with self._store.condition:
                in_flight = self._store.queue(self.queue.name).in_flight
                for token, (entry, _) in list(in_flight.items()):
                    if entry.message.message_id == delivery.message_id:
                        del in_flight[token]
            return
        if lapsed and self.BREAKAGE == "late-ack-raises":
            raise RuntimeError("receipt handle has expired")  # as boto3 does, instead of LeaseLostError
        super()._ack(delivery)

    def _ack_many(self, deliveries):
        if self.BREAKAGE == "ack-many-stops-at-10":
            deliveries = deliveries[:10]  # a batch call of at most 10 entries, the rest silently dropped
        super()._ack_many(deliveries)

    def _close(self):
        if self.BREAKAGE == "release-counts-twice":
            with self._store.condition:
                in_flight = self._store.queue(self.queue.name).in_flight
                for token in self._tokens:
                    if token in in_flight:
                        in_flight[token][0].delivery_count += 1
        super()._close()


class BrokenProducer(MemoryProducer):
    def _send_batch(self, messages):
        if BrokenConsumer.BREAKAGE == "strips-control-characters":
            messages = [
                dataclasses.replace(m, headers={{k: v for k, v in m.headers.items() if v.isprintable()}})
                for m in messages
            ]
        super()._send_batch(messages)


class BrokenDriver(MemoryDriver):
    capabilities = dataclasses.replace(MemoryDriver.capabilities, {capabilities})

    def _create_consumer(self, queue, routing_keys, prefetch):
        return BrokenConsumer(self, queue, routing_keys, prefetch)

    def _create_producer(self, queue):
        return BrokenProducer(self, queue)


class TestBroken({bases}):
    idle_timeout = 0.2
    receive_timeout = 1.0
    redelivery_timeout = 2.0
    delay = 0.5
    ttl = 0.3

    def driver_spec(self):
        return DriverSpec(name="broken", type="memory", options={{"visibility_timeout": 0.5}})

    def build_driver(self, queues):
        return BrokenDriver(self.driver_spec(), queues)

    def crash_consumer(self, consumer):
        consumer.abandon()
"""

#: The classes a driver with the memory driver's capabilities must run.
_BASES = (
    "BasicConformance, RoutingConformance, TTLConformance, DelayConformance, LeaseConformance, "
    "ConsumeLoopConformance"
)

#: (fault, the test that must fail on it, part of what it must say).
BROKEN = [
    ("reject-drops", "test_reject_with_requeue_redelivers_with_higher_count", "no message arrived"),
    ("count-stuck", "test_reject_with_requeue_redelivers_with_higher_count", "assert 1 >= 2"),
    ("count-stuck", "test_two_crashes_give_a_third_delivery_counted_three", "delivery counts were [1, 1"),
    ("ignores-routing", "test_configured_binding_selects_messages", "a.b.world"),
    (
        "racy-claim",
        "test_competing_consumers_in_threads_handle_each_message_once",
        "handed to two consumers at once",
    ),
    (
        "late-ack-deletes",
        "test_late_settlement_leaves_the_new_holders_copy_alone",
        "A's late ack took the copy B holds",
    ),
    (
        "late-ack-raises",
        "test_late_settlement_leaves_the_new_holders_copy_alone",
        "receipt handle has expired",
    ),
    (
        "late-ack-raises",
        "test_a_loop_whose_lease_lapsed_mid_handler_keeps_running",
        "receipt handle has expired",
    ),
    (
        "buffers-without-lease-expires",
        "test_prefetched_deliveries_are_never_held_by_two_consumers_at_once",
        "must set Delivery.lease_expires",
    ),
    (
        "buffers-without-lease-expires",
        "test_deliveries_carry_their_lease_deadline",
        "must set Delivery.lease_expires",
    ),
    (
        "strips-control-characters",
        "test_many_headers_with_empty_and_control_character_values_round_trip",
        "x-ansi",
    ),
    (
        "release-counts-twice",
        "test_released_deliveries_do_not_make_a_message_poison",
        "dead-lettered as poison",
    ),
    (
        "ack-many-stops-at-10",
        "test_retry_failed_requeues_every_dead_letter_once",
        "still in the dead-letter queue",
    ),
]


#: The tests of LeaseConformance.
_LEASE_TESTS = [
    "test_deliveries_carry_their_lease_deadline",
    "test_extended_delivery_stays_reserved",
    "test_expired_lease_redelivers",
    "test_late_settlement_leaves_the_new_holders_copy_alone",
    "test_prefetched_deliveries_are_never_held_by_two_consumers_at_once",
    "test_a_loop_whose_lease_lapsed_mid_handler_keeps_running",
]


#: How each test is selected with -k (one case of a parametrized test is enough to catch its fault).
_SELECT = {
    "test_configured_binding_selects_messages": "(test_configured_binding_selects_messages and hello.world)"
}


def _select(names: Iterable[str]) -> str:
    return " or ".join(_SELECT.get(name, name) for name in names)


def _write(pytester: pytest.Pytester, breakage: str, *, bases: str = _BASES, capabilities: str = "") -> None:
    module = _MODULE.format(breakage=breakage, bases=bases, capabilities=capabilities)
    pytester.makepyfile(test_broken=textwrap.dedent(module))


def _names(reports: object) -> set[str]:
    return {report.nodeid.split("::")[-1].split("[")[0] for report in reports}  # type: ignore[attr-defined]


@pytest.mark.parametrize("breakage", sorted({breakage for breakage, _, _ in BROKEN}))
def test_suite_fails_a_broken_driver(pytester: pytest.Pytester, breakage: str) -> None:
    """Each test that must catch ``breakage`` fails on it, saying what it must (one run per fault)."""
    expected = {name: saying for fault, name, saying in BROKEN if fault == breakage}
    _write(pytester, breakage)
    recorder = pytester.inline_run("-p", "no:cacheprovider", "-q", "-k", _select(expected))
    _, _, failed = recorder.listoutcomes()
    said: dict[str, str] = {}
    for report in failed:
        name = _names([report]).pop()
        said[name] = said.get(name, "") + str(report.longrepr)
    for name, saying in expected.items():
        assert name in said, f"{name} passed on a driver with the fault {breakage!r}"
        assert saying in said[name], said[name][-3000:]


def test_suite_fails_a_driver_whose_tests_skip_a_declared_capability(pytester: pytest.Pytester) -> None:
    """The memory driver declares lease_extension, but this test module leaves LeaseConformance out."""
    _write(pytester, "none", bases=_BASES.replace(", LeaseConformance", ""))
    recorder = pytester.inline_run(
        "-p", "no:cacheprovider", "-q", "-k", "test_declared_capabilities_are_tested"
    )
    _, _, failed = recorder.listoutcomes()
    assert len(failed) == 1, _names(failed)
    assert "LeaseConformance (lease_extension=True)" in str(failed[0].longrepr)


def test_suite_passes_the_unbroken_driver(pytester: pytest.Pytester) -> None:
    """Every test that catches a fault above passes on the driver without it."""
    _write(pytester, "none")
    selected = sorted({name for _, name, _ in BROKEN} | {"test_declared_capabilities_are_tested"})
    recorder = pytester.inline_run("-p", "no:cacheprovider", "-q", "-k", _select(selected))
    passed, skipped, failed = recorder.listoutcomes()
    assert not failed, [report.nodeid for report in failed]
    assert not skipped, [report.nodeid for report in skipped]
    assert _names(passed) == set(selected)


def test_undeclared_capabilities_skip_with_the_reason(pytester: pytest.Pytester) -> None:
    """A class whose capability the driver does not declare skips (naming it) instead of failing; so does
    a queue-manager test whose action the driver does not offer."""
    _write(
        pytester,
        "none",
        bases="BasicConformance, LeaseConformance, QueueManagerConformance",
        capabilities=(
            "lease_extension=False, delayed_delivery=False, message_ttl=False, routing_keys='none', "
            "queue_actions=('list-configured', 'list-available', 'info', 'purge')"
        ),
    )
    others = ["test_delete_removes_the_queue", "test_declared_capabilities_are_tested", "not_offered"]
    recorder = pytester.inline_run("-p", "no:cacheprovider", "-q", "-k", " or ".join(_LEASE_TESTS + others))
    passed, skipped, failed = recorder.listoutcomes()
    assert not failed, [report.nodeid for report in failed]
    reasons = {report.nodeid.split("::")[-1]: str(report.longrepr) for report in skipped}
    for name in _LEASE_TESTS:
        assert "needs lease_extension=True, which driver type 'memory' does not declare" in reasons[name]
    assert "the queue action 'delete'" in reasons["test_delete_removes_the_queue"]
    assert _names(passed) >= {"test_declared_capabilities_are_tested", "test_actions_not_offered_are_refused"}


def test_a_driver_counting_receives_is_judged_by_what_it_declares(pytester: pytest.Pytester) -> None:
    """The fault "release-counts-twice" is how SQS counts (every release raises ApproximateReceiveCount):
    declared as delivery_count="receives", the release test passes (the loop does not apply
    max_deliveries to such a count) and the poison test, which needs a count that is not of receives,
    skips."""
    _write(
        pytester,
        "release-counts-twice",
        bases="BasicConformance, ConsumeLoopConformance, FailureHandlingConformance",
        capabilities="delivery_count='receives'",
    )
    released = "test_released_deliveries_do_not_make_a_message_poison"
    poison = "test_a_message_redelivered_past_the_limit_is_dead_lettered_as_poison"
    recorder = pytester.inline_run("-p", "no:cacheprovider", "-q", "-k", f"{released} or {poison}")
    passed, skipped, failed = recorder.listoutcomes()
    assert not failed, [str(report.longrepr)[-2000:] for report in failed]
    assert _names(passed) == {released}
    assert _names(skipped) == {poison}
    assert "not apply max_deliveries to a count of receives" in str(skipped[0].longrepr)


def test_a_driver_claiming_retry_in_place_but_queueing_a_copy_fails(pytester: pytest.Pytester) -> None:
    """The memory driver's retry queues a copy at the back of the queue: declared as retry_in_place,
    both cases of the in-place test fail (the next message runs first; it runs during the delay)."""
    _write(
        pytester,
        "none",
        bases="OrderingConformance",
        capabilities="retry_in_place=True",
    )
    name = "test_a_retry_in_place_runs_before_later_messages"
    recorder = pytester.inline_run("-p", "no:cacheprovider", "-q", "-k", name)
    _, _, failed = recorder.listoutcomes()
    said = {report.nodeid.split("[")[-1].rstrip("]"): str(report.longrepr) for report in failed}
    assert set(said) == {"at-once", "delayed"}, said
    assert "b'1'" in said["at-once"], said["at-once"][-2000:]
    assert "ran while the retried message was waiting" in said["delayed"], said["delayed"][-2000:]
