"""The time limit of in-process handlers: a call that runs past it is interrupted in the worker's main
thread, and the message fails with reason ``timeout``.

Python cannot stop a thread from outside, so the call runs where it always ran, in the loop's thread,
and that must be the main thread: a watcher thread checks the running call's deadline on a short tick
and, once it has passed, sends ``SIGALRM`` to the main thread (``signal.pthread_kill``). The handler
installed here raises :class:`TimeLimitExceeded` there, wherever the call is: in Python code, or in a
blocking system call (``time.sleep``, a socket read, ``subprocess.wait``), which the signal interrupts.
The wrapped call turns it into :class:`~kq.core.HandlerTimeoutError`.

The hot path only stores the deadline before the call and clears it after (no system call, no thread
switch); the watcher wakes on its own tick (a tenth of the shortest limit, between 0.05 s and 1 s),
which is how late a call may be stopped.

Limits, each documented in ``docs/consuming.md``:

- C code that holds the GIL (a long computation in an extension, a regular expression) is interrupted
  only when it returns to Python;
- :class:`TimeLimitExceeded` is a :class:`BaseException`, so ``except Exception`` in the handler does
  not swallow it, but ``except BaseException`` (or a bare ``except``) does: the call then goes on, and
  when it returns, the message still fails with reason ``timeout``. It is raised once per call;
- off the main thread (a loop run in a thread of an application), signals cannot reach the call: no
  limit is enforced, and the loop says so once at start.

A ``SIGALRM`` that is not for a call (the grace period of :mod:`kq.core._signals` uses one) is passed to
the handler that was installed before.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from kq.core._errors import HandlerTimeoutError
from kq.core._message import Delivery

logger = logging.getLogger(__name__.replace("._", "."))

#: Shortest and longest tick of the watcher, in seconds.
MIN_TICK = 0.05
MAX_TICK = 1.0


class TimeLimitExceeded(BaseException):
    """Raised in the main thread when the running call passed its time limit.

    A :class:`BaseException`, like :class:`KeyboardInterrupt`, so that a handler catching ``Exception``
    does not take it for an error of its own and go on.
    """


def can_enforce() -> bool:
    """Whether a time limit can be enforced here: on the main thread, where signals arrive."""
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_kill")


class CallTimer:
    """Interrupts calls that run past their time limit, for the duration of a ``with`` block.

    Enter it on the main thread (:func:`can_enforce`); :meth:`wrap` a call with its limit.

    Args:
        shortest: The shortest limit it will be given, in seconds (sets the watcher's tick).
    """

    def __init__(self, shortest: float) -> None:
        self.tick = min(MAX_TICK, max(MIN_TICK, shortest / 10))
        self._deadline: float | None = None  # of the call running now, on time.monotonic()'s clock
        self._limit = 0.0
        self._call = 0  # counts the calls, so that the watcher signals each one at most once
        self._fired = False  # TimeLimitExceeded was raised for the running call
        self._main = threading.main_thread().ident
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: Any = None

    def __enter__(self) -> CallTimer:
        self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
        self._thread = threading.Thread(target=self._watch, name="kq-time-limit", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._deadline = None
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # The watcher is gone: no signal is sent after the previous handler is back.
        signal.signal(signal.SIGALRM, self._previous)

    def wrap(self, call: Callable[[Any, Delivery], Any], limit: float) -> Callable[[Any, Delivery], Any]:
        """``call`` (a handler's ``consume``), stopped with :class:`HandlerTimeoutError` after ``limit``
        seconds."""

        def limited(body: Any, delivery: Delivery) -> Any:
            self._call += 1
            self._fired = False
            self._limit = limit
            self._deadline = time.monotonic() + limit
            try:
                try:
                    result = call(body, delivery)
                finally:
                    self._deadline = None  # from here on, the signal handler raises nothing
            except TimeLimitExceeded:
                raise self._error() from None
            if self._fired:  # the handler caught TimeLimitExceeded and returned all the same
                raise self._error()
            return result

        return limited

    def _error(self) -> HandlerTimeoutError:
        return HandlerTimeoutError(f"ran past its time limit of {self._limit:g}s and was interrupted")

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        deadline = self._deadline
        if deadline is not None and not self._fired and time.monotonic() >= deadline:
            self._fired = True
            raise TimeLimitExceeded
        previous = self._previous
        if callable(previous):  # the grace period's alarm, say
            previous(signum, frame)

    def _watch(self) -> None:
        main = self._main
        signalled = 0  # the last call signalled
        while not self._stopping.wait(self.tick):
            call, deadline = self._call, self._deadline
            if deadline is None or call == signalled or time.monotonic() < deadline:
                continue
            # Should that call have ended meanwhile, the handler finds no deadline passed and does nothing.
            signalled = call
            if main is not None:
                signal.pthread_kill(main, signal.SIGALRM)
