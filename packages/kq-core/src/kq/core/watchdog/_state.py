"""Files a watchdog shares with the other watchdog commands of the same configuration.

- A lock (``.kq/watchdog/<config file name>.lock`` next to the configuration file): one watchdog at a
  time starts or stops the workers of a configuration, so that two overlapping cron runs, or a cron
  ``start`` next to a ``run`` supervisor, never start the same label twice. It is an ``flock``: the
  kernel releases it when its holder dies, so a crashed watchdog leaves no stale lock behind. The file
  holds the holder's pid and mode.
- A status file (``.kq/watchdog/<config file name>.json``), written by ``run``: the states only the
  supervisor knows (``backoff``, ``fatal``), so that ``kq watchdog check`` in another process can
  report them.
- A stop report (``.kq/watchdog/<config file name>.stopped.json``), written by ``run`` when it has
  stopped its workers, before it lets go of the lock: the ``kq watchdog stop`` that asked it to stop
  reads it to say which workers were stopped, and how.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from kq.core._errors import WatchdogError

# The watchdog's one logger (see _procs.py).
logger = logging.getLogger("kq.watchdog")


def lock_path(config_file: str) -> Path:
    """The lock file of the watchdogs of ``config_file`` (in ``.kq/watchdog/`` next to it)."""
    path = Path(config_file)
    return path.parent / ".kq" / "watchdog" / f"{path.name}.lock"


def status_path(config_file: str) -> Path:
    """The status file a ``run`` supervisor of ``config_file`` keeps up to date."""
    path = Path(config_file)
    return path.parent / ".kq" / "watchdog" / f"{path.name}.json"


def report_path(config_file: str) -> Path:
    """The file a ``run`` supervisor of ``config_file`` lists the workers it stopped in, on its way out."""
    path = Path(config_file)
    return path.parent / ".kq" / "watchdog" / f"{path.name}.stopped.json"


class WatchdogLock:
    """The exclusive lock of the watchdog commands of one configuration file.

    Args:
        path: The lock file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, mode: str, wait: float = 0.0) -> bool:
        """Take the lock for ``mode`` (``start``, ``stop``, ``run``), trying for up to ``wait`` seconds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {mode} {psutil.Process().create_time()!r}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> tuple[int, str] | None:
        """The pid and mode of the process holding the lock (``None``: unknown).

        The holder writes them just after taking the lock, so for a moment the file still names the
        previous holder: the start time written with the pid tells that one apart (and protects a
        process that got its pid since from the SIGTERM ``stop`` sends a supervisor).
        """
        try:
            pid, mode, started = self.path.read_text().split()
            if abs(psutil.Process(int(pid)).create_time() - float(started)) > 0.01:
                return None
            return int(pid), mode
        except (OSError, ValueError, psutil.Error):
            return None

    def release(self) -> None:
        """Let go of the lock (closing the descriptor releases the ``flock``)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


@contextlib.contextmanager
def exclusive(
    config_file: str, mode: str, wait: float, supervisor_grace: float | None = None
) -> Iterator[int | None]:
    """Hold the watchdog lock of ``config_file`` for ``mode``; yields the pid of a ``run`` holding it.

    Only ``start`` and ``stop`` get past a ``run`` supervisor: ``start`` has nothing to do (it is given
    the supervisor's pid instead of the lock), ``stop`` (which passes ``supervisor_grace``) asks the
    supervisor to exit — it would restart what ``stop`` stops — and then takes the lock; it is given
    the pid of the supervisor it asked, which stopped the workers itself (see :func:`read_stop_report`).
    Otherwise the lock is held and ``None`` is yielded.

    Args:
        config_file: The configuration file whose workers are concerned.
        mode: ``start``, ``stop`` or ``run``, written into the lock file for the others to read.
        wait: Seconds to wait for another ``start`` or ``stop`` to finish.
        supervisor_grace: For ``stop``: the grace period the supervisor is given on top of ``wait``.
    """
    lock = WatchdogLock(lock_path(config_file))
    try:
        free = lock.acquire(mode)
    except OSError as exc:
        raise WatchdogError(f"cannot create the watchdog lock {lock.path}: {exc.strerror}") from None
    supervisor = None
    if not free:
        holder = lock.holder()
        supervisor = holder[0] if holder is not None and holder[1] == "run" else None
        if supervisor is not None and mode == "start":
            yield supervisor
            return
        if supervisor is not None and supervisor_grace is None:
            raise WatchdogError(f"kq watchdog run (pid {supervisor}) already supervises {config_file}")
        if supervisor is not None and supervisor_grace is not None:
            logger.info("asking kq watchdog run (pid %s) to stop its workers", supervisor)
            with contextlib.suppress(OSError):
                os.kill(supervisor, signal.SIGTERM)
            wait += supervisor_grace
        if not lock.acquire(mode, wait):
            who = f"pid {holder[0]}, {holder[1]}" if holder else "unknown process"
            raise WatchdogError(f"another kq watchdog ({who}) still holds {lock.path} after {wait:g}s")
    try:
        yield supervisor
    finally:
        lock.release()


def write_status(path: Path, instances: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace the status file atomically with the supervisor's view of every instance."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "pid": os.getpid(),
        "pid_started": psutil.Process().create_time(),
        "updated": time.time(),
        "instances": instances,
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(document, indent=1))
    os.replace(temporary, path)


def read_status(path: Path) -> dict[str, dict[str, Any]]:
    """The instance states written by a supervisor that still runs (empty when none does).

    The supervisor is recognised by pid *and* start time, so that a status file left by a supervisor
    killed with SIGKILL is not believed because another process got the same pid since.
    """
    try:
        document = json.loads(path.read_text())
        pid, started = int(document["pid"]), float(document["pid_started"])
        instances: dict[str, dict[str, Any]] = dict(document["instances"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    try:
        if abs(psutil.Process(pid).create_time() - started) > 0.01:
            return {}
    except psutil.Error:
        return {}
    return instances


def remove_status(path: Path) -> None:
    """Delete the status file (the supervisor is leaving)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def write_stop_report(path: Path, reason: str, stopped: Sequence[Mapping[str, Any]]) -> None:
    """Record, for the ``kq watchdog stop`` that may be waiting, which workers the supervisor stopped.

    Written atomically by the supervisor after it stopped its workers and before it releases the lock,
    so that a ``stop`` that gets the lock finds it complete.

    Args:
        path: The report file (:func:`report_path`).
        reason: Why the supervisor stopped (``received SIGTERM``).
        stopped: One ``StopOutcome.as_dict()`` per worker process it stopped.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "pid": os.getpid(),
        "finished": time.time(),
        "reason": reason,
        "stopped": [dict(outcome) for outcome in stopped],
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(document, indent=1))
    os.replace(temporary, path)


def read_stop_report(path: Path, supervisor: int, since: float) -> list[dict[str, Any]] | None:
    """The workers supervisor ``supervisor`` reported stopping after ``since`` (``time.time()``).

    ``None`` when there is no such report: the supervisor was killed before writing it, or the file
    left behind is another process's (another pid, or written before ``since``).
    """
    try:
        document = json.loads(path.read_text())
        if document["pid"] != supervisor or float(document["finished"]) < since:
            return None
        stopped = document["stopped"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(stopped, list) or not all(isinstance(item, dict) for item in stopped):
        return None
    return stopped


def remove_report(path: Path) -> None:
    """Delete a stop report (read, or left by an earlier supervisor); a failure is only logged."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("cannot remove %s: %s", path, exc)
