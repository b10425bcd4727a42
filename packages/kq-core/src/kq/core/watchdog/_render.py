"""The rows of ``kq watchdog check``: one per worker process, measured with psutil."""

from __future__ import annotations

from typing import Any

import psutil

from kq.core.watchdog._model import WorkerInstance, name_of
from kq.core.watchdog._procs import command_of, parse_command_line, rss_megabytes, uptime


def instance_row(instance: WorkerInstance, process: psutil.Process | None, state: str) -> dict[str, Any]:
    """A ``check`` row for a configured instance (``process`` is ``None`` when it is not running)."""
    return {
        "worker": instance.spec.name,
        "label": instance.label,
        "queue": instance.spec.queue,
        "state": state,
        **_measure(process),
        "log": str(instance.log),
    }


def stray_row(label: str, process: psutil.Process) -> dict[str, Any]:
    """A ``check`` row for a process with a watchdog label that is not configured (any more)."""
    parsed = parse_command_line(command_of(process))
    return {
        "worker": name_of(label),
        "label": label,
        "queue": parsed.queue if parsed else "",
        "state": "unconfigured",
        **_measure(process),
        "log": None,
    }


def _measure(process: psutil.Process | None) -> dict[str, Any]:
    if process is None:
        return {"pid": None, "uptime": None, "rss": None}
    age, rss = uptime(process), rss_megabytes(process)
    return {
        "pid": process.pid,
        "uptime": None if age is None else round(age, 1),
        "rss": None if rss is None else round(rss, 1),
    }
