"""ExampleQueueManager: counts, purges and deletes queue folders."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from typing import Any

from kq.core.driver import QueueManager
from kq.drivers.example._driver import ExampleDriver
from kq.drivers.example._store import QueueFolder


class ExampleQueueManager(QueueManager):
    """``kq managequeue`` on the folders under the driver's ``path``."""

    driver: ExampleDriver

    def list_available(self) -> list[str]:
        """The queues that have a folder."""
        try:
            entries = os.listdir(self.driver.folder)
        except FileNotFoundError:
            return []
        root = self.driver.folder
        return sorted(QueueFolder.queue_name(e) for e in entries if (root / e / "ready").is_dir())

    def info(self, queue: str) -> dict[str, Any]:
        """Waiting (``messages``), delayed and unacknowledged (``in_flight``) messages, and the folder."""
        folder = QueueFolder(self.driver.folder, queue)
        now = time.time_ns()
        folder.reclaim(now)
        waiting = [name for name in folder.waiting() if not (name.expires and name.expires <= now)]
        delayed = sum(1 for name in waiting if name.available > now)
        return {
            "queue": queue,
            "exists": folder.exists(),
            "messages": len(waiting) - delayed,
            "delayed": delayed,
            "in_flight": len(folder.claims()),
            "folder": str(folder.path),
        }

    def purge(self, queue: str) -> int:
        """Delete the waiting and delayed messages (not those being handled); return how many."""
        folder = QueueFolder(self.driver.folder, queue)
        count = 0
        for name in folder.waiting():
            with contextlib.suppress(FileNotFoundError):
                (folder.ready / str(name)).unlink()
                count += 1
        return count

    def delete(self, queue: str) -> bool:
        """Delete the queue's folder and every message in it; ``False`` when there was none."""
        folder = QueueFolder(self.driver.folder, queue)
        if not folder.path.is_dir():
            return False
        shutil.rmtree(folder.path, ignore_errors=True)
        return True
