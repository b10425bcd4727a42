"""What the watchdog works with and reports: worker instances, outcomes, ``check`` rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from kq.core._config import WorkerSpec
from kq.core._errors import KqError
from kq.core._watchdog_procs import LABEL_PATTERN, command_of, parse_command_line, rss_megabytes, uptime


class WatchdogError(KqError):
    """A watchdog command could not do its job (for example: another watchdog holds the lock)."""


@dataclass(frozen=True)
class WorkerInstance:
    """One process of a ``[workers.<name>]`` table.

    Attributes:
        spec: The worker's configuration.
        label: ``<name>-<n>``, unique per configuration file; the process carries it as ``--label``.
        command: Its argument vector.
        log: The file its output is appended to.
    """

    spec: WorkerSpec
    label: str
    command: tuple[str, ...]
    log: Path


@dataclass(frozen=True)
class StartOutcome:
    """What :meth:`Watchdog.start` did for one instance.

    Attributes:
        outcome: ``started``, ``running`` (it already was) or ``failed``.
        error: Why it failed (``worker X exited at once with status N; see LOG``).
    """

    worker: str
    label: str
    outcome: str
    pid: int | None
    log: str
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The outcome as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class StopOutcome:
    """A worker process :meth:`Watchdog.stop` (or a ``run`` supervisor it asked to stop) stopped.

    Attributes:
        killed: ``True`` when SIGTERM was not enough and it got SIGKILL, ``False`` when it exited after
            SIGTERM, ``None`` when that is not known: it was running when a ``run`` supervisor was asked
            to stop, and is gone, but the supervisor left no report of how it stopped it.
        supervisor: The pid of the ``kq watchdog run`` that stopped it; ``None`` when ``stop`` did.
    """

    worker: str
    label: str
    pid: int
    killed: bool | None
    supervisor: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The outcome as a JSON-ready dict."""
        return asdict(self)


def name_of(label: str) -> str:
    """The worker name of a label (``emails-2`` -> ``emails``)."""
    match = LABEL_PATTERN.match(label)
    return match.group("name") if match else label


def instance_row(instance: WorkerInstance, process: psutil.Process | None, state: str) -> dict[str, Any]:
    """A ``check`` row for a configured instance (``process`` is ``None`` when it is not running)."""
    return {
        "worker": instance.spec.name,
        "label": instance.label,
        "queue": instance.spec.queue,
        "state": state,
        **_measure(process),
        "log": str(instance.log),
    }


def stray_row(label: str, process: psutil.Process) -> dict[str, Any]:
    """A ``check`` row for a process with a watchdog label that is not configured (any more)."""
    parsed = parse_command_line(command_of(process))
    return {
        "worker": name_of(label),
        "label": label,
        "queue": parsed.queue if parsed else "",
        "state": "unconfigured",
        **_measure(process),
        "log": None,
    }


def _measure(process: psutil.Process | None) -> dict[str, Any]:
    if process is None:
        return {"pid": None, "uptime": None, "rss": None}
    age, rss = uptime(process), rss_megabytes(process)
    return {
        "pid": process.pid,
        "uptime": None if age is None else round(age, 1),
        "rss": None if rss is None else round(rss, 1),
    }
