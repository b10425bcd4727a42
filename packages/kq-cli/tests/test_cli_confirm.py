"""Destructive commands ask on a terminal, unless ``-y``: ``managequeue purge|delete`` and
``failed remove --all``, run as real processes on a pseudo-terminal (and without one: scripts are
not asked)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kq.cli import EXIT_FAILURE, EXIT_OK

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")


def _kq(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kq.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _on_terminal(*args: str, answer: str | None, cwd: Path) -> tuple[int, str]:
    """Run ``kq ARGS`` with a pseudo-terminal as stdin and stdout; type ``answer`` once it asks.
    Returns the exit status and what the terminal showed."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "kq.cli", *args],
        cwd=cwd,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    shown = b""
    answered = answer is None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the process closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
                if not answered and b"[y/N]" in shown:
                    os.write(controller, answer.encode() + b"\n")  # type: ignore[union-attr]
                    answered = True
            elif process.poll() is not None:
                break
        status = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    return status, shown.decode(errors="replace")


def _waiting(queue: str, cwd: Path) -> int:
    done = _kq("managequeue", "info", queue, "--format", "json", cwd=cwd)
    assert done.returncode == EXIT_OK, done.stderr
    return int(json.loads(done.stdout)["messages"])


@pytest.fixture
def two_messages(tmp_path: Path) -> Path:
    done = _kq("queuemessage", "demo", "{}", "-n", "2", cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr
    return tmp_path


def test_purge_asks_and_no_keeps_the_messages(two_messages: Path) -> None:
    status, shown = _on_terminal("managequeue", "purge", "demo", answer="n", cwd=two_messages)
    assert "Delete every waiting message of queue demo (driver default)? [y/N]" in shown
    assert status == EXIT_FAILURE
    assert "Aborted" in shown
    assert _waiting("demo", two_messages) == 2


def test_purge_asks_and_yes_purges(two_messages: Path) -> None:
    status, shown = _on_terminal("managequeue", "purge", "demo", answer="y", cwd=two_messages)
    assert status == EXIT_OK, shown
    assert "Purged 2 message(s) from queue demo" in shown
    assert _waiting("demo", two_messages) == 0


def test_delete_with_yes_does_not_ask(two_messages: Path) -> None:
    status, shown = _on_terminal("managequeue", "delete", "demo", "-y", answer=None, cwd=two_messages)
    assert status == EXIT_OK, shown
    assert "[y/N]" not in shown
    assert "Deleted queue demo" in shown


def test_delete_asks_on_a_terminal(two_messages: Path) -> None:
    status, shown = _on_terminal("managequeue", "delete", "demo", answer="n", cwd=two_messages)
    assert "Delete queue demo and all its messages (driver default)? [y/N]" in shown
    assert status == EXIT_FAILURE
    assert _waiting("demo", two_messages) == 2


def test_scripts_are_not_asked(two_messages: Path) -> None:
    """stdin not a terminal (cron, pipes, CI): the command line is the confirmation."""
    done = _kq("managequeue", "purge", "demo", cwd=two_messages)
    assert done.returncode == EXIT_OK, done.stderr
    assert "[y/N]" not in done.stdout + done.stderr
    assert _waiting("demo", two_messages) == 0


def test_failed_remove_all_asks(tmp_path: Path) -> None:
    # One dead letter: a message the queue's console consumer refuses (unsigned messages are
    # dead-lettered as such), by a worker that stops after it.
    assert _kq("queuemessage", "jobs", "{}", cwd=tmp_path).returncode == EXIT_OK
    worker = _kq("consume", "jobs", "-m", "1", "-t", "20", cwd=tmp_path)
    assert worker.returncode == EXIT_OK, worker.stderr
    shown_before = _kq("failed", "show", "jobs", "--idle", "0.05", "--format", "json", cwd=tmp_path)
    assert len(json.loads(shown_before.stdout)) == 1, shown_before.stdout + shown_before.stderr
    status, shown = _on_terminal(
        "failed", "remove", "jobs", "--all", "--idle", "0.05", answer="n", cwd=tmp_path
    )
    assert "Delete every message of jobs.failed for good? [y/N]" in shown
    assert status == EXIT_FAILURE
    status, shown = _on_terminal(
        "failed", "remove", "jobs", "--all", "--idle", "0.05", answer="y", cwd=tmp_path
    )
    assert status == EXIT_OK, shown
    assert "1 message removed from jobs.failed" in shown
