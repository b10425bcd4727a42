"""What the watchdog works with and reports: labels, worker instances, outcomes, the restart policy."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kq.core._config import WorkerSpec

#: What a watchdog label looks like: ``<worker name>-<instance number>``.
LABEL_PATTERN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)-(?P<index>[0-9]+)\Z")


def name_of(label: str) -> str:
    """The worker name of a label (``emails-2`` -> ``emails``)."""
    match = LABEL_PATTERN.match(label)
    return match.group("name") if match else label


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
class RestartPolicy:
    """How ``kq watchdog run`` watches and restarts its workers (supervisord's restart settings).

    Attributes:
        poll_interval: Seconds between two looks at the workers.
        start_seconds: A worker that exits within this many seconds of starting exited "at once" (a
            *quick exit*, supervisord's ``startsecs``); one that lived longer is simply restarted.
        max_retries: After this many quick exits in a row a worker is FATAL: not restarted until the
            supervisor gets SIGHUP or is restarted. Values below 1 count as 1.
        backoff: Delay before the first restart after a quick exit; it doubles with each further one.
        max_backoff: The longest delay between two restarts.
    """

    poll_interval: float = 1.0
    start_seconds: float = 3.0
    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0

    def __post_init__(self) -> None:
        # At least one try: with 0 the FATAL message would count "quick exit 1 of 0".
        object.__setattr__(self, "max_retries", max(1, self.max_retries))

    def delay(self, quick_exits: int) -> float:
        """Seconds to wait before restarting a worker after its ``quick_exits``-th quick exit in a row."""
        return min(self.max_backoff, self.backoff * 2.0 ** (quick_exits - 1))


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
