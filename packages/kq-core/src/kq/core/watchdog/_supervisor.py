"""``kq watchdog run``: the foreground supervisor loop, with supervisord's restart states.

Each instance moves between these states:

- ``starting``: just started; if it exits within ``start_seconds`` that is a *quick exit*.
- ``running``: it outlived ``start_seconds`` (its quick-exit count is reset). When it exits — a worker
  reaching its ``-m``/``-t``/``-l`` limit exits 0 on purpose — it is restarted at once.
- ``backoff``: it exited quickly and waits ``backoff * 2**(n-1)`` seconds (at most ``max_backoff``)
  before the n-th restart.
- ``fatal``: ``max_retries`` quick exits in a row; it is not restarted until SIGHUP or a new supervisor.
- ``stopped``: not started yet.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import psutil

from kq.core._errors import WatchdogError
from kq.core.watchdog._control import ProcessControl
from kq.core.watchdog._model import RestartPolicy, StopOutcome, WorkerInstance
from kq.core.watchdog._procs import describe_status, find_workers, is_alive, uptime
from kq.core.watchdog._state import (
    remove_report,
    remove_status,
    report_path,
    status_path,
    write_status,
    write_stop_report,
)

# The watchdog's one logger (see _procs.py).
logger = logging.getLogger("kq.watchdog")

STARTING, RUNNING, BACKOFF, FATAL, STOPPED = "starting", "running", "backoff", "fatal", "stopped"


@dataclass
class _Slot:
    """What the supervisor knows about one instance."""

    instance: WorkerInstance
    state: str = STOPPED
    process: psutil.Process | None = None
    #: Set when this supervisor started the process: only then is its exit status known.
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_exits: int = 0
    next_start: float = 0.0
    last_status: int | None = None

    @property
    def label(self) -> str:
        return self.instance.label


class Supervisor:
    """The loop behind :meth:`Watchdog.run`; the caller holds the watchdog lock while it runs.

    Args:
        policy: When to look at the workers, and how to restart those that exit.
        control: Spawns and stops the workers (and logs and announces it).
        config_file: The configuration file the workers are started with and recognised by.
        instances: The worker instances to keep running.
        grace: Seconds each worker gets after SIGTERM when the supervisor stops.
    """

    def __init__(
        self,
        policy: RestartPolicy,
        control: ProcessControl,
        config_file: str,
        instances: Sequence[WorkerInstance],
        grace: float,
    ) -> None:
        self.policy = policy
        self.control = control
        self.grace = grace
        self.slots = [_Slot(instance) for instance in instances]
        self._stop_reason: str | None = None
        self._retry_fatal = False
        self._published: dict[str, dict[str, Any]] | None = None
        self._config_file = config_file
        self._status = status_path(config_file)
        self._report = report_path(config_file)

    def request_stop(self, reason: str) -> None:
        """Make the loop stop its workers and return (safe from a signal handler: it only sets flags)."""
        self._stop_reason = self._stop_reason or reason

    def states(self) -> dict[str, dict[str, Any]]:
        """Per label: state, pid, quick exits in a row, last exit status."""
        return {
            slot.label: {
                "state": slot.state,
                "pid": slot.process.pid if slot.process else None,
                "quick_exits": slot.quick_exits,
                "last_status": slot.last_status,
            }
            for slot in self.slots
        }

    def run(self) -> None:
        """Adopt, start, watch and restart until asked to stop; then stop every worker."""
        logger.info(
            "kq watchdog run supervises %d worker processes of %s", len(self.slots), self._config_file
        )
        # A report left by an earlier supervisor must not be taken for this one's.
        remove_report(self._report)
        with self._signals():
            try:
                self._adopt()
                while self._stop_reason is None:
                    self._tick(time.monotonic())
                    self._publish()
                    self._sleep(self.policy.poll_interval)
                logger.info("kq watchdog run: %s; stopping the workers", self._stop_reason)
            finally:
                stopped = self._stop_all()
                self._report_stopped(stopped)
                remove_status(self._status)
        logger.info("kq watchdog run: every worker stopped")

    def _adopt(self) -> None:
        """Take over workers already running (from cron's ``start`` or a supervisor that crashed)."""
        found = find_workers(self._config_file)
        now = time.monotonic()
        for slot in self.slots:
            processes = found.get(slot.label)
            if not processes:
                continue
            slot.process = processes[0]
            age = uptime(processes[0]) or 0.0
            slot.started = now - age
            slot.state = RUNNING if age >= self.policy.start_seconds else STARTING
            logger.info("adopted worker %s (pid %s), up %.0fs", slot.label, processes[0].pid, age)
            if len(processes) > 1:
                logger.warning(
                    "worker %s runs %d times (pids %s); only pid %s is supervised",
                    slot.label,
                    len(processes),
                    ", ".join(str(p.pid) for p in processes),
                    processes[0].pid,
                )

    def _tick(self, now: float) -> None:
        retry = self._retry_fatal
        self._retry_fatal = False
        for slot in self.slots:
            if slot.process is not None:
                exited, status = self._poll(slot)
                if not exited:
                    if slot.state == STARTING and now - slot.started >= self.policy.start_seconds:
                        slot.state, slot.quick_exits = RUNNING, 0
                    continue
                self._exited(slot, status, now)
            if slot.state == FATAL and retry:
                logger.info("worker %s: SIGHUP received, trying it again", slot.label)
                slot.state, slot.quick_exits, slot.next_start = STOPPED, 0, now
            if slot.state in (BACKOFF, STOPPED) and now >= slot.next_start:
                self._start(slot, now)

    def _poll(self, slot: _Slot) -> tuple[bool, int | None]:
        """Whether the slot's process exited, and its status when this supervisor is its parent."""
        if slot.popen is not None:
            status = slot.popen.poll()  # also reaps it: no zombie left behind
            return status is not None, status
        return slot.process is None or not is_alive(slot.process), None

    def _exited(self, slot: _Slot, status: int | None, now: float) -> None:
        lived = now - slot.started
        pid = slot.process.pid if slot.process else None
        slot.process, slot.popen, slot.last_status = None, None, status
        # An exit is noticed at the next poll: the time is an upper bound, hence "within" for quick ones.
        what = f"worker {slot.label} (pid {pid}) exited with {describe_status(status)}"
        if slot.state == RUNNING:
            what += f" after {lived:.0f}s"
            slot.quick_exits = 0
            slot.state, slot.next_start = BACKOFF, now
            log = logger.info if status == 0 else logger.warning
            log("%s; restarting it", what)
            return
        self._quick_exit(slot, now, f"{what} within {lived:.1f}s of starting")

    def _quick_exit(self, slot: _Slot, now: float, what: str) -> None:
        slot.quick_exits += 1
        policy = self.policy
        if slot.quick_exits >= policy.max_retries:
            slot.state = FATAL
            logger.error(
                "%s: %d quick exits in a row; worker %s is FATAL and will not be restarted (fix it, then "
                "send SIGHUP to pid %s or restart the watchdog); see %s",
                what,
                slot.quick_exits,
                slot.label,
                os.getpid(),
                slot.instance.log,
            )
            return
        delay = policy.delay(slot.quick_exits)
        slot.state, slot.next_start = BACKOFF, now + delay
        logger.warning(
            "%s (quick exit %d of %d); restarting it in %gs; see %s",
            what,
            slot.quick_exits,
            policy.max_retries,
            delay,
            slot.instance.log,
        )

    def _start(self, slot: _Slot, now: float) -> None:
        slot.started, slot.state = now, STARTING
        try:
            popen = self.control.spawn(slot.instance)
            process = psutil.Process(popen.pid)
        except (OSError, psutil.Error, WatchdogError) as exc:
            # WatchdogError: kq-cli went missing since `run` checked for it; retried like any failed start.
            self._quick_exit(slot, now, f"worker {slot.label} cannot be started ({exc})")
            return
        slot.popen, slot.process = popen, process
        self.control.announce_start(slot.instance, popen.pid)

    def _stop_all(self) -> list[StopOutcome]:
        """Stop the supervised workers, and any other process that carries one of their labels."""
        labels = {slot.label for slot in self.slots}
        found = find_workers(self._config_file)
        targets = [(label, p) for label, processes in found.items() if label in labels for p in processes]
        popens = [slot.popen for slot in self.slots if slot.popen is not None]

        def reap() -> None:
            for popen in popens:
                popen.poll()

        stopped = self.control.stop_workers(targets, self.grace, reap)
        for slot in self.slots:
            slot.process, slot.popen, slot.state = None, None, STOPPED
        return stopped

    def _report_stopped(self, stopped: Sequence[StopOutcome]) -> None:
        """Leave the list of stopped workers for a ``kq watchdog stop`` waiting for the lock."""
        try:
            write_stop_report(
                self._report, self._stop_reason or "error", [outcome.as_dict() for outcome in stopped]
            )
        except OSError as exc:
            logger.warning(
                "cannot write %s (the workers stopped, for kq watchdog stop): %s", self._report, exc
            )

    def _publish(self) -> None:
        """Write the status file when a state changed, for ``kq watchdog check`` in other processes."""
        states = self.states()
        if states != self._published:
            write_status(self._status, states)
            self._published = states

    def _sleep(self, seconds: float) -> None:
        # Short slices: a stop request (a flag set by a signal handler) is acted on within 50 ms.
        deadline = time.monotonic() + seconds
        while self._stop_reason is None and not self._retry_fatal and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT stop the supervisor, SIGHUP retries FATAL workers (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum: int, frame: FrameType | None) -> None:
            self.request_stop(f"received {signal.Signals(signum).name}")

        def retry(signum: int, frame: FrameType | None) -> None:
            self._retry_fatal = True

        previous = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, stop),
            signal.SIGINT: signal.signal(signal.SIGINT, stop),
            signal.SIGHUP: signal.signal(signal.SIGHUP, retry),
        }
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
