"""A graceful stop on SIGTERM and SIGINT, for a consume loop running on the main thread.

The first signal asks the loop to stop after the message in progress. A second signal, or the end of
the grace period that the first one started, abandons that message: :class:`Abandoned` is raised in
the main thread wherever it is (most often in the handler); the loop closes its consumer without
settling the message, so the broker delivers it again. The handlers that were there before are put
back when the loop ends.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

logger = logging.getLogger(__name__.replace("._", "."))

#: The signals that ask a worker to stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Abandoned(BaseException):
    """The message in progress is abandoned: a second stop signal came, or the grace period ran out.

    A :class:`BaseException`, like :class:`KeyboardInterrupt`, so that a handler catching ``Exception``
    does not take it for a failure of the message.
    """


class StopSignals:
    """Handles the stop signals for the duration of a ``with`` block.

    Nothing is installed off the main thread (Python delivers signals to the main thread only) or when
    ``enabled`` is false. The block ends quietly when the message in progress is abandoned:
    :attr:`abandoned` says why.

    Args:
        stop: Asks the loop to stop after the current message, with a reason.
        grace: Seconds the message in progress may still take after the first signal (0: no limit).
        enabled: Whether to install the handlers at all.
    """

    def __init__(self, stop: Callable[[str], None], *, grace: float = 0.0, enabled: bool = True) -> None:
        self.stop = stop
        self.grace = grace
        self.enabled = enabled
        #: Name of the first stop signal received, if any.
        self.received: str | None = None
        #: Why the message in progress was abandoned, if it was.
        self.abandoned: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def installed(self) -> bool:
        """Whether the handlers are in place now."""
        return bool(self._previous)

    def __enter__(self) -> StopSignals:
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            return self
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_stop_signal)
        if self.grace:
            self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_grace_over)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> bool:
        if signal.SIGALRM in self._previous:
            signal.setitimer(signal.ITIMER_REAL, 0)
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if isinstance(error, Abandoned):
            self.abandoned = str(error)
            return True
        return False

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            raise Abandoned(f"received {name} while stopping")
        self.received = name
        # Not self.stop() right here: it sets a threading.Event, whose lock the interrupted main
        # thread may be holding at this very moment; a thread of its own waits for it instead.
        threading.Thread(target=self.stop, args=(f"received {name}",), name="kq-stop", daemon=True).start()
        if self.grace:
            signal.setitimer(signal.ITIMER_REAL, self.grace)
        logger.debug("received %s: stopping after the message in progress", name)

    def _on_grace_over(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            return  # a stray SIGALRM: no grace period is running
        raise Abandoned(f"received {self.received} and the grace period of {self.grace:g}s ran out")
