"""The conformance suite must fail a driver that breaks the contract (a suite that cannot fail is useless)."""

from __future__ import annotations

import textwrap

import pytest

_MODULE = """
from kq.core import DriverSpec
from kq.core.testing import BasicConformance, RoutingConformance
from kq.drivers.memory import MemoryDriver
from kq.drivers.memory._driver import MemoryConsumer


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
        return super()._receive(timeout)


class BrokenDriver(MemoryDriver):
    def _create_consumer(self, queue, routing_keys, prefetch):
        return BrokenConsumer(self, queue, routing_keys, prefetch)


class TestBroken(BasicConformance, RoutingConformance):
    idle_timeout = 0.2
    receive_timeout = 1.0
    redelivery_timeout = 2.0

    def driver_spec(self):
        return DriverSpec(name="broken", type="memory", options={{"visibility_timeout": 0.5}})

    def build_driver(self, queues):
        return BrokenDriver(self.driver_spec(), queues)

    def crash_consumer(self, consumer):
        consumer.abandon()
"""


@pytest.mark.parametrize(
    ("breakage", "must_fail"),
    [
        ("reject-drops", "test_reject_with_requeue_redelivers_with_higher_count"),
        ("count-stuck", "test_reject_with_requeue_redelivers_with_higher_count"),
        ("ignores-routing", "test_configured_binding_selects_messages"),
    ],
)
def test_suite_fails_a_broken_driver(pytester: pytest.Pytester, breakage: str, must_fail: str) -> None:
    pytester.makepyfile(test_broken=textwrap.dedent(_MODULE.format(breakage=breakage)))
    recorder = pytester.inline_run("-p", "no:cacheprovider", "-q", "-k", must_fail)
    _, _, failed = recorder.listoutcomes()
    names = {report.nodeid.split("::")[-1].split("[")[0] for report in failed}
    assert must_fail in names, names


def test_suite_passes_the_unbroken_driver(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=textwrap.dedent(_MODULE.format(breakage="none")))
    recorder = pytester.inline_run("-p", "no:cacheprovider", "-q")
    passed, _, failed = recorder.listoutcomes()
    assert not failed, [report.nodeid for report in failed]
    assert len(passed) > 20
