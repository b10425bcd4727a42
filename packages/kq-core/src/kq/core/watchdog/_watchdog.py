"""The :class:`Watchdog`: start, stop, check and supervise the ``[workers.<name>]`` of a configuration."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from kq.core._config import Config, WorkerSpec
from kq.core._errors import ConfigError, WatchdogError
from kq.core._events import EventDispatcher
from kq.core.watchdog._control import ProcessControl
from kq.core.watchdog._model import (
    LABEL_PATTERN,
    RestartPolicy,
    StartOutcome,
    StopOutcome,
    WorkerInstance,
    name_of,
)
from kq.core.watchdog._procs import find_workers, is_alive, require_cli, worker_command
from kq.core.watchdog._render import instance_row, stray_row
from kq.core.watchdog._state import (
    exclusive,
    read_status,
    read_stop_report,
    remove_report,
    report_path,
    status_path,
)
from kq.core.watchdog._supervisor import Supervisor

# The watchdog's one logger (see _procs.py).
logger = logging.getLogger("kq.watchdog")

#: Where a worker's output goes when its ``log`` is not set, relative to the configuration's folder.
DEFAULT_LOG = ".kq/logs/{label}.log"

#: How a worker stopped, by ``StopOutcome.killed``, for the log.
_HOW = {True: "killed with SIGKILL", False: "exited after SIGTERM", None: "how is not known"}


class Watchdog:
    """Starts, stops, checks and supervises the worker processes of one configuration file.

    Args:
        config: The configuration; its workers are ``config.workers``, and it must come from a file,
            which the workers are started with (``--config``) and recognised by.
        dispatcher: Receives ``process_started`` and ``process_stopped`` events.
        start_wait: Seconds ``start`` waits after starting workers; one that exited by then failed.
        poll_interval: Seconds between two looks at the workers in ``run``.
        start_seconds: In ``run``, a worker that exits within this many seconds of starting exited
            "at once" (supervisord's ``startsecs``); one that lived longer is simply restarted.
        max_retries: In ``run``, after this many quick exits in a row a worker is FATAL: not restarted
            until the supervisor gets SIGHUP or is restarted.
        backoff: Delay before the first restart after a quick exit; it doubles with each further one.
        max_backoff: The longest delay between two restarts.
        lock_wait: Seconds to wait for another watchdog command of the same configuration to finish.

    Attributes:
        policy: The five ``run`` settings above (``poll_interval`` to ``max_backoff``) as one value.
        control: Spawns and stops the workers, for ``start``, ``stop`` and the ``run`` supervisor.
    """

    def __init__(
        self,
        config: Config,
        dispatcher: EventDispatcher | None = None,
        *,
        start_wait: float = 1.0,
        poll_interval: float = 1.0,
        start_seconds: float = 3.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        lock_wait: float = 10.0,
    ) -> None:
        self.config = config
        self.dispatcher = dispatcher or EventDispatcher()
        self.start_wait = start_wait
        self.policy = RestartPolicy(poll_interval, start_seconds, max_retries, backoff, max_backoff)
        self.lock_wait = lock_wait
        self.control = ProcessControl(self.dispatcher, config.root)
        self._supervisor: Supervisor | None = None

    @property
    def config_file(self) -> str | None:
        """The absolute path of the configuration file (``None`` for the built-in defaults)."""
        if self.config.source is None:
            return None
        # A [tool.kq] table is loaded from pyproject.toml, which `kq --config` accepts as well.
        return os.path.abspath(self.config.path or self.config.source.removesuffix(" [tool.kq]"))

    @property
    def workdir(self) -> str:
        """Where workers run and relative paths start: the configuration's folder."""
        return self.config.root or os.getcwd()

    def instances(self) -> list[WorkerInstance]:
        """Every configured worker instance, in configuration order."""
        config_file = self.config_file
        if config_file is None:
            return []
        return [
            WorkerInstance(
                spec, label, tuple(worker_command(config_file, spec, label)), self._log(spec, label)
            )
            for spec in self.config.workers.values()
            for label in spec.labels()
        ]

    def _log(self, spec: WorkerSpec, label: str) -> Path:
        # "{label}" / "{name}" let instances of one worker write separate files; without them they share.
        name = (spec.log or DEFAULT_LOG).replace("{label}", label).replace("{name}", spec.name)
        return Path(self.workdir) / Path(name).expanduser()

    def start(self) -> list[StartOutcome]:
        """Start every instance that is not running, and report on all of them.

        Raises:
            WatchdogError: another watchdog command of this configuration kept the lock too long, or
                kq-cli, whose ``kq consume`` the workers run, is not installed.
        """
        instances = self._instances_for("start")
        if not instances:
            return []
        with exclusive(self._require_file(), "start", self.lock_wait) as supervised_by:
            if supervised_by is not None:
                logger.info(
                    "kq watchdog run (pid %s) supervises the workers of %s; nothing to start",
                    supervised_by,
                    self.config_file,
                )
                return []
            running = find_workers(self._require_file())
            self._warn_strays(running)
            outcomes: dict[str, StartOutcome] = {}
            spawned: list[tuple[WorkerInstance, subprocess.Popen[bytes]]] = []
            for instance in instances:
                found = running.get(instance.label, [])
                if found:
                    outcomes[instance.label] = self._already_running(instance, found)
                    continue
                try:
                    spawned.append((instance, self.control.spawn(instance)))
                except OSError as exc:
                    outcomes[instance.label] = self._failed(instance, None, f"cannot be started: {exc}")
            if spawned:
                # The PHP watchdog's "Process terminated immediately": a worker that cannot even start
                # (bad queue, bad option, broken driver) exits within a second; say so now, not never.
                time.sleep(self.start_wait)
                outcomes.update(self._confirm_all(spawned))
        return [outcomes[instance.label] for instance in instances]

    def _confirm_all(
        self, spawned: list[tuple[WorkerInstance, subprocess.Popen[bytes]]]
    ) -> dict[str, StartOutcome]:
        outcomes = {instance.label: self._confirm(instance, process) for instance, process in spawned}
        # The workers are meant to outlive their Popen handles (and this process). Dropping the last
        # references here, with the warning off, lets Popen hand the survivors to subprocess's own
        # reaper instead of warning "subprocess N is still running" when they are garbage-collected.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            spawned.clear()
        return outcomes

    def _already_running(self, instance: WorkerInstance, found: Sequence[psutil.Process]) -> StartOutcome:
        logger.debug("worker %s is running (pid %s)", instance.label, found[0].pid)
        if len(found) > 1:
            logger.warning(
                "worker %s runs %d times (pids %s); `kq watchdog stop` stops them all",
                instance.label,
                len(found),
                ", ".join(str(p.pid) for p in found),
            )
        return StartOutcome(instance.spec.name, instance.label, "running", found[0].pid, str(instance.log))

    def _confirm(self, instance: WorkerInstance, process: subprocess.Popen[bytes]) -> StartOutcome:
        status = process.poll()
        if status is not None:
            return self._failed(instance, process.pid, f"exited at once with status {status}")
        self.control.announce_start(instance, process.pid)
        return StartOutcome(instance.spec.name, instance.label, "started", process.pid, str(instance.log))

    def _failed(self, instance: WorkerInstance, pid: int | None, what: str) -> StartOutcome:
        error = f"worker {instance.label} {what}; see {instance.log}"
        logger.error("%s", error)
        return StartOutcome(instance.spec.name, instance.label, "failed", pid, str(instance.log), error)

    def stop(self, grace: float = 10.0) -> list[StopOutcome]:
        """Stop every worker of this configuration: SIGTERM, then SIGKILL after ``grace`` seconds.

        A ``run`` supervisor of the same configuration is asked to stop first (it would restart them);
        it stops its workers itself, and the outcomes it reports are returned with its pid as
        ``supervisor``. Unconfigured leftovers with a watchdog label (``<name>-<n>``) are stopped too.

        Raises:
            WatchdogError: another watchdog command kept the lock, or a supervisor did not stop.
        """
        config_file = self.config_file
        if config_file is None:
            logger.warning("no configuration file, hence no workers to stop")
            return []
        # What runs before a supervisor is asked to stop: if it leaves no report, this is what it had.
        before = self._stop_targets(find_workers(config_file))
        asked_at = time.time()
        with exclusive(self._require_file(), "stop", self.lock_wait, supervisor_grace=grace) as supervisor:
            outcomes = [] if supervisor is None else self._stopped_by(supervisor, asked_at, before)
            # A supervisor stops the labels it supervises; unconfigured leftovers are ours to stop.
            return outcomes + self.control.stop_workers(self._stop_targets(find_workers(config_file)), grace)

    def _stop_targets(self, found: dict[str, list[psutil.Process]]) -> list[tuple[str, psutil.Process]]:
        """The ``(label, process)`` pairs ``stop`` stops: configured labels and watchdog-style ones."""
        configured = {instance.label for instance in self.instances()}
        return [
            (label, process)
            for label, processes in found.items()
            if label in configured or LABEL_PATTERN.match(label)
            for process in processes
        ]

    def _stopped_by(
        self, supervisor: int, since: float, before: Sequence[tuple[str, psutil.Process]]
    ) -> list[StopOutcome]:
        """What the ``run`` supervisor ``supervisor``, asked to stop at ``since``, did with its workers.

        Its report says which workers it stopped and how. Without one (it was killed before writing it)
        the workers that ran before it was asked and are gone now are returned with ``killed=None``.
        """
        path = report_path(self._require_file())
        report = read_stop_report(path, supervisor, since)
        outcomes = None if report is None else _reported_outcomes(report, supervisor)
        if outcomes is not None:
            remove_report(path)
        else:
            outcomes = [
                StopOutcome(name_of(label), label, process.pid, None, supervisor)
                for label, process in before
                if not is_alive(process)
            ]
            logger.warning(
                "kq watchdog run (pid %s) left no report of the workers it stopped in %s; %s",
                supervisor,
                path,
                "none of the workers that ran before it was asked to stop is gone"
                if not outcomes
                else "these ran before it was asked to stop and are gone now",
            )
        for outcome in outcomes:
            logger.info(
                "worker %s (pid %s) was stopped by kq watchdog run (pid %s): %s",
                outcome.label,
                outcome.pid,
                supervisor,
                _HOW[outcome.killed],
            )
        return outcomes

    def check(self) -> list[dict[str, Any]]:
        """One dict per instance: worker, label, queue, state, pid, uptime (s), rss (MB), log.

        ``state`` is ``running`` or ``stopped``; with a ``run`` supervisor also ``backoff`` (waiting to
        be restarted) or ``fatal`` (given up on). A second process with the same label is reported as
        ``duplicate``, and a process with a watchdog label that is no longer configured as
        ``unconfigured``.
        """
        config_file = self.config_file
        if config_file is None:
            return []
        found = find_workers(config_file)
        supervised = self._supervised_states()
        rows = []
        for instance in self.instances():
            processes = found.pop(instance.label, [])
            if not processes:
                # Only a supervisor knows whether a missing worker waits for a restart or was given up.
                state = supervised.get(instance.label, {}).get("state")
                state = state if state in ("backoff", "fatal") else "stopped"
                rows.append(instance_row(instance, None, state))
            for index, process in enumerate(processes):
                rows.append(instance_row(instance, process, "duplicate" if index else "running"))
        for label, processes in found.items():
            if LABEL_PATTERN.match(label):
                rows += [stray_row(label, process) for process in processes]
        return rows

    def run(self, grace: float = 10.0) -> None:
        """Supervise the workers in the foreground until SIGTERM or SIGINT (or :meth:`request_stop`).

        Adopts the workers already running, starts the others, restarts those that exit (at once after a
        normal exit; with exponential backoff after quick exits, FATAL after ``max_retries`` of them),
        and on the way out stops them all (SIGTERM, SIGKILL after ``grace`` seconds). SIGHUP gives the
        FATAL workers a new chance.

        Raises:
            ConfigError: no worker is configured.
            WatchdogError: another watchdog supervises this configuration, or kq-cli, whose
                ``kq consume`` the workers run, is not installed.
        """
        instances = self.instances()
        if not instances:
            raise ConfigError("no [workers.<name>] to supervise", key="workers", source=self.config.source)
        require_cli()
        with exclusive(self._require_file(), "run", self.lock_wait):
            config_file = self._require_file()
            self._supervisor = Supervisor(self.policy, self.control, config_file, instances, grace)
            try:
                self._supervisor.run()
            finally:
                self._supervisor = None

    def request_stop(self) -> None:
        """Ask a running :meth:`run` (in another thread) to stop its workers and return."""
        if self._supervisor is not None:
            self._supervisor.request_stop("stop requested")

    def _supervised_states(self) -> dict[str, dict[str, Any]]:
        if self._supervisor is not None:
            return self._supervisor.states()
        config_file = self.config_file
        return read_status(status_path(config_file)) if config_file else {}

    def _instances_for(self, what: str) -> list[WorkerInstance]:
        instances = self.instances()
        if self.config.source is None:
            logger.warning("no configuration file: nothing to %s (define [workers.<name>] in kq.toml)", what)
        elif not instances:
            logger.warning("no [workers.<name>] in %s: nothing to %s", self.config.source, what)
        return instances

    def _require_file(self) -> str:
        config_file = self.config_file
        if config_file is None or not os.path.isfile(config_file):
            raise WatchdogError(
                f"workers are started with --config {config_file}, which is not a file; the watchdog "
                f"needs the configuration in a file"
            )
        return config_file

    def _warn_strays(self, running: dict[str, list[psutil.Process]]) -> None:
        configured = {instance.label for instance in self.instances()}
        for label, processes in running.items():
            if label not in configured and LABEL_PATTERN.match(label):
                logger.warning(
                    "worker %s (pid %s) is not configured any more; `kq watchdog stop` stops it",
                    label,
                    ", ".join(str(p.pid) for p in processes),
                )


def _reported_outcomes(report: Sequence[dict[str, Any]], supervisor: int) -> list[StopOutcome] | None:
    """The outcomes of a supervisor's stop report (``None`` when an entry is malformed)."""
    outcomes = []
    for item in report:
        worker, label, pid, killed = (item.get(key) for key in ("worker", "label", "pid", "killed"))
        if not (isinstance(worker, str) and isinstance(label, str) and isinstance(pid, int)):
            return None
        if not isinstance(killed, bool):
            return None
        outcomes.append(StopOutcome(worker, label, pid, killed, supervisor))
    return outcomes
