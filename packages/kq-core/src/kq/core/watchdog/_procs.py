"""The process side of the watchdog: command lines, finding workers by label, measuring and killing them.

A watchdog worker is a ``kq consume`` process whose command line names the configuration file with
``--config`` and the instance with ``--label``. Finding workers again is a scan of the process table with
psutil, so it works for workers started by an earlier ``kq watchdog start`` that has long exited (the
PHP library grepped ``ps`` output, which matched itself and substrings of other labels).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil

from kq.core._config import WorkerSpec
from kq.core._consume_options import consume_arguments
from kq.core._errors import WatchdogError

# One logger for the whole watchdog, not one per module: its name is in the log lines users read and filter.
logger = logging.getLogger("kq.watchdog")

MB = 1024 * 1024

#: The module a worker runs (``python -m``), and the distribution that provides it.
CLI_MODULE, CLI_DISTRIBUTION = "kq.cli", "kq-cli"


@dataclass(frozen=True)
class WorkerCommandLine:
    """What the watchdog reads from a ``kq consume`` command line.

    Attributes:
        config: The ``--config`` value as written (possibly relative to the process's directory).
        label: The ``--label`` value.
        queue: The queue argument when it follows ``consume`` directly, else ``""``.
    """

    config: str
    label: str
    queue: str = ""


def worker_command(config_file: str, spec: WorkerSpec, label: str) -> list[str]:
    """The argument vector of one worker instance.

    ``sys.executable -m kq.cli`` rather than a ``kq`` script on $PATH: the worker then runs in the
    watchdog's own environment (virtualenv), whatever cron's $PATH is.
    """
    return [
        sys.executable,
        "-m",
        CLI_MODULE,
        "--config",
        config_file,
        "consume",
        spec.queue,
        "--label",
        label,
        # Built from the one declaration of the `kq consume` options, as the click options are.
        *consume_arguments(spec.options),
    ]


def require_cli() -> None:
    """Make sure this interpreter can run ``python -m kq.cli``, the command every worker is.

    kq-core alone cannot run a worker: ``kq consume`` is kq-cli's. Checked before a worker is spawned, so
    that a missing kq-cli is one clear error rather than workers that each exit at once with
    ``No module named kq.cli`` in their logs.

    Raises:
        WatchdogError: kq-cli is not installed in this interpreter's environment.
    """
    if importlib.util.find_spec(CLI_MODULE) is None:
        raise WatchdogError(
            f"the watchdog starts each worker as `{sys.executable} -m {CLI_MODULE} consume ...`, and "
            f"{CLI_MODULE} is not installed in that environment: install the {CLI_DISTRIBUTION} "
            f"distribution (pip install {CLI_DISTRIBUTION})"
        )


def parse_command_line(cmdline: Sequence[str]) -> WorkerCommandLine | None:
    """Read config, label and queue from a ``kq consume`` command line; ``None`` if it is not one.

    Tokens are compared whole (``--label w-1`` is not found in ``--label w-10``), and both the
    ``--opt value`` and the ``--opt=value`` spellings are understood.
    """
    try:
        consume = list(cmdline).index("consume")
    except ValueError:
        return None
    config = _option_value(cmdline[:consume], "--config")
    label = _option_value(cmdline[consume + 1 :], "--label")
    if config is None or label is None:
        return None
    after = cmdline[consume + 1] if consume + 1 < len(cmdline) else ""
    return WorkerCommandLine(config=config, label=label, queue="" if after.startswith("-") else after)


def _option_value(tokens: Sequence[str], option: str) -> str | None:
    for index, token in enumerate(tokens):
        if token == option and index + 1 < len(tokens):
            return tokens[index + 1]
        if token.startswith(option + "="):
            return token[len(option) + 1 :]
    return None


def same_file(named: str, cwd: str | None, config_file: str) -> bool:
    """Whether ``named`` (a ``--config`` value, relative to ``cwd``) is the file ``config_file``.

    Equal absolute paths match without touching the disk; otherwise the files are compared by inode, so
    that a symlinked spelling of the same file (a deploy's ``current/`` link) still matches.
    """
    path = os.path.normpath(os.path.join(cwd or "/", named))
    if path == os.path.normpath(config_file):
        return True
    try:
        return os.path.samefile(path, config_file)
    except OSError:
        return False


def find_workers(
    config_file: str, processes: Iterable[psutil.Process] | None = None
) -> dict[str, list[psutil.Process]]:
    """The live ``kq consume`` processes of ``config_file`` by label, oldest first.

    Zombies (exited, not yet reaped by their parent) are not workers any more and are left out, and so
    is the calling process.

    Args:
        config_file: The absolute path of the configuration file the workers must name.
        processes: Candidates (default: every process of the machine), for tests.
    """
    if processes is None:
        processes = psutil.process_iter()
    found: dict[str, list[psutil.Process]] = {}
    for process in processes:
        parsed = _worker_of(process, config_file)
        if parsed is not None:
            found.setdefault(parsed.label, []).append(process)
    for processes_of_label in found.values():
        processes_of_label.sort(key=_create_time)
    return found


def _worker_of(process: psutil.Process, config_file: str) -> WorkerCommandLine | None:
    try:
        if process.pid == os.getpid():
            return None
        cmdline = process.cmdline()
        # Cheap token checks first: this runs for every process of the machine.
        if "consume" not in cmdline or not any(token.startswith("--label") for token in cmdline):
            return None
        parsed = parse_command_line(cmdline)
        if parsed is None or process.status() == psutil.STATUS_ZOMBIE:
            return None
        cwd = None if os.path.isabs(parsed.config) else process.cwd()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return parsed if same_file(parsed.config, cwd, config_file) else None


def _create_time(process: psutil.Process) -> float:
    try:
        return float(process.create_time())
    except psutil.Error:
        return 0.0


def is_alive(process: psutil.Process) -> bool:
    """Running and not a zombie (``is_running()`` alone is true for zombies)."""
    try:
        return bool(process.is_running()) and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def uptime(process: psutil.Process) -> float | None:
    """Seconds since the process started (``None`` once it is gone)."""
    try:
        return max(0.0, time.time() - float(process.create_time()))
    except psutil.Error:
        return None


def rss_megabytes(process: psutil.Process) -> float | None:
    """Resident memory of the process and all its descendants (console commands), in MB."""
    try:
        total = int(process.memory_info().rss)
        children = process.children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        with contextlib.suppress(psutil.Error):
            total += int(child.memory_info().rss)
    return total / MB


def command_of(process: psutil.Process) -> tuple[str, ...]:
    """The command line of ``process`` (empty when it cannot be read)."""
    try:
        return tuple(process.cmdline())
    except psutil.Error:
        return ()


def spawn(command: Sequence[str], log: Path, env: Mapping[str, str], cwd: str) -> subprocess.Popen[bytes]:
    """Start ``command`` detached: its own session, stdin from /dev/null, output appended to ``log``.

    A new session means a Ctrl-C or hang-up aimed at the watchdog (or at the cron job's shell) does not
    reach the worker, and that ``stop`` can kill the worker's process group without touching ours.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(os.devnull, "rb") as stdin, log.open("ab") as output:
        # A header line, so that a reader of the log sees where each run of the worker begins.
        output.write(f"--- {stamp} kq watchdog starts: {' '.join(command)}\n".encode())
        output.flush()
        return subprocess.Popen(
            list(command),
            stdin=stdin,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )


def terminate(
    processes: Sequence[psutil.Process], grace: float, reap: Callable[[], object] | None = None
) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """SIGTERM every process, wait up to ``grace`` seconds, then SIGKILL the survivors and their leftovers.

    Args:
        processes: The workers to stop.
        grace: Seconds they get to finish their current message after SIGTERM.
        reap: Called while waiting, so that a caller whose children these are can reap them (a child
            that exited stays a zombie until its parent waits for it).

    Returns:
        The processes that exited after SIGTERM, and those that had to be killed.
    """
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGTERM)
    survivors = wait_gone(processes, grace, reap)
    for process in survivors:
        logger.warning(
            "worker pid %s still runs %gs after SIGTERM; sending SIGKILL to it and its process group",
            process.pid,
            grace,
        )
        kill_tree(process)
    wait_gone(survivors, 5.0, reap)
    return [p for p in processes if p not in survivors], survivors


def wait_gone(
    processes: Sequence[psutil.Process], timeout: float, reap: Callable[[], object] | None = None
) -> list[psutil.Process]:
    """Wait until every process has exited or ``timeout`` passed; return those still alive.

    psutil's ``wait_procs`` waits on zombies until someone reaps them; a zombie has finished for us.
    """
    deadline = time.monotonic() + timeout
    while True:
        if reap is not None:
            reap()
        alive = [process for process in processes if is_alive(process)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def kill_tree(process: psutil.Process) -> None:
    """SIGKILL ``process``, its process group and every descendant, including those in other sessions.

    The descendants are listed before the kill: once the worker is dead its children are re-parented and
    cannot be found from it any more. A console command (its own session) left running would go on while
    the watchdog starts a new worker that gets the same message again.
    """
    try:
        descendants = process.children(recursive=True)
    except psutil.Error:
        descendants = []
    for target in (process, *descendants):
        group = _own_group(target)
        with contextlib.suppress(psutil.Error):
            target.kill()
        if group is not None:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)


def _own_group(process: psutil.Process) -> int | None:
    """The process group ``process`` leads, if any and if it is not ours (never kill our own group)."""
    try:
        group = os.getpgid(process.pid)
    except OSError:
        return None
    if group != process.pid or group == os.getpgrp():
        return None
    return group


def describe_status(status: int | None) -> str:
    """An exit status for a log line: ``status 1``, ``SIGKILL``, or ``unknown status``."""
    if status is None:
        return "unknown status (not started by this watchdog)"
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"status {status}"
