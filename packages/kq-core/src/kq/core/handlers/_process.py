"""Running a console command as a child process: argument vector, new session, timeout, bounded output.

The child gets an argument vector (never a shell), runs in a new session so that a TERM sent to the
worker's process group does not reach it, has a timeout after which its whole process group is killed,
and its exit code, stdout and stderr are the :class:`CommandResult`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import IO, Any

from kq.core._errors import ExecutionFailedError, HandlerTimeoutError

logger = logging.getLogger(__name__.replace("._", "."))

#: Most bytes of stdout and of stderr kept in a result: the last ones, kept while the command runs, so a
#: command's output costs the worker at most about this much memory per stream whatever it writes.
MAX_OUTPUT = 1024 * 1024

#: Seconds kq keeps reading a command's output after the command has exited (or was killed). A process
#: the command left running in the background may hold stdout or stderr open as long as it lives: kq does
#: not wait for it beyond this, closes its end of the pipes and returns what it has read.
OUTPUT_GRACE = 0.5

# Longest a read waits before checking again whether the command has exited while a pipe is still open.
_POLL_INTERVAL = 0.1
# Bytes asked for in one read: a Linux pipe's default capacity.
_READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class CommandResult:
    """What a command run produced.

    ``stdout`` and ``stderr`` are the last :data:`MAX_OUTPUT` bytes (1 MiB) of each stream, decoded as
    UTF-8 with invalid bytes replaced; longer output is cut at the front.
    """

    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.exit_code == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "argv": list(self.argv),
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "duration": round(self.duration, 6),
        }


def run_command(
    argv: tuple[str, ...], *, timeout: float, env: dict[str, str] | None = None, cwd: str | None = None
) -> CommandResult:
    """Run ``argv`` in a new session and return how it exited, killing its process group after ``timeout``.

    The exit of ``argv``'s own process decides the result. Its output is read while it runs, keeping the
    last :data:`MAX_OUTPUT` bytes of each stream, and after it has exited for at most
    :data:`OUTPUT_GRACE` seconds: a background process it left holding stdout or stderr open is not
    waited for. ``timeout`` bounds the whole run, reading the output included; a command still running
    then has its process group killed, and its output is again read for at most ``OUTPUT_GRACE``.

    Raises:
        ExecutionFailedError: the program cannot be started (:class:`HandlerTimeoutError`: it ran past
            ``timeout``).
    """
    started = time.monotonic()
    deadline = started + timeout
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise ExecutionFailedError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
    output = _OutputReader(process.stdout, process.stderr)
    try:
        exited = _read_until_exit(process, output, deadline)
        if not exited:
            _kill_group(process)
            process.wait()
        # The timeout bounds the whole run, but a killed command still gets its grace: its output up to
        # the kill is what tells the operator where it hung.
        until = time.monotonic() + OUTPUT_GRACE
        drained = output.drain(min(until, deadline) if exited else until)
        if not drained and exited:
            logger.warning(
                "%s exited with status %d, but a process it left running still holds its stdout or "
                "stderr open: kq stopped reading the output, returned the exit status and did not wait "
                "for that process (it keeps running)",
                _shown(argv),
                process.returncode,
            )
        elif not drained:
            logger.warning(
                "%s ran past its %gs timeout and its process group was killed, but a process it started "
                "in another session or process group still holds its stdout or stderr open: kq stopped "
                "reading the output and did not wait for that process (it keeps running)",
                _shown(argv),
                timeout,
            )
    except BaseException:
        # Interrupted (KeyboardInterrupt, a forced stop): do not leave the child running unsupervised.
        _kill_group(process)
        process.wait()
        raise
    finally:
        output.close()
    if not exited:
        result = _result(argv, -signal.SIGKILL, output, started)
        raise HandlerTimeoutError(f"timed out after {timeout:g}s and was killed", result)
    return _result(argv, process.returncode, output, started)


class OutputTail:
    """The last ``limit`` bytes of a stream, kept as it is written: memory stays bounded by ``limit``.

    Args:
        limit: Most bytes kept (default :data:`MAX_OUTPUT`).
    """

    def __init__(self, limit: int = MAX_OUTPUT) -> None:
        self.limit = limit
        self.truncated = False
        self._data = bytearray()

    def feed(self, data: bytes) -> None:
        """Append ``data``, dropping from the front whatever goes beyond the limit."""
        with memoryview(data) as view:
            # A huge write is cut before it is copied in, so the buffer never holds more than twice the limit.
            kept = view[-self.limit :]
            self.truncated = self.truncated or len(kept) < len(view)
            self._data += kept
        excess = len(self._data) - self.limit
        if excess > 0:
            # CPython deletes from the front of a bytearray by moving its start, without copying the rest.
            del self._data[:excess]
            self.truncated = True

    def text(self) -> str:
        """The kept bytes as UTF-8, invalid bytes replaced; a character the cut split is dropped."""
        start = 0
        if self.truncated:
            # Up to 3 continuation bytes at the front are the rest of a character whose start was dropped.
            while start < min(3, len(self._data)) and self._data[start] & 0xC0 == 0x80:
                start += 1
        with memoryview(self._data) as view:
            return str(view[start:], "utf-8", "replace")


class _OutputReader:
    """Reads a child's stdout and stderr into :class:`OutputTail` objects, without ever blocking for long."""

    def __init__(self, stdout: IO[bytes] | None, stderr: IO[bytes] | None) -> None:
        self.stdout, self.stderr = OutputTail(), OutputTail()
        self._pipes: list[IO[bytes]] = []
        self._selector = selectors.DefaultSelector()
        for pipe, tail in ((stdout, self.stdout), (stderr, self.stderr)):
            if pipe is not None:  # always, with stdout=PIPE and stderr=PIPE
                os.set_blocking(pipe.fileno(), False)
                self._selector.register(pipe, selectors.EVENT_READ, tail)
                self._pipes.append(pipe)

    @property
    def open(self) -> bool:
        """Whether a pipe has not reached end-of-file yet."""
        return bool(self._selector.get_map())

    def read(self, until: float) -> None:
        """Read what the pipes hold, waiting for data until the monotonic time ``until`` at most."""
        for key, _ in self._selector.select(max(0.0, until - time.monotonic())):
            try:
                data = os.read(key.fd, _READ_SIZE)
            except BlockingIOError:
                continue
            if data:
                key.data.feed(data)
            else:
                self._selector.unregister(key.fileobj)

    def drain(self, until: float) -> bool:
        """Read until both pipes reach end-of-file or ``until``; whether they did (nothing holds them)."""
        while self.open and time.monotonic() < until:
            self.read(until)
        if self.open:
            # What is already in the pipes was written before the cut-off: take it, without waiting.
            self.read(0.0)
        return not self.open

    def close(self) -> None:
        """Stop reading: close the selector and kq's end of the pipes."""
        self._selector.close()
        for pipe in self._pipes:
            pipe.close()


def _read_until_exit(process: subprocess.Popen[bytes], output: _OutputReader, deadline: float) -> bool:
    """Read ``process``'s output until it exits (True) or the monotonic ``deadline`` passes (False)."""
    while output.open:
        if process.poll() is not None:
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        # Not waiting on the pipes alone: a background process may keep them open after the exit.
        output.read(min(now + _POLL_INTERVAL, deadline))
    try:
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    # The command may have moved itself to another process group; the wait that follows must not hang.
    process.kill()


def _shown(argv: tuple[str, ...]) -> str:
    """``argv`` for a log line, cut short: arguments may be long."""
    text = repr(list(argv))
    return text if len(text) <= 300 else f"{text[:297]}..."


def _result(argv: tuple[str, ...], code: int, output: _OutputReader, started: float) -> CommandResult:
    return CommandResult(
        argv=argv,
        exit_code=code,
        stdout=output.stdout.text(),
        stderr=output.stderr.text(),
        duration=time.monotonic() - started,
    )
