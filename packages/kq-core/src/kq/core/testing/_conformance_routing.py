"""Routing conformance: AMQP topic routing by the queue's binding keys, and a consumer's own key."""

from __future__ import annotations

import pytest

from kq.core._driver import Driver
from kq.core._errors import UnsupportedOperationError
from kq.core._message import Message
from kq.core.testing._conformance_base import DriverTestBase, requires, requires_for_class
from kq.core.testing._helpers import drain

#: (binding pattern, routing keys of the messages it must receive) for the keys
#: hello.world, bonjour.monde, hello, a.b.world and hello.big.world.
ROUTING_CASES = [
    ("hello.world", {"hello.world"}),
    ("bonjour.monde", {"bonjour.monde"}),
    ("hello.*", {"hello.world"}),
    ("*.world", {"hello.world"}),
    ("hello.#", {"hello.world", "hello", "hello.big.world"}),
    ("#.world", {"hello.world", "a.b.world", "hello.big.world"}),
    ("#", {"hello.world", "bonjour.monde", "hello", "a.b.world", "hello.big.world"}),
]
ROUTING_KEYS = ["hello.world", "bonjour.monde", "hello", "a.b.world", "hello.big.world"]


def _keyed(*keys: str) -> list[Message]:
    return [Message(k.encode(), content_type="text/plain", routing_key=k) for k in keys]


@requires_for_class(lambda caps: caps.routing_keys != "none", "routing_keys 'native' or 'emulated'")
class RoutingConformance(DriverTestBase):
    """AMQP topic routing by the queue's configured binding keys, natively or emulated; what a
    consumer's own routing key does, as ``consumer_routing`` declares."""

    @pytest.mark.parametrize(("pattern", "expected"), ROUTING_CASES, ids=[c[0] for c in ROUTING_CASES])
    def test_configured_binding_selects_messages(self, queue: str, pattern: str, expected: set[str]) -> None:
        """A consumer of a queue bound to ``pattern`` gets exactly the matching messages."""
        with self.driver_with(queue, routing_keys=[pattern]) as driver, driver.consumer(queue) as consumer:
            self.publish(driver, queue, *_keyed(*ROUTING_KEYS))
            got = drain(consumer, idle=self.idle_timeout * 2)
        assert sorted(d.routing_key for d in got) == sorted(expected)

    @requires(lambda caps: caps.consumer_routing != "none", "consumer_routing 'filter' or 'own-queue'")
    def test_consumer_binding_overrides_configuration(self, driver: Driver, queue: str) -> None:
        """``kq consume -r`` narrows what a consumer takes (the queue is configured for every key)."""
        with driver.consumer(queue, routing_key="*.world") as consumer:
            self.publish(driver, queue, *_keyed(*ROUTING_KEYS))
            got = drain(consumer, idle=self.idle_timeout * 2)
        assert sorted(d.routing_key for d in got) == ["hello.world"]

    @requires(lambda caps: caps.consumer_routing == "filter", "consumer_routing 'filter'")
    def test_filtering_consumer_leaves_the_other_messages(self, driver: Driver, queue: str) -> None:
        """A consumer with its own key takes only matching messages from the shared queue; the others
        stay there for the queue's other consumers, none lost, none delayed."""
        self.publish(driver, queue, *_keyed(*ROUTING_KEYS))
        with driver.consumer(queue, routing_key="hello.#") as narrow:
            taken = drain(narrow, idle=self.idle_timeout)
        with driver.consumer(queue) as everyone:
            left = drain(everyone, idle=self.idle_timeout)
        assert sorted(d.routing_key for d in taken) == ["hello", "hello.big.world", "hello.world"]
        assert sorted(d.routing_key for d in left) == ["a.b.world", "bonjour.monde"]
        assert all(d.delivery_count == 1 for d in left), "the skipped messages were handed out before"

    @requires(lambda caps: caps.consumer_routing == "none", "consumer_routing 'none'")
    def test_narrowing_consumer_is_refused(self, driver: Driver, queue: str) -> None:
        """A driver that cannot narrow a queue for one consumer refuses, instead of losing or delaying
        the other consumers' messages."""
        with pytest.raises(UnsupportedOperationError):
            driver.consumer(queue, routing_key="*.world")
