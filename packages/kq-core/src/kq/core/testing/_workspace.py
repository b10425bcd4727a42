"""End-to-end tests with real ``kq`` processes: a folder with a kq.toml, commands, workers.

The processes run ``python -m kq.cli`` (kq-cli must be installed). Every worker started here writes its
output to files in the folder and is killed, with its children, by :meth:`Workspace.cleanup`, so a
failing test leaves nothing running. Use the :func:`workspace` fixture, or build one yourself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

#: A command for workers to run: appends "start|done <item> <label> <delivery count>" to $RECORD_LOG and
#: sleeps --sleep=S seconds, or --sleep-first=S seconds on the first delivery only.
RECORDER_COMMAND = """
import os, sys, time
items, sleep = [], 0.0
for arg in sys.argv[2:]:
    if arg.startswith("--sleep="):
        sleep = float(arg.split("=", 1)[1])
    elif arg.startswith("--sleep-first="):
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

#: A message consumer (``consumer = "kq_recorder:record"``) appending each JSON body's "n" to $RECORD_LOG.
RECORDER_CONSUMER = """
import os

def record(body, delivery):
    fd = os.open(os.environ["RECORD_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{body['n']} {delivery.delivery_count}\\n".encode())
    os.close(fd)
    return body["n"]
"""


class Workspace:
    """A folder for one test: ``kq.toml``, helper scripts, logs, and the processes started from it."""

    def __init__(self, root: Path) -> None:
        """Prepare ``root`` (usually pytest's ``tmp_path``) with the recorder scripts."""
        self.root = root
        self.log = root / "record.log"
        (root / "record.py").write_text(RECORDER_COMMAND)
        (root / "kq_recorder.py").write_text(RECORDER_CONSUMER)
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def config(self) -> Path:
        """The configuration file every command of this workspace uses."""
        return self.root / "kq.toml"

    def write_config(self, body: str, *, recorder: bool = True) -> None:
        """Write kq.toml: ``body``, plus a [console] section making workers run the recorder command
        (``recorder=False`` keeps the default: workers run ``kq`` commands such as ``echoback``)."""
        if not recorder:
            self.config.write_text(body)
            return
        self.config.write_text(
            body
            + f"""
[console]
prefix = [{json.dumps(sys.executable)}, {json.dumps(str(self.root / "record.py"))}]
env = {{ RECORD_LOG = {json.dumps(str(self.log))} }}
"""
        )

    def env(self) -> dict[str, str]:
        """The environment of the processes: the recorder's log, and this folder on PYTHONPATH."""
        env = dict(os.environ)
        env["RECORD_LOG"] = str(self.log)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.root), env.get("PYTHONPATH", "")]))
        return env

    def kq(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a kq command to completion."""
        done = subprocess.run(
            [sys.executable, "-m", "kq.cli", "--config", str(self.config), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env(),
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kq {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def kq_json(self, *args: str) -> Any:
        """Run a kq command with ``--format json`` and parse its output."""
        return json.loads(self.kq(*args, "--format", "json").stdout)

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        """Start a process in the background, its output in ``<name>.out`` / ``<name>.err``."""
        with (self.root / f"{name}.out").open("wb") as out, (self.root / f"{name}.err").open("wb") as err:
            process = subprocess.Popen(argv, cwd=self.root, stdout=out, stderr=err, env=self.env())
        self.processes.append(process)
        return process

    def start_consumer(self, queue: str, label: str, *extra: str) -> subprocess.Popen[bytes]:
        """Start ``kq consume queue --label label`` in the background."""
        return self.start(
            label,
            sys.executable,
            "-m",
            "kq.cli",
            "--config",
            str(self.config),
            "consume",
            queue,
            "--label",
            label,
            "--poll-interval",
            "0.2",
            *extra,
        )

    def output(self, name: str) -> str:
        """What process ``name`` printed (stdout, then stderr)."""
        return (self.root / f"{name}.out").read_text() + (self.root / f"{name}.err").read_text()

    def lines(self) -> list[list[str]]:
        """The recorder's log, split into words."""
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines()]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` until it is true; fail with the recorder's log after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} not seen within {timeout}s; record log: {self.lines()}")

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 30) -> int:
        """SIGTERM, then wait; returns the exit code."""
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=timeout)

    def cleanup(self) -> None:
        """Kill every process started here that still runs, with its children."""
        for process in self.processes:
            if process.poll() is None:
                try:
                    children = psutil.Process(process.pid).children(recursive=True)
                except psutil.NoSuchProcess:
                    children = []
                for child in children:
                    child.kill()
                process.kill()
                process.wait()


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A :class:`Workspace` in ``tmp_path``, cleaned up after the test."""
    space = Workspace(tmp_path)
    try:
        yield space
    finally:
        space.cleanup()
