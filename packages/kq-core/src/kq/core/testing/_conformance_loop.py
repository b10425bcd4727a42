"""Consume-loop conformance: the core's loop on the driver, from acknowledgement to dead letters."""

from __future__ import annotations

from kq.core._driver import Driver
from kq.core._limits import Limits
from kq.core._loop import ConsumeLoop
from kq.core._message import DEAD_LETTER_ERROR, DEAD_LETTER_QUEUE, DEAD_LETTER_REASON, JSON, Message
from kq.core.handlers._base import NoopHandler
from kq.core.testing._conformance_base import DriverTestBase
from kq.core.testing._conformance_redrive import RedriveTests
from kq.core.testing._handlers import Failing, Handling, Recording, Timed
from kq.core.testing._helpers import drain, receive_within


class ConsumeLoopConformance(RedriveTests, DriverTestBase):
    """The core's consume loop on this driver: acknowledge after success, dead-letter failures, never
    crash on what the broker hands over, no poison from mere releases; and re-driving dead letters."""

    def test_loop_consumes_and_acknowledges(self, driver: Driver, queue: str) -> None:
        """The loop handles each message once and leaves the queue empty."""
        self.publish(driver, queue, *(Message(f"{i}".encode(), content_type="text/plain") for i in range(5)))
        loop = ConsumeLoop(
            driver,
            queue,
            NoopHandler(),
            limits=Limits(messages=5, time=self.receive_timeout * 3),
            poll_interval=0.5,
        )
        reason = loop.run()
        assert loop.stats.consumed == 5, reason
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None

    def test_failed_message_goes_to_dead_letter_queue_with_reason(self, driver: Driver, queue: str) -> None:
        """A handler failure moves the message to ``<queue>.failed`` with the reason; nothing is lost."""
        sent = Message(
            b"poison", content_type="text/plain", routing_key="bad.news", headers={"x-origin": "test"}
        )
        self.publish(driver, queue, sent)
        loop = ConsumeLoop(
            driver,
            queue,
            Failing(),
            limits=Limits(messages=1, time=self.receive_timeout * 3),
            poll_interval=0.5,
        )
        loop.run()
        assert loop.stats.failed == 1
        dead_letter_queue = driver.queue(queue).dead_letter_queue
        with driver.consumer(dead_letter_queue) as consumer:
            got = receive_within(consumer, self.receive_timeout)
            consumer.ack(got)
        assert got.message_id == sent.message_id
        assert got.body == b"poison"
        assert got.routing_key == "bad.news"
        assert got.headers["x-origin"] == "test"
        assert got.headers[DEAD_LETTER_REASON] == "failed"
        assert got.headers[DEAD_LETTER_QUEUE] == queue
        assert "cannot handle" in got.headers[DEAD_LETTER_ERROR]
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None

    def test_nothing_a_broker_hands_over_crashes_the_loop(self, driver: Driver, queue: str) -> None:
        """Hostile bodies and whatever :meth:`inject_malformed` puts in are dead-lettered, the loop goes on,
        and a good message behind them is consumed: nothing is lost, nothing stops the worker."""
        hostile = [
            Message(b"\xff\xfe not UTF-8 \x00", content_type=JSON),
            Message(b"", content_type=JSON),
            Message(b"[" * 50_000 + b"]" * 50_000, content_type=JSON),  # deeper than json can parse
            Message(b"{}", content_type="application/x-unknown-to-kq"),
            Message(b"\x00" * 1000, content_type="application/json; charset=utf-16"),
        ]
        self.publish(driver, queue, *hostile)
        injected = self.inject_malformed(driver, queue)
        good = Message(b'"behind them"', content_type=JSON)
        self.publish(driver, queue, good)
        total = len(hostile) + injected + 1
        handler = Recording()
        loop = ConsumeLoop(
            driver,
            queue,
            handler,
            limits=Limits(messages=total, time=self.receive_timeout * 3),
            poll_interval=0.5,
        )
        reason = loop.run()  # must return, not raise
        assert loop.stats.received == total, reason
        assert good.message_id in handler.ids, "the good message behind the hostile ones was not consumed"
        dead_letter_queue = driver.queue(queue).dead_letter_queue
        with driver.consumer(dead_letter_queue) as consumer:
            dead = drain(consumer, idle=self.idle_timeout * 2)
        reasons = {d.message_id: d.headers.get(DEAD_LETTER_REASON) for d in dead}
        for message in hostile:
            assert reasons.get(message.message_id) == "undecodable", (message, reasons)
        assert len(dead) + loop.stats.consumed == total, "a message was lost or handled twice"
        assert all(reasons.values()), f"a dead letter has no reason: {reasons}"
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None

    def test_released_deliveries_do_not_make_a_message_poison(self, queue: str) -> None:
        """Deliveries handed out and released by close, never handled, do not get a message dead-lettered
        as poison by a loop with max_deliveries = 2, as far as the driver's count allows:

        - ``exact``: a release counts as one hand-out, no more; one receive-and-release makes the count
          2, which max_deliveries = 2 still lets run. (A second one would make it poison: an exact count
          cannot tell a release from a crash, so max_deliveries must exceed what worker stops release.)
        - ``receives``: every release may raise the count, so the loop does not apply max_deliveries at
          all; three rounds of releases, still handled.
        - ``flag``: the count stays at 2 however often it is released; three rounds, still handled.

        Each round, a consumer with prefetch 5 receives one message and closes, releasing it and
        whatever else it had prefetched.
        """
        with self.driver_with(queue, max_deliveries=2) as driver:
            exact = driver.capabilities_for(queue).delivery_count == "exact"
            sent = [Message(f'"{i}"'.encode()) for i in range(5)]
            self.publish(driver, queue, *sent)
            released: list[str] = []
            for _ in range(1 if exact else 3):
                consumer = driver.consumer(queue, prefetch=len(sent))
                try:
                    released.append(receive_within(consumer, self.receive_timeout).message_id)
                finally:
                    consumer.close()  # releases it, unhandled, with whatever else was prefetched
            log: list[Handling] = []
            loop = ConsumeLoop(
                driver,
                queue,
                Timed("loop", log),
                limits=Limits(messages=len(sent), time=self.receive_timeout * 3),
                poll_interval=0.2,
            )
            reason = loop.run()
            assert loop.stats.dead_lettered == 0, f"released messages were dead-lettered as poison ({reason})"
            assert sorted(h.message_id for h in log) == sorted(m.message_id for m in sent), reason
            if exact:
                counts = {h.message_id: h.delivery_count for h in log}
                assert counts[released[0]] == 2, f"one release made the exact count {counts[released[0]]}"
