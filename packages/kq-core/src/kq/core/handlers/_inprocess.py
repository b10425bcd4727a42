"""The in-process console-command execution type: the "MPM" mode.

Its messages, validation, allow-list and producer are the console-command type's
(:mod:`kq.core.handlers._console`); only the handler differs. It calls the application's command-line
entry point inside the worker instead of starting a process per message: much faster, at the price of
sharing the worker's memory, global state and crashes. ``[console] callable`` names the entry point
(default ``kq.cli:cli``, the program the subprocess mode runs by default too):

- a click command or group is invoked with ``main(args, standalone_mode=False)``;
- anything else is called as ``f(argv)`` with the argument list (no program name), like an argparse
  ``main(argv)``; it returns an exit code (``None`` is 0) or raises ``SystemExit``.

stdout and stderr are captured for the result (the last 1 MiB of each, as in the subprocess mode); the
exit code decides success. ``[console] timeout`` bounds a call as it bounds a command's process: the
consume loop interrupts a call that runs longer (:mod:`kq.core._time_limit`, on the worker's main
thread) and the message fails with reason ``timeout``. An interrupted call cannot be cleaned up after
as a killed process is (its threads, its open files stay): the subprocess mode is still the one for
commands that may hang.

Switching a queue between the two modes is one line: ``consumer = "inprocess_console_command"``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from kq.core._allow import AllowList
from kq.core._config import ConsoleSettings
from kq.core._errors import ConfigError
from kq.core._imports import import_object
from kq.core._message import Delivery
from kq.core.handlers._console import CommandCall, ConsoleCommandHandler
from kq.core.handlers._process import CommandResult, OutputTail

logger = logging.getLogger(__name__.replace("._", "."))


class InProcessConsoleCommandHandler(ConsoleCommandHandler):
    """Runs console-command messages by calling ``[console] callable`` inside the worker.

    Built like :class:`ConsoleCommandHandler`, from ``[console]`` and ``[allow] commands``.
    """

    kind = "inprocess_console_command"

    def __init__(self, settings: ConsoleSettings, allowed: AllowList, *, label: str | None = None) -> None:
        super().__init__(settings, allowed, label=label)
        self.entry_name = settings.callable
        self.entry = _load(settings.callable)
        self.time_limit = settings.timeout

    def _command_prefix(self) -> tuple[str, ...]:
        """None: the command runs inside the worker (the default callable needs kq-cli, checked here)."""
        self.settings.check_callable()
        return ()

    def _inherited_environment(self) -> dict[str, str]:
        """Nothing to build: the command runs inside the worker and sees the worker's whole environment
        (signing variables included), whatever ``[console] inherit_env`` says."""
        if not self.settings.inherit_env:
            logger.warning(
                "[console] inherit_env = false does not apply to in-process commands: they run inside the "
                'worker and can read its whole environment; use consumer = "console_command" to keep '
                "it from them"
            )
        return {}

    def _execute(self, call: CommandCall, delivery: Delivery) -> CommandResult:
        """Call the entry point with the allowed ``call``'s argv, its output captured."""
        argv = call.argv()
        stdout, stderr = _CapturedOutput(), _CapturedOutput()
        started = time.monotonic()
        with (
            _environment({**self.settings.env, **self._message_variables(delivery)}),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            code = self._run(argv)
        return CommandResult(
            argv=(self.entry_name, *argv),
            exit_code=code,
            stdout=stdout.getvalue(),
            stderr=stderr.getvalue(),
            duration=time.monotonic() - started,
        )

    def _run(self, argv: list[str]) -> int:
        if _is_click_command(self.entry):
            return _run_click(self.entry, argv, self.entry_name)
        try:
            returned = self.entry(argv)
        except SystemExit as exit_:
            return _exit_code(exit_.code)
        return _exit_code(returned)


class _CapturedOutput(io.TextIOBase):
    """A text stream that keeps the last MAX_OUTPUT bytes (as UTF-8) written to it, as the subprocess
    mode keeps of a child's output, so a chatty command cannot grow the worker's memory."""

    def __init__(self) -> None:
        super().__init__()
        self._tail = OutputTail()

    def writable(self) -> bool:
        """Always: this is an output stream."""
        return True

    def write(self, text: str) -> int:
        """Keep ``text``'s UTF-8 bytes (a lone surrogate as ``\\udXXX``); return its length, as StringIO."""
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._tail.feed(text.encode("utf-8", "backslashreplace"))
        return len(text)

    def getvalue(self) -> str:
        """What was kept, decoded."""
        return self._tail.text()


def _load(name: str) -> Callable[..., Any]:
    target = import_object(name, what="the in-process entry point", key="console.callable")
    if not callable(target):
        raise ConfigError(f"{name!r} is not callable", key="console.callable")
    loaded: Callable[..., Any] = target
    return loaded


def _is_click_command(entry: Any) -> bool:
    return type(entry).__module__.startswith("click") and hasattr(entry, "main")


def _run_click(command: Any, argv: list[str], name: str) -> int:
    import click

    try:
        returned = command.main(args=argv, prog_name=name.partition(":")[0], standalone_mode=False)
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print("Aborted!", file=sys.stderr)  # noqa: T201 - the command's own stderr, captured as its output
        return 1
    except SystemExit as exit_:
        return _exit_code(exit_.code)
    return returned if isinstance(returned, int) and not isinstance(returned, bool) else 0


def _exit_code(value: object) -> int:
    # Python's own rules for SystemExit: None is 0, an integer (booleans too) is the code, anything else
    # is printed to stderr and the code is 1.
    if value is None:
        return 0
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        print(value, file=sys.stderr)  # noqa: T201 - SystemExit("message") prints it, as Python does
    return 1


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the call and restore the previous values afterwards."""
    saved = {name: os.environ.get(name) for name in variables}
    try:
        os.environ.update(variables)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
