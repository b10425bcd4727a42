"""`kq consume` limits with real processes: each stops the worker at the right point with its reason."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest

from kq.core import App
from kq.core.testing import Workspace

pytestmark = pytest.mark.slow

CONFIG = """
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "queues.sqlite3"
visibility_timeout = 2.0
poll_interval = 0.05

[queues.jobs]

[queues.hungry]
consumer = "service"

[allow]
commands = ["record"]

[allow.services]
"kq_hungry" = ["eat"]
"""

HUNGRY = """
kept = []

def eat(megabytes):
    chunk = bytearray(megabytes * 1024 * 1024)
    chunk[::4096] = b"x" * len(chunk[::4096])
    kept.append(chunk)
    return len(kept)
"""

CHECKS = """
import os

def stop_on_flag():
    return "the flag file appeared" if os.path.exists("stop.flag") else None
"""


@pytest.fixture
def space(workspace: Workspace) -> Workspace:
    workspace.write_config(CONFIG)
    (workspace.root / "kq_hungry.py").write_text(HUNGRY)
    (workspace.root / "kq_checks.py").write_text(CHECKS)
    return workspace


def _queue_records(space: Workspace, count: int, **options: str) -> None:
    with App.from_config(space.config) as app:
        app.command_producer("jobs").publish_batch(
            [{"command": "record", "arguments": [f"item{i}"], "options": options} for i in range(count)]
        )


def _messages(space: Workspace, queue: str = "jobs") -> int:
    return int(space.kq_json("managequeue", "info", queue)["messages"])


def test_message_limit(space: Workspace) -> None:
    _queue_records(space, 3)
    worker = space.start_consumer("jobs", "w", "-m", "2")
    assert worker.wait(timeout=60) == 0
    assert "Stopped because: message limit of 2 reached" in space.output("w")
    assert _messages(space) == 1


def test_memory_limit_counts_the_workers_resident_memory(space: Workspace) -> None:
    with App.from_config(space.config) as app:
        app.service_producer("hungry").publish_batch(
            [{"service": "kq_hungry", "method": "eat", "arguments": [40]} for _ in range(10)]
        )
    worker = space.start_consumer("hungry", "w", "-l", "150")
    assert worker.wait(timeout=60) == 0
    line = next(line for line in space.output("w").splitlines() if line.startswith("Stopped because:"))
    print(line)  # the RSS reading, for the test report
    assert line.startswith("Stopped because: memory limit of 150 MB reached (RSS ")
    assert float(line.split("RSS ")[1].split()[0]) >= 150  # shown rounded to 0.1 MB
    left = _messages(space, "hungry")
    assert 2 <= 10 - left <= 5, f"{10 - left} messages consumed before stopping"


def test_failure_limit(space: Workspace) -> None:
    with App.from_config(space.config) as app:  # "forbidden" is not allowed: each one fails
        app.command_producer("jobs").publish_batch([{"command": "forbidden"} for _ in range(4)])
    worker = space.start_consumer("jobs", "w", "--failure-limit", "2")
    assert worker.wait(timeout=60) == 0
    assert "Stopped because: failure limit of 2 reached" in space.output("w")
    assert _messages(space) == 2
    assert _messages(space, "jobs.failed") == 2


def test_custom_check(space: Workspace) -> None:
    _queue_records(space, 1)
    worker = space.start_consumer("jobs", "w", "--check", "kq_checks:stop_on_flag")
    space.wait_for(lambda: len(space.lines()) >= 2, 30, "the first message")
    (space.root / "stop.flag").write_text("")
    assert worker.wait(timeout=30) == 0
    assert "Stopped because: the flag file appeared" in space.output("w")


def test_grace_abandons_a_long_message_which_is_redelivered(space: Workspace) -> None:
    _queue_records(space, 1, sleep="30")
    worker = space.start_consumer("jobs", "w", "--grace", "1")
    space.wait_for(lambda: ["start", "item0", "w", "1"] in space.lines(), 30, "the start")
    started = time.monotonic()
    space.stop(worker)
    assert worker.returncode == 130
    assert time.monotonic() - started < 15
    assert "the grace period of 1s ran out" in space.output("w")
    assert ["done", "item0", "w", "1"] not in space.lines()
    info = space.kq_json("managequeue", "info", "jobs")
    assert (info["messages"], info["in_flight"]) == (1, 0), "the abandoned message must be back at once"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_port_serves_prometheus_metrics(space: Workspace) -> None:
    pytest.importorskip("prometheus_client")
    _queue_records(space, 2)
    port = _free_port()
    worker = space.start_consumer("jobs", "w", "--metrics-port", str(port))
    space.wait_for(lambda: sum(1 for words in space.lines() if words[0] == "done") == 2, 30, "two messages")

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    # The count and the in-progress gauge are updated one after the other: scrape until both settled.
    settled = ('kq_messages_total{queue="jobs"} 2.0', 'kq_messages_inprogress{queue="jobs"} 0.0')
    text = ""
    deadline = time.monotonic() + 10
    while not all(line in text for line in settled) and time.monotonic() < deadline:
        text = scrape()
        time.sleep(0.2)
    assert settled[0] in text
    assert settled[1] in text
    assert space.stop(worker) == 0
