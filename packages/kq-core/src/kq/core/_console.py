"""The console-command consumer: runs the command a message names as a child process.

The child gets an argument vector (never a shell), runs in a new session so that a TERM sent to the
worker's process group does not reach it, has a timeout after which its whole process group is killed,
and its exit code, stdout and stderr are the result. A non-zero exit code is a failed execution.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from kq.core._allow import AllowList
from kq.core._command import CommandCall, parse_command
from kq.core._config import ConsoleSettings
from kq.core._consumers import ConsumerContext, MessageConsumer
from kq.core._errors import ExecutionFailedError, NotAllowedError
from kq.core._message import Delivery

logger = logging.getLogger(__name__)

#: Most bytes of stdout and of stderr kept in a result (the end of the output is kept).
MAX_OUTPUT = 1024 * 1024


@dataclass(frozen=True)
class CommandResult:
    """What a command run produced."""

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


class ConsoleCommandConsumer(MessageConsumer):
    """Runs console-command messages (``{"command", "arguments", "options"}``) as child processes.

    Args:
        settings: ``[console]``: program prefix, timeout, environment, working directory.
        allowed: Commands that may run; anything else is rejected without running.
        label: The consumer's ``--label``, passed to children as ``KQ_LABEL``.
    """

    kind = "console_command"

    def __init__(self, settings: ConsoleSettings, allowed: AllowList, *, label: str | None = None) -> None:
        self.settings = settings
        self.allowed = allowed
        self.label = label or ""
        self.prefix = settings.argv_prefix()
        self._env = {**os.environ, **settings.env}

    @classmethod
    def from_context(cls, context: ConsumerContext) -> ConsoleCommandConsumer:
        """Use ``[console]`` and ``[allow] commands``."""
        return cls(context.config.console, AllowList(context.config.allow.commands), label=context.label)

    def describe(self, body: Any) -> str:
        """``command 'name'``."""
        command = body.get("command") if isinstance(body, dict) else None
        return f"command {command!r}" if isinstance(command, str) else "command"

    def consume(self, body: Any, delivery: Delivery) -> CommandResult:
        """Validate, check the allow-list, run; raise ExecutionFailedError on a non-zero exit or timeout."""
        call = parse_command(body)
        if not self.allowed.allows(call.command):
            raise NotAllowedError(
                f"command {call.command!r} is not in the allow-list ([allow] commands = "
                f"{list(self.allowed.entries)!r})"
            )
        result = self._execute(call, delivery)
        if not result.ok:
            tail = result.stderr.strip().splitlines()[-1:] or result.stdout.strip().splitlines()[-1:]
            detail = f": {tail[0][:300]}" if tail else ""
            raise ExecutionFailedError(
                f"command {call.command!r} exited with status {result.exit_code}{detail}", result
            )
        return result

    def _message_variables(self, delivery: Delivery) -> dict[str, str]:
        """What a command learns about its message, in its environment."""
        return {
            "KQ_QUEUE": delivery.queue,
            "KQ_MESSAGE_ID": environment_value(delivery.message_id),
            "KQ_DELIVERY_COUNT": str(delivery.delivery_count),
            # The worker's own environment may carry a KQ_LABEL of its parent: commands see this worker's.
            "KQ_LABEL": self.label,
        }

    def _execute(self, call: CommandCall, delivery: Delivery) -> CommandResult:
        """Run the allowed ``call`` as a child process (a timeout raises ExecutionFailedError)."""
        argv = (*self.prefix, *call.argv())
        env = {**self._env, **self._message_variables(delivery)}
        logger.debug("queue %s message %s: running %s", delivery.queue, delivery.message_id, list(argv))
        try:
            result = run_command(argv, timeout=self.settings.timeout, env=env, cwd=self.settings.cwd)
        except ExecutionFailedError as exc:
            raise ExecutionFailedError(f"command {call.command!r}: {exc}", exc.result) from None
        logger.debug(
            "queue %s message %s: %s exited with status %d in %.3fs; stdout: %r; stderr: %r",
            delivery.queue,
            delivery.message_id,
            call.command,
            result.exit_code,
            result.duration,
            result.stdout[-2000:],
            result.stderr[-2000:],
        )
        return result


def environment_value(text: str) -> str:
    """``text`` made safe for an environment variable: a message id comes from the producer, and a NUL
    or a lone surrogate in it would make the operating system refuse the whole environment."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def run_command(
    argv: tuple[str, ...], *, timeout: float, env: dict[str, str] | None = None, cwd: str | None = None
) -> CommandResult:
    """Run ``argv`` in a new session and wait for it, killing its process group after ``timeout``.

    Raises:
        ExecutionFailedError: the program cannot be started or ran past ``timeout``.
    """
    started = time.monotonic()
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
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        stdout, stderr = process.communicate()
        result = _result(argv, -signal.SIGKILL, stdout, stderr, started)
        raise ExecutionFailedError(f"timed out after {timeout:g}s and was killed", result) from None
    except BaseException:
        # Interrupted (KeyboardInterrupt, a forced stop): do not leave the child running unsupervised.
        _kill_group(process)
        process.wait()
        raise
    return _result(argv, process.returncode, stdout, stderr, started)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _result(argv: tuple[str, ...], code: int, stdout: bytes, stderr: bytes, started: float) -> CommandResult:
    return CommandResult(
        argv=argv,
        exit_code=code,
        stdout=stdout[-MAX_OUTPUT:].decode(errors="replace"),
        stderr=stderr[-MAX_OUTPUT:].decode(errors="replace"),
        duration=time.monotonic() - started,
    )
