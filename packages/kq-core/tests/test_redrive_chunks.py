"""Re-drive at scale (issue 11): batch settlement, bounded chunks on drivers with leases, lost leases and
partial publishes.

The drivers here are the memory driver with a cost or a fault added (what SQS does to re-drive, without
SQS): receiving and extending that take time, a lease that lapses, a batch publish that stops part-way.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kq.core import (
    App,
    Delivery,
    Handler,
    LeaseLostError,
    Limits,
    Message,
    PublishError,
    parse_config,
    remove_dead_letters,
    retry_dead_letters,
    show_dead_letters,
)
from kq.core import _app as app_module
from kq.core._message import DEAD_LETTER_QUEUE, DEAD_LETTER_REASON
from kq.core._signing import NONCE
from kq.core.driver import Consumer, DriverSpec, QueueSpec
from kq.core.plugins import load_driver_class
from kq.drivers.memory import MemoryDriver
from kq.drivers.memory._driver import MemoryConsumer, MemoryProducer

IDLE = 0.05


# --- drivers with a cost or a fault ------------------------------------------------------------------------


class SlowConsumer(MemoryConsumer):
    """Each receive and each extension takes time, as an HTTP call to SQS does."""

    def _receive(self, timeout: float) -> Delivery | None:
        time.sleep(SlowDriver.receive_cost)
        return super()._receive(timeout)

    def _extend(self, delivery: Delivery, seconds: float) -> None:
        time.sleep(SlowDriver.extend_cost)
        super()._extend(delivery, seconds)


class SlowDriver(MemoryDriver):
    receive_cost: ClassVar[float] = 0.001
    extend_cost: ClassVar[float] = 0.004

    def _create_consumer(self, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int) -> Consumer:
        return SlowConsumer(self, queue, routing_keys, prefetch)


class LosingConsumer(SlowConsumer):
    """The first extension of message ``LosingDriver.victim`` finds its lease lapsed: the message is back
    in the queue (for whoever receives it next), and the driver says so."""

    def _extend(self, delivery: Delivery, seconds: float) -> None:
        if delivery.message_id == LosingDriver.victim and not LosingDriver.lost:
            LosingDriver.lost.append(delivery.message_id)
            with self._store.condition:
                queue = self._store.queue(self.queue.name)
                entry, _ = queue.in_flight.pop(delivery.handle)
                self._store.insert(queue, entry)
                self._store.condition.notify_all()
            raise LeaseLostError(f"the lease of message {delivery.message_id} had lapsed", [delivery])
        super()._extend(delivery, seconds)


class LosingDriver(SlowDriver):
    victim: ClassVar[str] = ""
    lost: ClassVar[list[str]] = []

    def _create_consumer(self, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int) -> Consumer:
        return LosingConsumer(self, queue, routing_keys, prefetch)


class PartialProducer(MemoryProducer):
    """Publishes the first ``PartialDriver.first`` messages of a batch to a queue other than a dead-letter
    queue, then stops, as an SQS batch whose second call fails does."""

    def _send_batch(self, messages: Sequence[Message]) -> None:
        if self.queue.name.endswith(".failed") or PartialDriver.first is None:
            super()._send_batch(messages)
            return
        went, rest = messages[: PartialDriver.first], messages[PartialDriver.first :]
        super()._send_batch(went)
        if rest:
            raise PublishError(
                f"{len(rest)} of {len(messages)} messages were not published",
                published=[m.message_id for m in went],
                failed=[m.message_id for m in rest],
            )


class PartialDriver(MemoryDriver):
    first: ClassVar[int | None] = None

    def _create_producer(self, queue: QueueSpec) -> MemoryProducer:
        return PartialProducer(self, queue)


DRIVERS: dict[str, type[MemoryDriver]] = {
    "slow": SlowDriver,
    "losing": LosingDriver,
    "partial": PartialDriver,
}


@pytest.fixture(autouse=True)
def _drivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(
        app_module, "load_driver_class", lambda name: DRIVERS.get(name) or load_driver_class(name)
    )
    MemoryDriver.reset()
    LosingDriver.lost = []
    PartialDriver.first = None
    yield
    MemoryDriver.reset()


def make_app(tmp_path: Path, kind: str, **options: Any) -> App:
    driver: dict[str, Any] = {"type": kind, **options}
    if kind == "sqlite":
        driver["path"] = "queues.sqlite3"
    config = parse_config(
        {"default_driver": "d", "drivers": {"d": driver}, "queues": {"jobs": {"consumer": "noop"}}},
        source="kq.toml",
        root=str(tmp_path),
    )
    return App(config)


def fill(app: App, count: int, *, start: int = 0) -> list[str]:
    """Put ``count`` dead letters of queue jobs (signed for it, as the loop leaves them) in jobs.failed."""
    messages = [
        _dead(app.signer.sign(Message(f'{{"n": {start + n}}}'.encode()), "jobs")) for n in range(count)
    ]
    producer = app.driver().producer("jobs.failed")
    for first in range(0, count, 100):
        producer.send_batch(messages[first : first + 100])
    return [m.message_id for m in messages]


def _dead(message: Message) -> Message:
    headers = {**message.headers, DEAD_LETTER_QUEUE: "jobs", DEAD_LETTER_REASON: "failed"}
    return Message(message.body, headers=headers, message_id=message.message_id)


def waiting(app: App, queue: str) -> list[Delivery]:
    """Every delivery waiting in ``queue``, released again afterwards.

    Browsed through a second instance of the same driver with a long lease: with the tests' short
    leases, a slow browse on a loaded machine would see messages again whose lease lapsed meanwhile.
    """
    driver = app.driver()
    spec = DriverSpec(
        name=driver.name,
        type="browser",
        options={**driver.options, "visibility_timeout": 600.0},
        source=driver.source,
        root=driver.root,
    )
    with type(driver)(spec) as browser, browser.consumer(queue, prefetch=10_000) as consumer:
        found: list[Delivery] = []
        while (delivery := consumer.receive(IDLE)) is not None:
            found.append(delivery)
        return found


def ids_waiting(app: App, queue: str) -> list[str]:
    return [d.message_id for d in waiting(app, queue)]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often each settlement method of the consumer was called (and for how many deliveries)."""
    counted: Counter[str] = Counter()
    for name in ("ack", "ack_many", "extend", "extend_many"):
        real = getattr(Consumer, name)

        def wrapper(self: Consumer, *args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            counted[_name] += 1
            if _name.endswith("_many"):
                counted[_name + " deliveries"] += len(args[0])
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(Consumer, name, wrapper)
    return counted


def lapse_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and ("lapsed" in r.getMessage() or "could not keep" in r.getMessage())
    ]


# --- batch settlement -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_retry_and_remove_acknowledge_in_batches(tmp_path: Path, kind: str, calls: Counter[str]) -> None:
    with make_app(tmp_path, kind) as app:
        ids = fill(app, 250)
        result = retry_dead_letters(app, "jobs", idle=IDLE)
        assert result.done == tuple(ids)
        assert result.ok
        assert calls["ack"] == 0
        assert calls["ack_many deliveries"] == 250
        assert calls["ack_many"] <= 3
        assert ids_waiting(app, "jobs.failed") == []
        assert sorted(ids_waiting(app, "jobs")) == sorted(ids)

        calls.clear()
        more = fill(app, 250, start=250)
        assert remove_dead_letters(app, "jobs", idle=IDLE).done == tuple(more)
        assert calls["ack"] == 0
        assert calls["ack_many"] <= 3
        assert ids_waiting(app, "jobs.failed") == []


# --- bounded chunks on drivers with leases --------------------------------------------------------------


def test_slow_leases_never_lapse_while_retrying(
    tmp_path: Path, calls: Counter[str], caplog: pytest.LogCaptureFixture
) -> None:
    """On a driver where each extension costs 4 ms and the lease is 0.3 s, extending more than 25
    deliveries takes longer than a third of the lease. Holding all 200 dead letters (as re-drive did),
    leases lapse mid-browse: messages were seen twice, or acknowledged after another consumer could
    have taken them."""
    with make_app(tmp_path, "slow", visibility_timeout=0.3) as app:
        ids = fill(app, 200)
        result = retry_dead_letters(app, "jobs", idle=IDLE)
        assert result.ok, result.failed
        assert result.done == tuple(ids)
        assert lapse_warnings(caplog) == []
        assert calls["extend"] == 0
        assert ids_waiting(app, "jobs.failed") == []
        assert Counter(ids_waiting(app, "jobs")) == Counter(ids)  # each exactly once


def test_slow_leases_never_lapse_while_showing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """show holds what it looked at until the end: it looks at no more than it can keep reserved."""
    with make_app(tmp_path, "slow", visibility_timeout=0.3) as app:
        ids = fill(app, 200)
        shown = [item["message_id"] for item in show_dead_letters(app, "jobs", idle=IDLE)]
        assert lapse_warnings(caplog) == []
        assert len(set(shown)) == len(shown)  # none seen twice
        assert shown == ids[: len(shown)]
        assert any("kept reserved at once" in r.getMessage() for r in caplog.records)
        assert ids_waiting(app, "jobs.failed") == ids  # all given back


def test_retry_by_id_across_chunks_leaves_the_others(tmp_path: Path) -> None:
    with make_app(tmp_path, "memory") as app:
        ids = fill(app, 250)
        wanted = [ids[230], ids[5], ids[150], "nope"]
        result = retry_dead_letters(app, "jobs", wanted, idle=IDLE)
        assert result.done == (ids[5], ids[150], ids[230])
        assert result.missing == ("nope",)
        assert ids_waiting(app, "jobs.failed") == [i for i in ids if i not in wanted]
        assert sorted(ids_waiting(app, "jobs")) == sorted(wanted[:3])


def test_limit_across_chunks(tmp_path: Path) -> None:
    with make_app(tmp_path, "memory") as app:
        ids = fill(app, 250)
        assert remove_dead_letters(app, "jobs", idle=IDLE, limit=120).done == tuple(ids[:120])
        assert ids_waiting(app, "jobs.failed") == ids[120:]
        assert [i["message_id"] for i in show_dead_letters(app, "jobs", idle=IDLE, limit=110)] == ids[120:230]


def test_copies_of_one_message_in_different_chunks_go_back_once(tmp_path: Path) -> None:
    with make_app(tmp_path, "memory") as app:
        ids = fill(app, 150)
        [copy] = [d for d in waiting(app, "jobs.failed") if d.message_id == ids[3]]
        app.driver().producer("jobs.failed").send(copy.to_message())  # a duplicate, far behind
        result = retry_dead_letters(app, "jobs", idle=IDLE)
        assert result.done == tuple(ids)
        assert ids_waiting(app, "jobs.failed") == []
        assert Counter(ids_waiting(app, "jobs")) == Counter(ids)


class Failing(Handler):
    accepted_content_types = None

    def consume(self, body: Any, delivery: Delivery) -> Any:
        raise RuntimeError("still broken")


def test_a_message_failing_again_during_the_run_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks are published while the dead-letter queue is still being read: a worker may fail a copy and
    dead-letter it again before re-drive is done. Re-drive must not take that for an old duplicate
    (acknowledging it would lose it) nor queue it again (looping)."""
    with make_app(tmp_path, "memory") as app:
        ids = fill(app, 250)
        published: Counter[str] = Counter()
        real = MemoryProducer._send_batch

        def publish_and_fail(self: MemoryProducer, messages: Sequence[Message]) -> None:
            real(self, messages)
            if self.queue.name == "jobs":
                published.update(m.message_id for m in messages)
                loop = app.consume_loop("jobs", handler=Failing(), limits=Limits(messages=len(messages)))
                loop.run()

        monkeypatch.setattr(MemoryProducer, "_send_batch", publish_and_fail)
        result = retry_dead_letters(app, "jobs", idle=IDLE)
        assert result.done == tuple(ids)
        assert published == Counter(ids)  # each queued again once
        monkeypatch.undo()
        again = waiting(app, "jobs.failed")
        assert Counter(d.message_id for d in again) == Counter(ids)  # the new failures are all there
        assert all(d.headers[NONCE] for d in again)


# --- lost leases ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["retry", "remove"])
def test_a_message_whose_lease_was_lost_is_not_done(
    tmp_path: Path, action: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Receiving takes 15 ms here, so leases are extended while the 30 dead letters are read; the
    extension of one of them reports its lease lost. Acting on it anyway would queue again, or delete, a
    message someone else may hold (or that re-drive itself receives a second time)."""
    with make_app(tmp_path, "losing", visibility_timeout=0.3) as app:
        SlowDriver.receive_cost = 0.015
        try:
            ids = fill(app, 30)
            LosingDriver.victim = ids[2]
            run = retry_dead_letters if action == "retry" else remove_dead_letters
            result = run(app, "jobs", idle=IDLE)
        finally:
            SlowDriver.receive_cost = 0.001
        assert LosingDriver.lost == [ids[2]]
        assert ids[2] not in result.done
        assert "lease" in result.failed[ids[2]]
        assert result.done == tuple(i for i in ids if i != ids[2])
        assert ids_waiting(app, "jobs.failed") == [ids[2]]
        expected = [] if action == "remove" else sorted(result.done)
        assert sorted(ids_waiting(app, "jobs")) == expected


# --- partial publishes ----------------------------------------------------------------------------------


def test_a_partial_publish_acknowledges_what_went_and_no_more(tmp_path: Path) -> None:
    """Found in review (contract-review §1.1): a batch that failed part-way was all left in the dead-letter
    queue, so the next re-drive queued the messages that had gone through a second time."""
    with make_app(tmp_path, "partial") as app:
        ids = fill(app, 5)
        PartialDriver.first = 3
        result = retry_dead_letters(app, "jobs", idle=IDLE)
        assert result.done == tuple(ids[:3])
        assert set(result.failed) == set(ids[3:])
        assert result.failed[ids[3]].startswith("could not be queued again on jobs: PublishError: ")
        assert result.targets == dict.fromkeys(ids[:3], "jobs")
        assert ids_waiting(app, "jobs.failed") == ids[3:]

        PartialDriver.first = None
        assert retry_dead_letters(app, "jobs", idle=IDLE).done == tuple(ids[3:])
        assert Counter(ids_waiting(app, "jobs")) == Counter(ids)  # none twice


def test_a_publish_error_naming_nothing_leaves_everything(tmp_path: Path) -> None:
    with make_app(tmp_path, "partial") as app:
        ids = fill(app, 3)
        PartialDriver.first = 0
        result = retry_dead_letters(app, "jobs", idle=IDLE)
        assert result.done == ()
        assert set(result.failed) == set(ids)
        assert ids_waiting(app, "jobs.failed") == ids
