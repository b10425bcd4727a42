"""What a consume loop says at INFO about the messages it handled: a count per interval, not a line each.

A line per handled message costs a no-op handler a third of its time (a log record, its formatting
and a write: 15 to 35 µs, against about 50 µs for the rest of the message), and a worker handling
thousands of messages a second writes thousands of lines nobody reads. So, by default:

- each message handled is logged at DEBUG (``kq consume -v``), with its queue, id and duration;
- a summary line at INFO counts what was handled since the last one, at most once per ``interval``
  seconds, and as soon as the queue goes idle (so a single message is reported within a poll interval);
- failures keep their own WARNING/ERROR line per message (the failure policy's), with the message id and
  what kq did with it: the lines worth reading at 3 a.m. are still one per message.

``interval = 0`` restores a line per handled message at INFO, without summaries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kq.core._stats import LoopStats

logger = logging.getLogger(__name__.replace("._", "."))


class ActivityLog:
    """Counts handled messages between summaries and writes the summary lines.

    Args:
        queue: The logical queue, for the lines.
        interval: Least seconds between two summaries (0: no summaries; :attr:`each_level` is INFO).
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(self, queue: str, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        if interval < 0:
            raise ValueError(f"the summary interval must not be negative, not {interval}")
        self.queue = queue
        self.interval = interval
        self._clock = clock
        #: The level of the line written for each handled message.
        self.each_level = logging.DEBUG if interval > 0 else logging.INFO
        self._since = clock()
        self._last = (0, 0, 0)

    def handled(self, stats: LoopStats) -> None:
        """After a message: write a summary if ``interval`` has passed since the last one."""
        if self.interval > 0 and self._clock() - self._since >= self.interval:
            self.flush(stats)

    def idle(self, stats: LoopStats) -> None:
        """The queue had nothing for the loop: report what was handled since the last summary."""
        if self.interval > 0:
            self.flush(stats)

    def flush(self, stats: LoopStats) -> None:
        """Write a summary of what was handled since the last one, if anything was."""
        now = self._clock()
        counts = (stats.consumed, stats.failed, stats.vetoed)
        consumed, failed, vetoed = (now_ - before for now_, before in zip(counts, self._last, strict=True))
        if not (consumed or failed or vetoed):
            self._since = now
            return
        seconds = max(now - self._since, 1e-9)
        logger.info(
            "queue %s: %d consumed, %d failed, %d vetoed in the last %.1fs (%.1f/s); %d consumed since "
            "the start",
            self.queue,
            consumed,
            failed,
            vetoed,
            seconds,
            (consumed + failed + vetoed) / seconds,
            stats.consumed,
        )
        self._since, self._last = now, counts
