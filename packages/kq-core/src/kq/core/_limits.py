"""Worker limits: when a consume loop stops by itself (messages, time, memory, failures, custom checks)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kq.core._errors import ConfigError
from kq.core._events import describe_callable
from kq.core._imports import import_object
from kq.core._numbers import check_number, check_whole_number
from kq.core._resources import MemoryGauge
from kq.core._stats import LoopStats

logger = logging.getLogger(__name__.replace("._", "."))

#: Largest memory limit accepted, in MB (a petabyte: only there to refuse nonsense).
MAX_MEGABYTES = 1e9


@dataclass(frozen=True)
class Limits:
    """When a consume loop stops by itself; zero means no limit. All are checked between messages.

    Attributes:
        messages: Stop after this many messages were handled (consumed, failed or vetoed).
        time: Stop after this many seconds; a long handler overruns it.
        memory: Stop once the RSS of the worker and its children exceeds this many MB.
        failures: Stop after this many failed messages.
        checks: Callables returning a reason to stop, or ``None`` to go on (the PHP library's
            ``Watchdog::check()``); one that raises is logged and ignored.
    """

    messages: int = 0
    time: float = 0.0
    memory: float = 0.0
    failures: int = 0
    checks: tuple[Callable[[], str | None], ...] = ()

    def __post_init__(self) -> None:
        # Finite and bounded: nan passes "< 0", and an infinite time limit overflows the deadline.
        for name in ("messages", "failures"):
            check_whole_number(getattr(self, name), f"{name} limit")
        check_number(self.time, "time limit")
        check_number(self.memory, "memory limit", maximum=MAX_MEGABYTES)


class LimitWatch:
    """Checks the :class:`Limits` of one run against its :class:`LoopStats`, between messages.

    Args:
        limits: The limits.
        queue: The queue consumed, for log lines.
    """

    def __init__(self, limits: Limits, queue: str) -> None:
        self.limits = limits
        self.queue = queue
        self.deadline = time.monotonic() + limits.time if limits.time else None
        # Only workers with a memory limit pay for importing psutil.
        self._memory = MemoryGauge() if limits.memory else None
        self._check_errors: dict[int, str] = {}

    def wait_bound(self, wanted: float) -> float:
        """``wanted`` seconds, or less when the time limit comes sooner."""
        if self.deadline is None:
            return wanted
        return max(0.0, min(wanted, self.deadline - time.monotonic()))

    def reached(self, stats: LoopStats) -> str | None:
        """Why the loop must stop now, or ``None`` to go on."""
        limits = self.limits
        if limits.messages and stats.received >= limits.messages:
            return f"message limit of {limits.messages} reached"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return f"time limit of {limits.time:g}s reached"
        if limits.failures and stats.failed >= limits.failures:
            return f"failure limit of {limits.failures} reached"
        if self._memory is not None:
            used = self._memory.megabytes()
            if used > limits.memory:
                return f"memory limit of {limits.memory:g} MB reached (RSS {used:.1f} MB)"
        for check in limits.checks:
            try:
                reason = check()
            except Exception as exc:
                self._check_failed(check, exc)
                continue
            if reason:
                return reason
        return None

    def _check_failed(self, check: Callable[[], str | None], exc: Exception) -> None:
        # Checks run at every poll: an error is said once (again only when it changes), not every second.
        error = f"{type(exc).__name__}: {exc}"
        repeated = self._check_errors.get(id(check)) == error
        self._check_errors[id(check)] = error
        logger.log(
            logging.DEBUG if repeated else logging.ERROR,
            "queue %s: the stop check %s failed (%s); ignoring it%s",
            self.queue,
            describe_callable(check),
            error,
            "" if repeated else " (the same failure again is logged at DEBUG only)",
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )


def load_check(name: str) -> Callable[[], str | None]:
    """A stop check for :class:`Limits`, named ``module:attribute``: a function returning a reason to
    stop (or ``None``), or a class (instantiated without arguments) or object with such a ``check()``
    method.

    Raises:
        ConfigError: it cannot be imported, or is neither callable nor has a ``check()`` method.
    """
    target = import_object(name, what="stop check", key="--check")
    if isinstance(target, type):
        target = target()
    check = getattr(target, "check", target)
    if not callable(check):
        raise ConfigError(f"stop check {name!r} is neither callable nor has a check() method", key="--check")
    loaded: Callable[[], str | None] = check
    return loaded
