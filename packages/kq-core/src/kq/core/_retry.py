"""Retry policies: how often, and how long after, a failed message is tried again."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from typing import Any

from kq.core._numbers import MAX_COUNT, MAX_SECONDS, check_number, check_whole_number

#: Largest ``multiplier``: each delay may grow a thousandfold at most.
MAX_MULTIPLIER = 1000.0
#: The accepted range of each number: keyword arguments of check_number (check_whole_number for ints).
_RANGES: dict[str, dict[str, Any]] = {
    "max_attempts": {"minimum": 1, "maximum": MAX_COUNT},
    "delay": {"minimum": 0.0, "maximum": MAX_SECONDS, "duration": True},
    "multiplier": {"minimum": 1.0, "maximum": MAX_MULTIPLIER},
    "max_delay": {"minimum": 0.0, "maximum": MAX_SECONDS, "duration": True},
    "jitter": {"minimum": 0.0, "maximum": 1.0, "exclusive_maximum": True},
}


def check_retry_field(name: str, value: object, what: str = "") -> int | float:
    """``value`` checked for the retry policy field ``name`` (a float, or an int for ``max_attempts``).

    Raises:
        ValueError: not a finite number in the field's range (or not a whole number of attempts).
    """
    if name == "max_attempts":
        return check_whole_number(value, what, **_RANGES[name])
    return check_number(value, what, **_RANGES[name])


@dataclass(frozen=True)
class RetryPolicy:
    """``[queues.<name>] retry``: exponential backoff with a cap and jitter.

    Only execution failures are retried (the work ran and failed); messages that can never succeed
    (undecodable, malformed, not allowed, badly signed) go to the dead-letter queue at once.

    Attributes:
        max_attempts: Executions in all, the first included (1: no retry).
        delay: Seconds before the second attempt.
        multiplier: Each further delay is the previous one times this.
        max_delay: Longest delay, in seconds.
        jitter: Random spread of each delay, as a fraction (0.1: +/- 10 %), so that retries of many
            messages that failed together do not come back together.
    """

    max_attempts: int = 1
    delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        for field in fields(self):
            check_retry_field(field.name, getattr(self, field.name), field.name)

    def retries_after(self, attempt: int) -> bool:
        """Whether a failure of execution ``attempt`` (1 for the first) is tried again."""
        return attempt < self.max_attempts

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after the failure of execution ``attempt`` before the next one."""
        try:
            growth = self.multiplier ** (attempt - 1)
        except OverflowError:  # a float power past 1.8e308 raises instead of giving inf
            growth = math.inf
        base = min(self.max_delay, self.delay * growth) if self.delay else 0.0
        spread = random.uniform(-self.jitter, self.jitter) if self.jitter else 0.0  # noqa: S311 - not crypto
        return max(0.0, min(self.max_delay, base * (1 + spread)))
