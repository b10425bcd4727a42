"""Re-drive tests (part of :class:`~kq.core.testing.ConsumeLoopConformance`): ``kq failed retry`` moves
every dead letter back to its queue exactly once, also past one republishing batch; on lease drivers
re-drive works in leased chunks (extended together, settled with ``ack_many``), so no lease lapses
mid-browse however many dead letters there are."""

from __future__ import annotations

from typing import ClassVar

from kq.core._app import App
from kq.core._config import Config, SigningSettings
from kq.core._driver import Driver
from kq.core._message import DEAD_LETTER_ERROR, DEAD_LETTER_QUEUE, DEAD_LETTER_REASON, Message
from kq.core._redrive import retry_dead_letters
from kq.core._redrive_retry import REPUBLISH_BATCH
from kq.core._signing import new_key
from kq.core._spec import DriverSpec, QueueSpec
from kq.core.testing._conformance_base import DriverTestBase
from kq.core.testing._helpers import drain


class _AppOn(App):
    """An application whose only driver instance is the one under test (as built by the test class)."""

    def __init__(self, driver: Driver, spec: DriverSpec, queue: QueueSpec) -> None:
        super().__init__(
            Config(
                default_driver=driver.name,
                drivers={driver.name: spec},
                queues={queue.name: queue},
                signing=SigningSettings(keys={"conformance": new_key()}),
            )
        )
        self._drivers[driver.name] = driver


class RedriveTests(DriverTestBase):
    """``retry_dead_letters`` on this driver, with more dead letters than one republishing batch."""

    #: Dead letters re-driven by the test (more than :data:`kq.core._redrive_retry.REPUBLISH_BATCH`).
    redrive_messages: ClassVar[int] = REPUBLISH_BATCH + 50

    def test_retry_failed_requeues_every_dead_letter_once(self, queue: str) -> None:
        """Dead letters past one republishing batch all go back to their queue once, without their
        dead-letter headers, and the dead-letter queue is left empty."""
        with self.driver_with(queue, require_signature=False) as driver:
            spec = driver.queue(queue)
            dead = [
                Message(
                    f'"dead {i}"'.encode(),
                    routing_key="dead.letter",
                    headers={
                        DEAD_LETTER_REASON: "failed",
                        DEAD_LETTER_QUEUE: queue,
                        DEAD_LETTER_ERROR: "RuntimeError: boom",
                        "x-n": str(i),
                    },
                )
                for i in range(self.redrive_messages)
            ]
            self.publish(driver, spec.dead_letter_queue, *dead)
            result = retry_dead_letters(
                _AppOn(driver, self.driver_spec(), spec), queue, idle=self.idle_timeout
            )
            failed = dict(list(result.failed.items())[:3])
            assert result.ok, f"missing: {list(result.missing)[:3]}, failed: {failed}"
            assert len(result.done) == len(dead), (
                f"retry_dead_letters re-drove {len(result.done)} of {len(dead)}"
            )
            assert sorted(result.done) == sorted(m.message_id for m in dead)
            with driver.consumer(queue) as consumer:
                back = drain(consumer, idle=self.idle_timeout)
            assert sorted(d.message_id for d in back) == sorted(m.message_id for m in dead), (
                f"{len(back)} messages back on the queue for {len(dead)} dead letters"
            )
            assert all(DEAD_LETTER_REASON not in d.headers for d in back), "dead-letter headers kept"
            assert sorted(int(d.headers["x-n"]) for d in back) == list(range(len(dead)))
            with driver.consumer(spec.dead_letter_queue) as consumer:
                left = consumer.receive(self.idle_timeout)
            assert left is None, f"{left!r} is still in the dead-letter queue"
