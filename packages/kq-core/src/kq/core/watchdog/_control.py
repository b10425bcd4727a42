"""Starting and stopping worker processes for the watchdog and its supervisor, logged and announced."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Sequence

import psutil

from kq.core._events import EventDispatcher, ProcessStarted, ProcessStopped
from kq.core.watchdog._model import StopOutcome, WorkerInstance, name_of
from kq.core.watchdog._procs import command_of, require_cli, spawn, terminate

# The watchdog's one logger (see _procs.py).
logger = logging.getLogger("kq.watchdog")


class ProcessControl:
    """Spawns and stops the workers of one configuration; each start and stop is logged and dispatched.

    Both :class:`~kq.core.watchdog.Watchdog` (``start``, ``stop``) and the ``run`` supervisor act on
    workers through it, so that they log and announce the same way without knowing each other.

    Args:
        dispatcher: Receives ``process_started`` and ``process_stopped`` events.
        workdir: Where workers run: the configuration's folder; ``None`` (a configuration parsed without
            a folder): the current directory when each worker is started.
    """

    def __init__(self, dispatcher: EventDispatcher, workdir: str | None) -> None:
        self.dispatcher = dispatcher
        self.workdir = workdir

    def spawn(self, instance: WorkerInstance) -> subprocess.Popen[bytes]:
        """Start one instance, detached, its output appended to its log.

        Raises:
            WatchdogError: kq-cli, whose ``kq consume`` the worker runs, is not installed.
            OSError: the process could not be started.
        """
        require_cli()
        env = dict(os.environ)
        # Python buffers a file-bound stdout: without this, "Stopped because: ..." and progress lines
        # would reach the log only when a buffer fills or the worker exits.
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(instance.spec.env)
        process = spawn(instance.command, instance.log, env, self.workdir or os.getcwd())
        logger.info(
            "started worker %s (pid %s) on queue %s; output in %s",
            instance.label,
            process.pid,
            instance.spec.queue,
            instance.log,
        )
        return process

    def announce_start(self, instance: WorkerInstance, pid: int) -> None:
        """Dispatch ``process_started`` for a worker that was started and is still running."""
        self.dispatcher.dispatch(ProcessStarted(pid=pid, command=instance.command, worker=instance.spec.name))

    def stop_workers(
        self,
        targets: Sequence[tuple[str, psutil.Process]],
        grace: float,
        reap: Callable[[], object] | None = None,
    ) -> list[StopOutcome]:
        """Stop ``(label, process)`` pairs (SIGTERM, SIGKILL after ``grace``), log and announce each.

        Args:
            targets: The workers to stop, with their labels.
            grace: Seconds they get to finish their current message after SIGTERM.
            reap: Called while waiting, by a caller whose children they are (see :func:`terminate`).
        """
        if not targets:
            return []
        commands = {process.pid: command_of(process) for _, process in targets}
        for label, process in targets:
            logger.info("stopping worker %s (pid %s): SIGTERM, SIGKILL after %gs", label, process.pid, grace)
        _, killed = terminate([process for _, process in targets], grace, reap)
        outcomes = []
        for label, process in targets:
            name = name_of(label)
            was_killed = process in killed
            how = "killed with SIGKILL" if was_killed else "exited after SIGTERM"
            logger.info("stopped worker %s (pid %s): %s", label, process.pid, how)
            self.dispatcher.dispatch(
                ProcessStopped(pid=process.pid, command=commands[process.pid], worker=name)
            )
            outcomes.append(StopOutcome(name, label, process.pid, was_killed))
        return outcomes
