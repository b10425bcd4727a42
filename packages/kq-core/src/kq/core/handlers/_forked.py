"""The forked console-command execution type: a process per message, forked from a preloaded parent.

Its messages, validation, allow-list and producer are the console-command type's
(:mod:`kq.core.handlers._console`); only the handler differs. ``[console] callable`` names a Python
entry point as in the in-process mode (a click command or group, or ``f(argv)``). When the handler is
built, before the worker connects to its broker, it starts a *zygote*: a fresh interpreter, in a
session of its own, that imports the entry point once and then forks one child per message
(:mod:`kq.core.handlers._zygote`). Each child runs the command in a new session, with the subprocess
mode's timeout (its process group is killed with SIGKILL), exit code, bounded output tails and
environment (the worker's minus the signing secrets, ``[console] env``, the ``KQ_*`` variables), and
gives its memory back when it exits. The import cost is paid once per worker instead of once per
message.

The price: what the entry point's import creates (connections, threads, open files, caches) is
inherited by every child, and POSIX ``fork`` is needed (no Windows). A zygote that dies fails the
message in progress; the next message starts a new one.

Switching a queue to this mode is one line: ``consumer = "forked_console_command"``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from kq.core._allow import AllowList
from kq.core._config import ConsoleSettings
from kq.core._errors import ConfigError, ExecutionFailedError
from kq.core._message import Delivery
from kq.core.handlers._console import CommandCall, ConsoleCommandHandler, log_result
from kq.core.handlers._process import CommandResult
from kq.core.handlers._zygote_client import Zygote, ZygoteLostError

logger = logging.getLogger(__name__.replace("._", "."))

#: Seconds the zygote may at least take to import the entry point (``[console] timeout`` if longer).
START_TIMEOUT = 120.0


class ForkedConsoleCommandHandler(ConsoleCommandHandler):
    """Runs console-command messages in children forked from a zygote that imported ``[console] callable``.

    Built like :class:`ConsoleCommandHandler`, from ``[console]`` and ``[allow] commands``.

    Raises:
        ConfigError: the platform cannot fork, or the entry point cannot be imported (reported once,
            when the worker starts, not per message).
    """

    kind = "forked_console_command"

    def __init__(self, settings: ConsoleSettings, allowed: AllowList, *, label: str | None = None) -> None:
        if not hasattr(os, "fork") or not hasattr(socket, "send_fds") or not sys.executable:
            raise ConfigError(
                f'consumer = "forked_console_command" needs os.fork, which Python on {sys.platform} does '
                'not offer: use consumer = "console_command" (a process per message) instead'
            )
        super().__init__(settings, allowed, label=label)
        self.entry_name = settings.callable
        self._zygote: Zygote | None = self._start_zygote()

    def _command_prefix(self) -> tuple[str, ...]:
        """None: the zygote calls the entry point (the default callable needs kq-cli, checked here)."""
        self.settings.check_callable()
        return ()

    def _start_zygote(self) -> Zygote:
        # The import is no command: a short [console] timeout must not cut a slow application start.
        start_timeout = max(self.settings.timeout, START_TIMEOUT)
        zygote = Zygote(self.entry_name, env=self._env, cwd=self.settings.cwd, start_timeout=start_timeout)
        logger.debug("forked console commands: zygote pid %d has imported %s", zygote.pid, self.entry_name)
        return zygote

    def _ready_zygote(self, delivery: Delivery) -> Zygote:
        """The running zygote, started again if the previous one has exited."""
        zygote = self._zygote
        if zygote is not None and zygote.alive:
            return zygote
        if zygote is not None:  # None: closed by a loop that ended, and this handler is used again
            logger.warning(
                "queue %s message %s: the forked-mode parent process (pid %d) for %s had exited (status "
                "%s); starting a new one before running the command",
                delivery.queue,
                delivery.message_id,
                zygote.pid,
                self.entry_name,
                zygote.close(),
            )
            self._zygote = None
        try:
            self._zygote = self._start_zygote()
        except ConfigError as exc:
            raise ExecutionFailedError(f"cannot restart the forked-mode parent process: {exc}") from None
        return self._zygote

    def _execute(self, call: CommandCall, delivery: Delivery) -> CommandResult:
        """Run the allowed ``call`` in a child of the zygote (a timeout raises ExecutionFailedError)."""
        argv = call.argv()
        zygote = self._ready_zygote(delivery)
        logger.debug(
            "queue %s message %s: running %s %s in a forked child",
            delivery.queue,
            delivery.message_id,
            self.entry_name,
            argv,
        )
        try:
            result = zygote.run(
                argv,
                self._message_variables(delivery),
                timeout=self.settings.timeout,
                shown=(self.entry_name, *argv),
            )
        except ExecutionFailedError as exc:
            raise type(exc)(f"command {call.command!r}: {exc}", exc.result) from None
        except ZygoteLostError:
            status = zygote.close()
            raise ExecutionFailedError(
                f"command {call.command!r}: the forked-mode parent process (pid {zygote.pid}) for "
                f"{self.entry_name} exited with status {status} while the command ran; the command's "
                "process group was killed, and the next message starts a new parent"
            ) from None
        log_result(call, delivery, result)
        return result

    def close(self) -> None:
        """Stop the zygote (it kills a command still running)."""
        zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.close()
