"""`kq watchdog check` as a monitoring probe: 0 when every configured worker runs, 1 when one is down
(stopped, backoff or fatal), with real worker processes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from kq.cli import EXIT_FAILURE, EXIT_OK
from kq.core.testing import Workspace

pytestmark = pytest.mark.slow

CONFIG = """
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "q.sqlite3"
poll_interval = 0.05

[queues.jobs]
[queues.mail]

[allow]
commands = ["record"]

[workers.jobs]
queue = "jobs"
count = 2
options = { poll_interval = 0.2 }

[workers.mail]
queue = "mail"
options = { poll_interval = 0.2 }
"""

#: A worker that cannot start (its queue is not configured): FATAL under `kq watchdog run`.
BROKEN = """
[workers.broken]
queue = "missing"
"""


@pytest.fixture
def space(workspace: Workspace) -> Iterator[Workspace]:
    workspace.write_config(CONFIG)
    yield workspace
    workspace.cleanup()
    workspace.kq("watchdog", "stop", "--grace", "2", check=False)


def _check(space: Workspace, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    done = space.kq("watchdog", "check", "--format", "json", *args, check=False)
    return done.returncode, json.loads(done.stdout), done.stderr


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen within {timeout}s")


def test_no_worker_configured_is_0(workspace: Workspace) -> None:
    workspace.write_config("[queues.jobs]\n")
    done = workspace.kq("watchdog", "check", check=False)
    assert done.returncode == EXIT_OK
    assert "no workers configured" in done.stdout


def test_0_when_all_run_1_when_one_is_stopped(space: Workspace) -> None:
    code, rows, stderr = _check(space)
    assert code == EXIT_FAILURE  # nothing started yet
    assert {row["state"] for row in rows} == {"stopped"}
    assert (
        "kq: 3 of 3 worker processes not running: jobs-1 (stopped), jobs-2 (stopped), mail-1 (stopped)"
        in (stderr)
    )

    space.kq("watchdog", "start")
    code, rows, stderr = _check(space)
    assert code == EXIT_OK, stderr
    assert {row["state"] for row in rows} == {"running"}
    assert stderr == ""  # a read-only command: no INFO lines
    assert space.kq("workerswatchdog", "check", check=False).returncode == EXIT_OK

    pid = next(row["pid"] for row in rows if row["label"] == "jobs-2")
    psutil.Process(pid).kill()
    _wait(lambda: _check(space)[0] == EXIT_FAILURE, 10, "jobs-2 seen down")
    code, rows, stderr = _check(space)
    assert {row["label"]: row["state"] for row in rows} == {
        "jobs-1": "running",
        "jobs-2": "stopped",
        "mail-1": "running",
    }
    assert "kq: 1 of 3 worker processes not running: jobs-2 (stopped)" in stderr
    # text output too, and the PHP name
    done = space.kq("watchdog", "check", check=False)
    assert done.returncode == EXIT_FAILURE
    assert "jobs-2" in done.stdout
    assert space.kq("workerswatchdog", "check", check=False).returncode == EXIT_FAILURE


def test_a_fatal_worker_under_a_supervisor_is_1(space: Workspace) -> None:
    space.write_config(CONFIG + BROKEN)
    space.start(
        "run",
        sys.executable,
        "-m",
        "kq.cli",
        "--config",
        str(space.config),
        "watchdog",
        "run",
        "--poll-interval",
        "0.1",
        "--start-seconds",
        "2",
        "--max-retries",
        "1",
    )
    _wait(
        lambda: (
            (r := _check(space)[1]) and {x["label"]: x["state"] for x in r}.get("broken-1") == "fatal" and r
        ),
        30,
        "broken-1 fatal",
    )
    _wait(
        lambda: all(r["state"] == "running" for r in _check(space)[1] if r["label"] != "broken-1"),
        20,
        "others",
    )
    code, _, stderr = _check(space)
    assert code == EXIT_FAILURE
    assert "kq: 1 of 4 worker processes not running: broken-1 (fatal)" in stderr
