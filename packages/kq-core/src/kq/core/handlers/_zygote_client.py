"""The worker's side of the forked mode: starting a zygote and running one command through it.

:class:`Zygote` starts :mod:`kq.core.handlers._zygote` as a fresh interpreter and waits until it has
imported the entry point. :meth:`Zygote.run` runs one command in a child the zygote forks, with the
subprocess mode's rules (:func:`~kq.core.handlers._process.run_command`): the child's exit decides, its
output is read as it runs into bounded tails and for at most ``OUTPUT_GRACE`` after the exit, and past
the timeout its process group is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from kq.core._errors import ConfigError, ExecutionFailedError, HandlerTimeoutError
from kq.core.handlers import _zygote_wire as wire
from kq.core.handlers._process import (
    _POLL_INTERVAL,
    OUTPUT_GRACE,
    CommandResult,
    _OutputReader,
    _shown,
)
from kq.core.handlers._zygote import BOOTSTRAP

logger = logging.getLogger(__name__.replace("._", "."))

#: Seconds the worker waits for the zygote to confirm a kill (it reaps the child at once).
KILL_WAIT = 10.0
#: Seconds :meth:`Zygote.close` lets the zygote exit on its own before killing it.
CLOSE_WAIT = 5.0


class ZygoteLostError(Exception):
    """The zygote exited, or its socket broke: it cannot run commands any more."""


class Zygote:
    """A running zygote for one entry point.

    Args:
        entry: ``module:attr``, imported once by the zygote.
        env: The zygote's environment, which its children inherit (the commands' environment).
        cwd: The zygote's working directory, which its children inherit.
        start_timeout: Seconds the import may take.

    Raises:
        ConfigError: the zygote cannot be started or cannot import the entry point.
    """

    def __init__(self, entry: str, *, env: dict[str, str], cwd: str | None, start_timeout: float) -> None:
        self.entry = entry
        self._frames = wire.FrameBuffer()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", BOOTSTRAP, entry, str(theirs.fileno())],
                stdin=subprocess.PIPE,
                env=env,
                cwd=cwd,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise ConfigError(
                f"cannot start the forked-mode parent process for {entry!r}: {exc.strerror or exc}",
                key="console.callable",
            ) from None
        finally:
            theirs.close()
        self._sock = ours
        self.pid = self.process.pid
        try:
            self._send_path()
            reply = self._receive(time.monotonic() + start_timeout)
        except ZygoteLostError:
            code = self.close()
            raise ConfigError(
                f"the forked-mode parent process for {entry!r} exited with status {code} before "
                "loading it (its error is on the worker's standard error)",
                key="console.callable",
            ) from None
        if reply is None or "error" in reply:
            self.close()
            why = reply["error"] if reply else f"the import took more than {start_timeout:g}s"
            raise ConfigError(str(why), key="console.callable")

    def _send_path(self) -> None:
        # '' in sys.path is the worker's current directory; the zygote may run in [console] cwd.
        path = [entry or os.getcwd() for entry in sys.path]
        stdin = self.process.stdin
        if stdin is None:  # always a pipe: stdin=PIPE
            raise ZygoteLostError
        try:
            with stdin:
                stdin.write(json.dumps(path).encode() + b"\n")
        except OSError:
            raise ZygoteLostError from None

    @property
    def alive(self) -> bool:
        """Whether the zygote process is still running."""
        return self.process.poll() is None

    def close(self) -> int:
        """Close the socket (the zygote exits, killing a running child); return its exit status."""
        self._sock.close()
        try:
            return self.process.wait(CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def run(
        self, argv: list[str], env: dict[str, str], *, timeout: float, shown: tuple[str, ...]
    ) -> CommandResult:
        """Run ``argv`` in a forked child and return how it exited; ``shown`` is its argv in the result.

        Raises:
            ExecutionFailedError: the child ran past ``timeout`` (and was killed) or cannot be forked.
            ZygoteLostError: the zygote exited or broke the protocol (the child's group was killed).
        """
        started = time.monotonic()
        deadline = started + timeout
        output = self._request(argv, env)
        pid: int | None = None
        try:
            pid = self._pid(deadline)
            code = self._wait(output, deadline)
            exited = code is not None
            if code is None:
                self._send({"kill": True})
                code = self._exit_code(time.monotonic() + KILL_WAIT)
                if code is None:
                    raise ZygoteLostError
            # The timeout bounds the whole run, but a killed command still gets its grace: its output up
            # to the kill is what tells the operator where it hung.
            until = time.monotonic() + OUTPUT_GRACE
            drained = output.drain(min(until, deadline) if exited else until)
            if not drained:
                _warn_held_output(shown, code, timeout, exited)
        except ZygoteLostError:
            if pid is not None:
                _kill_group(pid)
            raise
        except ExecutionFailedError:  # the zygote could not fork: it is still fine
            raise
        except BaseException:
            # Interrupted (a forced stop): do not leave the child running unsupervised. Before its pid
            # came, only closing the zygote (which kills its child) keeps the next reply in step.
            if pid is None:
                self.close()
            else:
                self._abandon(pid)
            raise
        finally:
            output.close()
        result = CommandResult(
            argv=shown,
            exit_code=code if exited else -signal.SIGKILL,
            stdout=output.stdout.text(),
            stderr=output.stderr.text(),
            duration=time.monotonic() - started,
        )
        if not exited:
            raise HandlerTimeoutError(f"timed out after {timeout:g}s and was killed", result)
        return result

    def _request(self, argv: list[str], env: dict[str, str]) -> _OutputReader:
        """Ask for a child running ``argv``; return the reader of its stdout and stderr pipes."""
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            self._send({"run": argv, "env": env}, [out_write, err_write])
        except BaseException as exc:
            os.close(out_read)
            os.close(err_read)
            if not isinstance(exc, ZygoteLostError):
                # Interrupted half-way: the zygote may or may not have the request, and a reply to it
                # would be taken for the next one's. Closing it kills a child it may have started.
                self.close()
            raise
        finally:
            # The zygote has its own copies (or none, if it is gone): the pipes end when the child's do.
            os.close(out_write)
            os.close(err_write)
        # The reader owns the pipes from here and closes them.
        return _OutputReader(open(out_read, "rb", buffering=0), open(err_read, "rb", buffering=0))

    def _pid(self, deadline: float) -> int:
        reply = self._receive(deadline)
        if reply is None:
            raise ZygoteLostError
        if "error" in reply:
            raise ExecutionFailedError(f"cannot start the command: {reply['error']}")
        return int(reply["pid"])

    def _wait(self, output: _OutputReader, deadline: float) -> int | None:
        """Read the output until the child's exit is reported (its code) or ``deadline`` (None)."""
        while output.open:
            code = self._exit_code(0.0)
            if code is not None:
                return code
            now = time.monotonic()
            if now >= deadline:
                return None
            # Not waiting on the pipes alone: a background process may keep them open after the exit.
            output.read(min(now + _POLL_INTERVAL, deadline))
        return self._exit_code(deadline)

    def _exit_code(self, until: float) -> int | None:
        """The exit code the zygote reports, waiting until the monotonic ``until`` (0: do not wait)."""
        reply = self._receive(until)
        if reply is None:
            return None
        if "exit" not in reply:
            raise ZygoteLostError
        return int(reply["exit"])

    def _abandon(self, pid: int) -> None:
        """Kill the child of an interrupted run and wait for its exit report; give up the zygote if it
        does not come (the next message starts a new one)."""
        try:
            self._send({"kill": True})
            if self._exit_code(time.monotonic() + KILL_WAIT) is not None:
                return
        except (ZygoteLostError, wire.WireError):
            pass
        _kill_group(pid)
        self.close()

    def _send(self, payload: dict[str, Any], fds: list[int] | None = None) -> None:
        try:
            wire.send(self._sock, payload, fds)
        except OSError:
            raise ZygoteLostError from None

    def _receive(self, until: float) -> dict[str, Any] | None:
        """The next frame, or None if none has come by the monotonic ``until``."""
        while True:
            try:
                frame = self._frames.next()
            except wire.WireError:
                raise ZygoteLostError from None
            if frame is not None:
                return frame
            wait = max(0.0, until - time.monotonic())
            if not select.select([self._sock], [], [], wait)[0]:
                return None
            try:
                data = self._sock.recv(65536)
            except OSError:
                raise ZygoteLostError from None
            if not data:
                raise ZygoteLostError
            self._frames.feed(data)


def _kill_group(pid: int) -> None:
    """Kill the process group of a child whose zygote has gone (so nobody reaps it for us any more)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _warn_held_output(shown: tuple[str, ...], code: int, timeout: float, exited: bool) -> None:
    if exited:
        logger.warning(
            "%s exited with status %d, but a process it left running still holds its stdout or stderr "
            "open: kq stopped reading the output, returned the exit status and did not wait for that "
            "process (it keeps running)",
            _shown(shown),
            code,
        )
    else:
        logger.warning(
            "%s ran past its %gs timeout and its process group was killed, but a process it started in "
            "another session or process group still holds its stdout or stderr open: kq stopped reading "
            "the output and did not wait for that process (it keeps running)",
            _shown(shown),
            timeout,
        )
