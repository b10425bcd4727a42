"""The forked mode's zygote: a process that imports a command's entry point once and forks per command.

The worker starts it (:mod:`kq.core.handlers._zygote_client`) as a fresh interpreter, in a session of
its own, with the environment commands get and the worker's ``sys.path``: it holds no thread, no broker
connection and no secret of the worker. It imports ``[console] callable``, reports ``ready`` (or the
import error), then serves the worker over a Unix socket (:mod:`kq.core.handlers._zygote_wire`).

For each command the worker sends the argument vector, the message's ``KQ_*`` variables and the write
ends of two pipes; the zygote forks a child that starts a new session, restores the signal handlers a
fresh interpreter has, writes its stdout and stderr to those pipes, runs the entry point as the
in-process mode calls it and exits with its exit code. The zygote answers with the child's pid at once,
kills the child's process group when asked to, and reports the exit code once it has reaped the child.
It exits when the worker closes the socket, killing a child that is still running.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from kq.core.handlers import _zygote_wire as wire

#: What the worker runs with ``python -c``: read ``sys.path`` (a JSON line on stdin), then serve.
BOOTSTRAP = (
    "import json, sys; sys.path[:] = json.loads(sys.stdin.readline()); "
    "from kq.core.handlers._zygote import main; sys.exit(main(sys.argv[1:]))"
)


def main(args: list[str]) -> int:
    """Serve the worker: ``args`` are the entry point (``module:attr``) and the socket's descriptor."""
    entry_name, control_fd = args[0], int(args[1])
    control = socket.socket(fileno=control_fd)
    _stdin_from_devnull()
    sys.argv = [entry_name.partition(":")[0]]
    try:
        try:
            entry = _load(entry_name)
        except Exception as exc:  # any import-time failure is reported to the worker
            wire.send(control, {"error": str(exc)})
            return 1
        from kq.core.handlers._inprocess import _is_click_command

        run = _click_runner(entry, entry_name) if _is_click_command(entry) else _function_runner(entry)
        _flush()
        wire.send(control, {"ready": os.getpid()})
        return _Server(control, run, sys.argv[0]).serve()
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the worker has gone (and a child, if one ran, was killed): nobody to serve


def _stdin_from_devnull() -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def _load(name: str) -> Callable[..., Any]:
    from kq.core._errors import ConfigError
    from kq.core._imports import import_object

    try:
        target = import_object(name, what="the forked-mode entry point")
    except ConfigError:
        raise
    except BaseException as exc:
        traceback.print_exc()  # the whole traceback on the worker's stderr; its last line in the error
        raise RuntimeError(f"importing the forked-mode entry point {name!r} raised {exc!r}") from None
    if not callable(target):
        raise TypeError(f"{name!r} is not callable")
    loaded: Callable[..., Any] = target
    return loaded


def _click_runner(command: Any, name: str) -> Callable[[list[str]], int]:
    from kq.core.handlers._inprocess import _run_click

    return lambda argv: _run_click(command, argv, name)


def _function_runner(function: Callable[..., Any]) -> Callable[[list[str]], int]:
    from kq.core.handlers._inprocess import _exit_code

    def run(argv: list[str]) -> int:
        try:
            returned = function(argv)
        except SystemExit as exit_:
            return _exit_code(exit_.code)
        return _exit_code(returned)

    return run


class _Server:
    """The zygote's loop: one command at a time, a child per command."""

    def __init__(self, control: socket.socket, run: Callable[[list[str]], int], program: str) -> None:
        self.control = control
        self.run = run
        self.program = program
        # SIGCHLD writes a byte to this pipe (a Python handler must be installed for that), so that one
        # poll() waits for both the child's exit and the worker's requests.
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _ignore)
        self.poller = select.poll()
        self.poller.register(control.fileno(), select.POLLIN)
        self.poller.register(self.wake_read, select.POLLIN)

    def serve(self) -> int:
        """Serve requests until the worker closes the socket."""
        while True:
            request, fds = wire.receive(self.control)
            if request is None:
                return 0
            if "run" not in request:  # a late kill for a child already reaped: nothing to do
                _close(fds)
                continue
            if len(fds) != 2:
                _close(fds)
                wire.send(self.control, {"error": f"expected 2 descriptors with the command, got {len(fds)}"})
                continue
            if not self._run_one(request, fds[0], fds[1]):
                return 0

    def _run_one(self, request: dict[str, Any], out_fd: int, err_fd: int) -> bool:
        """Fork, supervise and report one command; False when the worker has gone."""
        _flush()
        try:
            pid = os.fork()
        except OSError as exc:
            _close([out_fd, err_fd])
            wire.send(self.control, {"error": f"cannot fork: {exc.strerror or exc}"})
            return True
        if pid == 0:
            self._child(list(request["run"]), dict(request.get("env", {})), out_fd, err_fd)
        _close([out_fd, err_fd])
        try:
            wire.send(self.control, {"pid": pid})
            code = self._supervise(pid)
            if code is None:
                return False
            wire.send(self.control, {"exit": code})
        except BaseException:
            _kill(pid)
            os.waitpid(pid, 0)
            raise
        return True

    def _supervise(self, pid: int) -> int | None:
        """Wait for ``pid`` to exit (its exit code), killing it when asked; None if the worker has gone."""
        while True:
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if reaped:
                return os.waitstatus_to_exitcode(status)
            for fd, _ in self.poller.poll():
                if fd == self.wake_read:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_read, 512):
                            pass
                    continue
                request, fds = wire.receive(self.control)
                _close(fds)
                if request is None:
                    _kill(pid)
                    os.waitpid(pid, 0)
                    return None
                if request.get("kill"):
                    _kill(pid)

    def _child(self, argv: list[str], env: dict[str, str], out_fd: int, err_fd: int) -> NoReturn:
        code, cleared = 1, False
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _close([self.control.fileno(), self.wake_read, self.wake_write])
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            _close([out_fd, err_fd])
            os.environ.update(env)
            sys.argv = [self.program, *argv]
            # Exit handlers registered by the preload belong to the zygote; those the command registers
            # run when it ends, as they would at the end of a process of its own.
            atexit._clear()
            cleared = True
            code = self.run(argv)
        except BaseException:
            # An uncaught exception ends a Python process with its traceback and status 1.
            with contextlib.suppress(BaseException):
                traceback.print_exc()
            code = 1
        finally:
            if cleared:
                with contextlib.suppress(BaseException):
                    atexit._run_exitfuncs()
            _flush()
            os._exit(code & 0xFF)


def _ignore(signum: int, frame: object) -> None:
    """SIGCHLD's handler: its only job is that the wakeup byte gets written."""


def _kill(pid: int) -> None:
    """Kill ``pid``'s process group and ``pid`` itself (it may have left its group); not yet reaped."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _flush() -> None:
    # Buffered output written before a fork would otherwise be written again by every child.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
