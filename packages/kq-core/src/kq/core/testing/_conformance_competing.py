"""Competing consumers (part of :class:`~kq.core.testing.BasicConformance`): several consumers, in
threads and in separate processes, drain one queue; each message is handled once, and the message of a
consumer killed while handling it goes to another.

"Once" holds while leases hold: on a driver with leases, a handler slower than its lease rightly loses
the message to another consumer, so a second handling counts as a fault only when both handlers still
held their lease when they acknowledged (``Delivery.lease_expires``). The handlers here take
microseconds, far less than any lease.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from kq.core._driver import Driver
from kq.core._driver_consumer import Consumer
from kq.core._message import Message
from kq.core._registry import load_driver_class
from kq.core._spec import DriverSpec, QueueSpec
from kq.core.testing._conformance_base import DriverTestBase, requires
from kq.core.testing._helpers import receive_within, wait_for


@dataclass(frozen=True)
class Handled:
    """One message received and acknowledged by a competing consumer."""

    message_id: str
    worker: str
    delivery_count: int
    #: Whether its lease still held when the consumer acknowledged it (always, without leases).
    held: bool


def _handled(message_id: str, worker: str, count: int, lease_expires: float | None) -> Handled:
    return Handled(message_id, worker, count, lease_expires is None or time.monotonic() < lease_expires)


def check_handled_once(sent: Sequence[str], handled: Sequence[Handled], *, victim: str | None = None) -> None:
    """Assert that every id of ``sent`` was handled, none twice by holders of a valid lease, nothing
    else was handled, and ``victim`` (a crashed consumer's message) came back redelivered."""
    by_id: dict[str, list[Handled]] = defaultdict(list)
    for item in handled:
        by_id[item.message_id].append(item)
    lost = [message_id for message_id in sent if message_id not in by_id]
    assert not lost, f"{len(lost)} of {len(sent)} messages were never handled, e.g. {lost[:3]}"
    unknown = sorted(set(by_id) - set(sent))
    assert not unknown, f"messages that were never published were handled: {unknown[:3]}"
    twice = {
        message_id: [f"{h.worker} (count {h.delivery_count})" for h in items]
        for message_id, items in by_id.items()
        if sum(1 for h in items if h.held) > 1
    }
    assert not twice, (
        f"{len(twice)} messages were handed to two consumers at once (both held a valid lease when they "
        f"acknowledged), e.g. {dict(list(twice.items())[:3])}"
    )
    if victim is not None:
        counts = [h.delivery_count for h in by_id[victim]]
        assert max(counts) >= 2, f"the crashed consumer's message came back with delivery counts {counts}"


class CompetingConsumerTests(DriverTestBase):
    """Competing consumers on one queue; the process variant needs ``cross_process``."""

    #: Messages the competing consumers drain.
    competing_messages: ClassVar[int] = 300
    #: Consumers (threads, or processes) competing for them, besides the one that crashes.
    competing_consumers: ClassVar[int] = 3

    def test_competing_consumers_in_threads_handle_each_message_once(
        self, driver: Driver, queue: str
    ) -> None:
        """Consumers in threads drain a queue: each message handled once, nothing lost; the message of
        a consumer that crashed while holding it is redelivered to one of the others."""
        sent = [Message(f'"{i}"'.encode()) for i in range(self.competing_messages)]
        self.publish(driver, queue, *sent)
        victim = driver.consumer(queue)
        held = receive_within(victim, self.receive_timeout)
        handled: list[Handled] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        done = threading.Event()
        deadline = time.monotonic() + self.receive_timeout * 2 + self.redelivery_timeout

        def compete(worker: str) -> None:
            try:
                with driver.consumer(queue) as consumer:
                    while not done.is_set() and time.monotonic() < deadline:
                        delivery = consumer.receive(0.1)
                        if delivery is None:
                            continue
                        item = _handled(
                            delivery.message_id, worker, delivery.delivery_count, delivery.lease_expires
                        )
                        consumer.ack(delivery)
                        with lock:
                            handled.append(item)
                            if len({h.message_id for h in handled}) >= len(sent):
                                done.set()
            except BaseException as exc:  # reported by the test, not lost in a thread
                errors.append(exc)
                done.set()

        threads = [
            threading.Thread(target=compete, args=(f"thread-{n}",), daemon=True)
            for n in range(self.competing_consumers)
        ]
        for thread in threads:
            thread.start()
        self.crash_consumer(victim)  # while it holds a message
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 5.0)
        done.set()
        assert not errors, f"a competing consumer failed: {errors[0]!r}"
        assert not any(thread.is_alive() for thread in threads), "a competing consumer did not stop"
        check_handled_once([m.message_id for m in sent], handled, victim=held.message_id)
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None, "a message came back after all were handled"

    @requires(lambda caps: caps.cross_process, "cross_process=True (consumers in other processes)")
    def test_competing_consumer_processes_handle_each_message_once(
        self, driver: Driver, queue: str, tmp_path: Path
    ) -> None:
        """Consumers in separate processes drain a queue: each message handled once, nothing lost; the
        message of a consumer process killed (SIGKILL) while holding it is redelivered to another.

        The processes build the driver through its entry point from :meth:`driver_spec` and
        :meth:`make_queue`.
        """
        sent = [Message(f'"{i}"'.encode()) for i in range(self.competing_messages)]
        timeout = self.receive_timeout * 3 + self.redelivery_timeout
        processes: list[_ConsumerProcess] = []
        try:
            victim = _ConsumerProcess.start(self, queue, tmp_path, "victim", timeout)
            processes.append(victim)
            for n in range(self.competing_consumers):
                processes.append(_ConsumerProcess.start(self, queue, tmp_path, f"process-{n}", timeout))
            for process in processes:
                wait_for(process.ready, timeout=self.receive_timeout * 2, message=f"{process.name} started")
            self.publish(driver, queue, *sent)
            got = wait_for(victim.received, timeout=self.receive_timeout, message="the victim got a message")
            victim.process.kill()  # SIGKILL while it holds the message: no ack, no release
            victim.process.wait(timeout=10)
            (tmp_path / "go").touch()
            workers = processes[1:]

            def finished() -> bool:
                return len({h.message_id for w in workers for h in w.handled()}) >= len(sent)

            wait_for(finished, timeout=timeout, interval=0.2, message="every message handled")
            (tmp_path / "stop").touch()
            for worker in workers:
                code = worker.process.wait(timeout=self.receive_timeout)
                assert code == 0, f"{worker.name} exited with {code}: {worker.errors()}"
            check_handled_once(
                [m.message_id for m in sent], [h for w in workers for h in w.handled()], victim=got
            )
        finally:
            for process in processes:
                process.reap()
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None, "a message came back after all were handled"


class _ConsumerProcess:
    """A consumer in a child process (``python -c``), reporting through files in a folder."""

    def __init__(self, name: str, folder: Path, process: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.log = folder / f"{name}.log"
        self.stderr = folder / f"{name}.err"
        self.process = process

    @classmethod
    def start(
        cls, test: DriverTestBase, queue: str, folder: Path, name: str, timeout: float
    ) -> _ConsumerProcess:
        role = "victim" if name == "victim" else "worker"
        arguments = {
            "driver": test.driver_spec(),
            "queue": test.make_queue(queue),
            "role": role,
            "name": name,
            "folder": str(folder),
            "timeout": timeout,
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        with (folder / f"{name}.err").open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-c", _CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
            )
        assert process.stdin is not None
        process.stdin.write(pickle.dumps(arguments))
        process.stdin.close()
        return cls(name, folder, process)

    def _lines(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines()]

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}: {self.errors()}")
        return any(words == ["ready"] for words in self._lines())

    def received(self) -> str | None:
        for words in self._lines():
            if words[0] == "got":
                return words[1]
        return None

    def handled(self) -> list[Handled]:
        return [
            Handled(words[1], self.name, int(words[2]), words[3] == "held")
            for words in self._lines()
            if words[0] == "done"
        ]

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")[-2000:] if self.stderr.exists() else ""

    def reap(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


_CHILD = "from kq.core.testing._conformance_competing import consumer_process; consumer_process()"


def consumer_process() -> None:
    """The body of a competing consumer process: arguments pickled on stdin (see _ConsumerProcess)."""
    arguments: dict[str, Any] = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - from our parent
    spec: DriverSpec = arguments["driver"]
    queue: QueueSpec = arguments["queue"]
    folder = Path(arguments["folder"])
    deadline = time.monotonic() + float(arguments["timeout"])
    log = folder / f"{arguments['name']}.log"

    def write(*words: object) -> None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (" ".join(map(str, words)) + "\n").encode())
        finally:
            os.close(fd)

    driver = load_driver_class(spec.type)(spec, [queue])
    try:
        with driver.consumer(queue.name) as consumer:
            write("ready")
            if arguments["role"] == "victim":
                delivery = receive_within(consumer, max(0.0, deadline - time.monotonic()))
                write("got", delivery.message_id, delivery.delivery_count)
                time.sleep(max(0.0, deadline - time.monotonic()))  # killed before it settles
                return
            while not (folder / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            _compete(consumer, arguments["name"], folder / "stop", deadline, write)
    finally:
        driver.close()


def _compete(consumer: Consumer, name: str, stop: Path, deadline: float, write: Callable[..., None]) -> None:
    while not stop.exists() and time.monotonic() < deadline:
        delivery = consumer.receive(0.1)
        if delivery is None:
            continue
        item = _handled(delivery.message_id, name, delivery.delivery_count, delivery.lease_expires)
        consumer.ack(delivery)
        write("done", item.message_id, item.delivery_count, "held" if item.held else "lapsed")
