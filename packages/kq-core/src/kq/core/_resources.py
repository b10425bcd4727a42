"""Measuring a worker: resident memory of the process and of its children (psutil)."""

from __future__ import annotations

import time
from typing import Any

MB = 1024 * 1024


class MemoryGauge:
    """Reads the RSS of this process plus that of its children, in MB.

    The process's own RSS is cheap to read and read every time; listing the children means scanning
    every process of the machine, so it happens at most every ``children_interval`` seconds (a
    console-command worker's children are gone between messages anyway).
    """

    def __init__(self, children_interval: float = 1.0) -> None:
        import psutil  # only workers with a memory limit pay for importing psutil

        self._process: Any = psutil.Process()
        self._psutil: Any = psutil
        self._children_interval = children_interval
        self._children_rss = 0
        self._children_read_at = float("-inf")

    def megabytes(self) -> float:
        """Current RSS of the worker and its children."""
        now = time.monotonic()
        if now - self._children_read_at >= self._children_interval:
            self._children_read_at = now
            self._children_rss = 0
            for child in self._process.children(recursive=True):
                try:
                    self._children_rss += child.memory_info().rss
                except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                    continue
        return float(self._process.memory_info().rss + self._children_rss) / MB
