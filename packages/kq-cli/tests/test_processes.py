"""Real `kq consume` processes on one sqlite queue: competition, crashes and signals.

The command the workers run is a small recorder script (configured as the console prefix) that appends
"start/done <item> <worker label> <delivery count>" lines to a log, and can sleep to outlive the
visibility timeout (1 s here), so these tests also prove that leases are extended while a command runs.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from kq.core import App

pytestmark = pytest.mark.slow

RECORDER = """
import os, sys, time
items, sleep = [], 0.0
for arg in sys.argv[2:]:
    if arg.startswith("--sleep="):
        sleep = float(arg.split("=", 1)[1])
    elif arg.startswith("--sleep-first="):  # only on the first delivery
        sleep = float(arg.split("=", 1)[1]) if os.environ["KQ_DELIVERY_COUNT"] == "1" else 0.0
    elif arg != "--":
        items.append(arg)
def write(word):
    line = f"{word} {items[0]} {os.environ['KQ_LABEL']} {os.environ['KQ_DELIVERY_COUNT']}\\n"
    fd = os.open(os.environ["RECORD_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, line.encode())
    os.close(fd)
write("start")
time.sleep(sleep)
write("done")
"""


class Workspace:
    """A folder with a kq.toml (sqlite, 1 s visibility timeout) and the recorder command."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / "record.log"
        (root / "record.py").write_text(RECORDER)
        (root / "kq.toml").write_text(
            f"""
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "queues.sqlite3"
visibility_timeout = 1.0
poll_interval = 0.05

[queues.jobs]

[console]
prefix = [{json.dumps(sys.executable)}, {json.dumps(str(root / "record.py"))}]
env = {{ RECORD_LOG = {json.dumps(str(self.log))} }}

[allow]
commands = ["record"]
"""
        )
        self.processes: list[subprocess.Popen[bytes]] = []

    def kq(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a kq command to completion."""
        return subprocess.run(
            [sys.executable, "-m", "kq.cli", "--config", str(self.root / "kq.toml"), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    def start_consumer(self, label: str, *extra: str) -> subprocess.Popen[bytes]:
        """Start `kq consume jobs` in the background."""
        # Output goes to files: a pipe nobody reads could fill up and block the worker.
        with (self.root / f"{label}.out").open("wb") as out, (self.root / f"{label}.err").open("wb") as err:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kq.cli",
                    "--config",
                    str(self.root / "kq.toml"),
                    "consume",
                    "jobs",
                    "--label",
                    label,
                    "--poll-interval",
                    "0.2",
                    *extra,
                ],
                cwd=self.root,
                stdout=out,
                stderr=err,
            )
        self.processes.append(process)
        return process

    def output(self, label: str) -> str:
        """What worker ``label`` printed (stdout, then stderr)."""
        return (self.root / f"{label}.out").read_text() + (self.root / f"{label}.err").read_text()

    def lines(self) -> list[list[str]]:
        """The recorder log, split into words."""
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines()]

    def wait_for_lines(self, predicate: object, timeout: float, what: str) -> list[list[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.lines()
            if predicate(lines):  # type: ignore[operator]
                return lines
            time.sleep(0.05)
        raise AssertionError(f"{what} not seen within {timeout}s; log: {self.lines()}")

    def info(self) -> dict[str, int]:
        return json.loads(self.kq("managequeue", "info", "jobs", "--format", "json").stdout)  # type: ignore[no-any-return]

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
                process.kill()
                process.wait()


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    space = Workspace(tmp_path)
    try:
        yield space
    finally:
        space.cleanup()


def test_two_consumers_never_process_a_message_twice(workspace: Workspace) -> None:
    """40 messages, two live workers, some commands outliving the lease: each runs exactly once."""
    calls = [
        {"command": "record", "arguments": [f"item{i}"], "options": {"sleep": "2.5"} if i % 10 == 0 else {}}
        for i in range(40)
    ]
    with App.from_config(workspace.root / "kq.toml") as app:
        app.command_producer("jobs").publish_batch(calls)
    first = workspace.start_consumer("A")
    second = workspace.start_consumer("B")

    lines = workspace.wait_for_lines(
        lambda ls: sum(1 for w in ls if w[0] == "done") >= 40, 90, "40 done lines"
    )
    for process in (first, second):
        process.send_signal(signal.SIGTERM)
    for process in (first, second):
        assert process.wait(timeout=30) == 0

    starts = collections.Counter(words[1] for words in lines if words[0] == "start")
    assert starts == {f"item{i}": 1 for i in range(40)}, "some message was executed twice"
    assert all(words[3] == "1" for words in lines), "no message should have been redelivered"
    workers = collections.Counter(words[2] for words in lines if words[0] == "done")
    assert set(workers) == {"A", "B"}, f"both workers should have worked: {workers}"
    info = workspace.info()
    assert (info["messages"], info["in_flight"]) == (0, 0)


def test_sigkill_mid_message_loses_nothing(workspace: Workspace) -> None:
    """A worker killed with SIGKILL while a command runs: the message comes back after the lease."""
    workspace.kq("queuecommand", "jobs", "record", "precious", "-o", "sleep-first=30")
    victim = workspace.start_consumer("victim")
    workspace.wait_for_lines(lambda ls: ["start", "precious", "victim", "1"] in ls, 30, "the victim's start")
    orphans = psutil.Process(victim.pid).children(recursive=True)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    for child in orphans:  # the command survives its worker (own session); stop it, as a crashed host would
        child.kill()
    assert workspace.info()["in_flight"] == 1

    rescuer = workspace.start_consumer("rescuer", "-m", "1")
    assert rescuer.wait(timeout=30) == 0
    lines = workspace.lines()
    assert ["start", "precious", "rescuer", "2"] in lines
    assert ["done", "precious", "rescuer", "2"] in lines
    info = workspace.info()
    assert (info["messages"], info["in_flight"]) == (0, 0)


def test_sigterm_finishes_the_current_message(workspace: Workspace) -> None:
    """SIGTERM during a 2-second command: the command completes, is acknowledged, the worker exits 0."""
    workspace.kq("queuecommand", "jobs", "record", "graceful", "-o", "sleep=2")
    worker = workspace.start_consumer("worker")
    workspace.wait_for_lines(lambda ls: ["start", "graceful", "worker", "1"] in ls, 30, "the start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert "Stopped because: received SIGTERM" in workspace.output("worker")
    assert ["done", "graceful", "worker", "1"] in workspace.lines()
    info = workspace.info()
    assert (info["messages"], info["in_flight"]) == (0, 0)
