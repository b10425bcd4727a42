"""Private, throw-away brokers for the integration tests, started as local processes (no Docker).

One module per broker, each with a class that has the same small interface (:class:`Broker`):
``start()`` (a no-op when running; returns once clients are served), ``stop()`` (safe to repeat,
waits until the processes have exited), ``running``, ``log_tails()`` (for failure messages), and a
context manager. Nothing global is registered (no atexit hook, no signal handler): whoever starts a
broker stops it.

* :mod:`integration.brokers.rabbitmq`: a private RabbitMQ node from the Debian package.
* :mod:`integration.brokers.sqs`: the SQS emulators, moto's server and LocalStack (host mode), each run
  from a virtual environment that :mod:`integration.brokers.venvs` creates from PyPI on first use.

This module holds what they share: the errors, port checks, spawning a process in its own session with
its output in a log file, waiting for a port, stopping (TERM, then KILL) and log tails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from integration.brokers.rabbitmq import RabbitMQ, ensure_rabbitmq_installed, start_rabbitmq

__all__ = [
    # RabbitMQ's names from when the harness was one module.
    "RabbitMQ",
    "ensure_rabbitmq_installed",
    "start_rabbitmq",
    "Broker",
    "BrokerError",
    "BrokerStartError",
    "PortInUseError",
    "LOOPBACK",
    "POLL_INTERVAL",
    "port_in_use",
    "check_ports",
    "check_ports_free",
    "port_accepts",
    "spawn",
    "wait_for_port",
    "terminate",
    "stop_process_group",
    "read_pid",
    "process_state",
    "kill_and_wait",
    "first_errors",
    "tail",
]

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
POLL_INTERVAL = 0.25
_LOG_TAIL_LINES = 40


class BrokerError(RuntimeError):
    """A broker could not be started or stopped."""


class PortInUseError(BrokerError):
    """A port the broker needs is already taken by another process."""

    def __init__(self, port: int, role: str, hint: str = "") -> None:
        self.port = port
        self.role = role
        super().__init__(
            f"port {port} ({role}) on {LOOPBACK} is already in use by another process; "
            f"free it (see `ss -ltnp 'sport = :{port}'`) or pass another {role}_port{hint}"
        )


class BrokerStartError(BrokerError):
    """The broker process died or did not become ready in time."""


class Broker(Protocol):
    """What every broker of the harness offers (see the module docstring)."""

    @property
    def running(self) -> bool:
        """True while the broker's process runs."""
        ...

    def start(self) -> None:
        """Start the broker and return once it serves clients."""
        ...

    def stop(self) -> None:
        """Stop the broker and wait until its processes have exited."""
        ...

    def log_tails(self) -> str:
        """The ends of the broker's logs, for failure messages."""
        ...


def check_ports(broker: str, ports: dict[str, int]) -> None:
    """Refuse, with ``ValueError``, ports (by role) that are out of range or shared between roles."""
    for role, port in ports.items():
        if not 0 < port < 65536:
            raise ValueError(f"{role}_port must be between 1 and 65535, got {port}")
    if len(set(ports.values())) != len(ports):
        raise ValueError(f"{broker} ports must differ from each other, got {ports}")


def check_ports_free(ports: dict[str, int], hint: Callable[[str], str]) -> None:
    """Raise :class:`PortInUseError` for the first of ``ports`` (by role) that is taken; ``hint(role)``
    adds to its message how to move it or what holds it."""
    for role, port in ports.items():
        if port_in_use(port):
            raise PortInUseError(port, role, hint(role))


def port_in_use(port: int) -> bool:
    """True if ``port`` cannot be bound on the loopback address (someone listens, or is about to)."""
    # A bind test, not a connect test: it also sees a listener that does not accept (yet). SO_REUSEADDR,
    # like the brokers' own listeners, so connections of a just-stopped broker in TIME_WAIT do not count.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def port_accepts(port: int) -> bool:
    """True if a TCP connection to ``port`` on the loopback address succeeds."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0):
            return True
    except OSError:
        return False


def spawn(
    command: list[str], log: Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own, its output appended to ``log``."""
    with log.open("ab") as out:  # append: a restart keeps the earlier output
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            # Own process group: Ctrl-C in the terminal must not reach the broker before the test's
            # teardown stops it, and the group lets stop() kill a broker together with its children.
            start_new_session=True,
        )


def wait_for_port(port: int, proc: subprocess.Popen[bytes], *, timeout: float, what: str, log: Path) -> None:
    """Wait until ``port`` accepts connections; raise :class:`BrokerStartError` if ``proc`` dies first."""
    deadline = time.monotonic() + timeout
    while not port_accepts(port):
        if proc.poll() is not None:
            raise BrokerStartError(f"{what} exited with code {proc.returncode} while starting.\n{tail(log)}")
        if time.monotonic() >= deadline:
            raise BrokerStartError(f"{what} did not listen on {LOOPBACK}:{port} within {timeout:.0f} s")
        time.sleep(0.05)


def terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM ``proc``, then SIGKILL it if it has not exited after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_process_group(proc: subprocess.Popen[bytes], grace: float, what: str) -> None:
    """SIGTERM the process group that ``proc`` leads (see :func:`spawn`), SIGKILL it after ``grace``."""
    if proc.poll() is None:
        # Safe to address the group by the leader's PID: it is not reaped yet, so the group is ours.
        _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop within %.0f s of SIGTERM; killing its process group", what, grace)
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def read_pid(path: Path) -> int | None:
    """The PID written in ``path``, None if the file is missing or holds no number."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL a process that is not our child and wait until it is gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    # Not our child, so no waitpid: poll /proc until it is gone (or only a zombie for init to reap).
    while process_state(pid) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.05)


def process_state(pid: int) -> str | None:
    """The state letter from /proc/PID/stat ("R", "S", "Z"...), None if there is no such process."""
    try:
        # The command name may contain spaces and parentheses: the state follows the last ")".
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def first_errors(path: Path, marker: str = "[error]", lines: int = 10) -> str:
    """The first ``lines`` lines of ``path`` containing ``marker`` (a config mistake shows up top)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    errors = [line for line in text.splitlines() if marker in line][:lines]
    return f"--- first errors in {path} ---\n" + "\n".join(errors) if errors else ""


def tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path``, with a heading naming it."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"--- {path}: not written ---"
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


_RABBITMQ_NAMES = ("RabbitMQ", "ensure_rabbitmq_installed", "start_rabbitmq")


def __getattr__(name: str) -> object:
    """RabbitMQ's names, imported on first use: this module itself must not need pika."""
    if name in _RABBITMQ_NAMES:
        from integration.brokers import rabbitmq

        return getattr(rabbitmq, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
