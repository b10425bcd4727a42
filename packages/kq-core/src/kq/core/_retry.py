"""Retry policies: how often, and how long after, a failed message is tried again."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, not {self.multiplier}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be from 0 to less than 1, not {self.jitter}")

    def retries_after(self, attempt: int) -> bool:
        """Whether a failure of execution ``attempt`` (1 for the first) is tried again."""
        return attempt < self.max_attempts

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after the failure of execution ``attempt`` before the next one."""
        base = min(self.max_delay, self.delay * self.multiplier ** (attempt - 1))
        spread = random.uniform(-self.jitter, self.jitter) if self.jitter else 0.0  # noqa: S311 - not crypto
        return max(0.0, min(self.max_delay, base * (1 + spread)))
