"""What every conformance class shares: the timing knobs, the hooks a driver's tests override, the
fixtures, and the capability gates.

A test that needs a capability the driver may lack is *gated*: it reads what the driver declares for
the test queue (:meth:`Driver.capabilities_for`) and skips, saying which capability, when the driver
does not declare it. So a driver skips exactly what it says it cannot do, and
:meth:`DriverTestBase.test_declared_capabilities_are_tested` checks the other direction: a capability the
driver declares must be tested by the matching class.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

import pytest

from kq.core._capabilities import Capabilities
from kq.core._driver import Driver
from kq.core._driver_consumer import Consumer
from kq.core._message import Message
from kq.core._registry import load_driver_class
from kq.core._spec import DriverSpec, QueueSpec
from kq.core.testing._helpers import unique_queue_name

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

#: A capability check: the driver's capabilities for the test queue -> whether the test applies.
Condition = Callable[[Capabilities], bool]


def requires(condition: Condition, what: str) -> Callable[[F], F]:
    """Gate a conformance test: it runs only where ``condition(driver.capabilities_for(queue))`` holds,
    and otherwise skips with a reason naming ``what`` the driver does not declare.

    The test's own ``driver`` fixture answers when it has one; otherwise a driver is built (and closed)
    for the test's ``queue`` just to ask. A driver's own extra tests can be gated the same way::

        @requires(lambda caps: caps.delivery_count == "exact", "exact delivery counts")
        def test_my_broker_counts(self, driver: Driver, queue: str) -> None: ...

    Args:
        condition: Whether the test applies, given the capabilities the driver declares for the queue.
        what: The capability, in words, for the skip reason.
    """

    def decorate(test: F) -> F:
        @functools.wraps(test)
        def gated(self: DriverTestBase, *args: Any, **kwargs: Any) -> Any:
            queue = kwargs.get("queue") or unique_queue_name()
            driver = kwargs.get("driver")
            capabilities = self.capabilities(queue, driver if isinstance(driver, Driver) else None)
            if not condition(capabilities):
                pytest.skip(
                    f"{test.__qualname__} needs {what}, which driver type "
                    f"{self.driver_spec().type!r} does not declare for this queue "
                    "(Driver.capabilities_for)"
                )
            return test(self, *args, **kwargs)

        gated.kq_requires = what  # type: ignore[attr-defined]
        return gated  # type: ignore[return-value]

    return decorate


def requires_for_class(condition: Condition, what: str) -> Callable[[C], C]:
    """Gate every test a conformance class defines itself (see :func:`requires`), besides the gates
    of its own a test may have.

    Args:
        condition: Whether the class applies, given the capabilities the driver declares for the queue.
        what: The capability, in words, for the skip reason.
    """

    def decorate(cls: C) -> C:
        for name, value in list(vars(cls).items()):
            if name.startswith("test_") and callable(value):
                setattr(cls, name, requires(condition, what)(value))
        return cls

    return decorate


class DriverTestBase:
    """Fixtures and hooks shared by the conformance classes; override :meth:`driver_spec` and
    :meth:`crash_consumer` (required), and the other hooks where the defaults do not fit."""

    #: Longest wait for a message that must arrive.
    receive_timeout: ClassVar[float] = 10.0
    #: How long nothing must arrive before a queue counts as empty.
    idle_timeout: ClassVar[float] = 1.0
    #: Longest wait for the message of a crashed consumer to come back.
    redelivery_timeout: ClassVar[float] = 20.0
    #: How long queue counters may lag behind (brokers report some statistics late).
    stats_timeout: ClassVar[float] = 10.0

    def driver_spec(self) -> DriverSpec:
        """The driver under test: its type (entry-point name) and options. Subclasses must override it."""
        raise NotImplementedError(
            f"{type(self).__name__} must override driver_spec() to return the DriverSpec of the driver "
            "under test, e.g. DriverSpec(name='test', type='sqlite', options={'path': ...})"
        )

    def queue_options(self) -> dict[str, Any]:
        """Broker-specific options given to every test queue (``[queues.<name>]`` keys)."""
        return {}

    def make_queue(self, name: str, *, routing_keys: Sequence[str] = (), **settings: Any) -> QueueSpec:
        """The settings of a test queue (``settings``: other QueueSpec fields, such as ``retry``)."""
        spec = self.driver_spec()
        return QueueSpec(
            name=name,
            driver=spec.name,
            routing_keys=tuple(routing_keys),
            options=self.queue_options(),
            **settings,
        )

    def build_driver(self, queues: Sequence[QueueSpec]) -> Driver:
        """Build the driver through its entry point, with ``queues`` configured.

        Consumers in other processes (the competing-consumer tests) always build it this way, from
        :meth:`driver_spec` and :meth:`make_queue`: an override here does not reach them.
        """
        spec = self.driver_spec()
        return load_driver_class(spec.type)(spec, queues)

    def crash_consumer(self, consumer: Consumer) -> None:
        """Make ``consumer`` vanish without settling or releasing anything, as a killed process would."""
        raise NotImplementedError(
            f"{type(self).__name__} must override crash_consumer() to drop a consumer the way a crash does "
            "(close its connection without releasing deliveries)"
        )

    def inject_malformed(self, driver: Driver, queue: str) -> int:
        """Put into ``queue`` what the broker accepts but kq's producers never send; return how many.

        Override it with your broker's plain client: headers of types kq does not use, missing or odd
        properties, rows or attributes written by another tool. The consume loop must dead-letter each
        of them (or consume it, if it is readable after all) and go on. The default puts nothing: say in
        your tests why, when your broker stores only what kq's producers can send.
        """
        return 0

    def cleanup(self, driver: Driver, queues: Sequence[str]) -> None:
        """Delete the test queues (best effort)."""
        manager = driver.queue_manager()
        for name in queues:
            # Best effort: a queue that was never created may not be deletable.
            with contextlib.suppress(Exception):
                manager.delete(name)

    def capabilities(self, queue: str, driver: Driver | None = None) -> Capabilities:
        """What the driver under test declares for ``queue`` (asking ``driver``, or a driver built
        for the purpose); the gates of the conformance tests read it."""
        if driver is not None:
            return driver.capabilities_for(queue)
        built = self.build_driver([self.make_queue(queue)])
        try:
            return built.capabilities_for(queue)
        finally:
            built.close()

    @contextlib.contextmanager
    def driver_with(self, queue: str, **settings: Any) -> Iterator[Driver]:
        """A driver whose ``queue`` has ``settings`` (QueueSpec fields); its queues are deleted after."""
        spec = self.make_queue(queue, **settings)
        driver = self.build_driver([spec])
        try:
            yield driver
        finally:
            self.cleanup(driver, [queue, spec.dead_letter_queue])
            driver.close()

    @pytest.fixture
    def queue(self) -> str:
        """A fresh logical queue name."""
        return unique_queue_name()

    @pytest.fixture
    def driver(self, queue: str) -> Iterator[Driver]:
        """The driver under test with ``queue`` configured; its queues are deleted afterwards."""
        with self.driver_with(queue) as driver:
            yield driver

    def publish(self, driver: Driver, queue: str, *messages: Message) -> None:
        """Publish ``messages`` as one batch."""
        driver.producer(queue).send_batch(messages)

    def test_declared_capabilities_are_tested(self, queue: str) -> None:
        """Each capability the driver declares is tested: the driver's test module (this class, or
        the other ``Test*`` classes of its module) includes the conformance class that tests it."""
        # Imported here: those modules build on this one.
        from kq.core.testing import (
            BasicConformance,
            DelayConformance,
            LeaseConformance,
            RoutingConformance,
            TTLConformance,
        )

        caps = self.capabilities(queue)
        needed: list[tuple[type, str]] = [(BasicConformance, "every driver")]
        if caps.lease_extension:
            needed.append((LeaseConformance, "lease_extension=True"))
        if caps.delayed_delivery:
            needed.append((DelayConformance, "delayed_delivery=True"))
        if caps.message_ttl:
            needed.append((TTLConformance, "message_ttl=True"))
        if caps.routing_keys != "none":
            needed.append((RoutingConformance, f"routing_keys={caps.routing_keys!r}"))
        included = _included_classes(type(self))
        missing = [f"{cls.__name__} ({why})" for cls, why in needed if cls not in included]
        assert not missing, (
            f"driver type {self.driver_spec().type!r} declares capabilities its tests do not check: add "
            f"{', '.join(missing)} to the bases of {type(self).__name__} (or declare less)"
        )


def _included_classes(test_class: type) -> set[type]:
    """The classes run by ``test_class`` and by the other ``Test*`` conformance classes of its module."""
    included = set(test_class.__mro__)
    module = sys.modules.get(test_class.__module__)
    classes = [v for v in vars(module).values() if isinstance(v, type)] if module is not None else []
    for value in classes:
        if issubclass(value, DriverTestBase) and value.__name__.startswith("Test"):
            included.update(value.__mro__)
    return included
