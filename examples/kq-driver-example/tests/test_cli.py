"""The example driver as a user meets it: listed by ``kq managedriver list`` from its entry point, and
running the tutorial's commands through ``kq`` with ``type = "example"`` in kq.toml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KQ = Path(sys.executable).parent / "kq"

pytestmark = pytest.mark.skipif(not KQ.exists(), reason=f"no kq command next to {sys.executable}")

CONFIG = """
[drivers.files]
type = "example"
path = "var/queues"
visibility_timeout = 5

[queues.demo]
driver = "files"

[allow]
commands = ["echoback"]
"""


def kq(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KQ_")}
    return subprocess.run(
        [str(KQ), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_managedriver_list_shows_the_driver_from_its_distribution(tmp_path: Path) -> None:
    listed = kq(tmp_path, "managedriver", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    types = {entry["type"]: entry for entry in json.loads(listed.stdout)["types"]}
    example = types["example"]
    assert example["distribution"] == "kq-driver-example"
    assert example["entry_point"] == "kq.drivers.example:ExampleDriver"
    assert example["capabilities"]["delivery_count"] == "exact"
    assert set(example["options"]) == {"path", "visibility_timeout", "poll_interval"}


def test_a_worker_runs_a_command_queued_on_the_example_driver(tmp_path: Path) -> None:
    (tmp_path / "kq.toml").write_text(CONFIG, encoding="utf-8")
    queued = kq(tmp_path, "queuecommand", "demo", "echoback", "hello from a file", "-o", "f=out.txt")
    assert queued.returncode == 0, queued.stderr
    waiting = json.loads(kq(tmp_path, "managequeue", "info", "demo", "--format", "json").stdout)
    assert (waiting["messages"], waiting["folder"]) == (1, str(tmp_path / "var" / "queues" / "demo"))
    worker = kq(tmp_path, "consume", "demo", "-m", "1", "-t", "30")
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout == "Stopped because: message limit of 1 reached\n"
    assert (tmp_path / "out.txt").read_text().endswith("says: hello from a file\n")
    done = json.loads(kq(tmp_path, "managequeue", "info", "demo", "--format", "json").stdout)
    assert (done["messages"], done["in_flight"]) == (0, 0)
    assert kq(
        tmp_path, "managequeue", "list-available", "-i", "files", "--format", "json"
    ).stdout.split() == [
        "[",
        '"demo"',
        "]",
    ]


def test_an_unknown_option_is_a_configuration_error_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "kq.toml").write_text(
        CONFIG.replace("visibility_timeout", "visibility_timout"), encoding="utf-8"
    )
    info = kq(tmp_path, "managequeue", "info", "demo")
    assert info.returncode == 78
    assert "did you mean 'visibility_timeout'?" in info.stderr
    assert "drivers.files.visibility_timout" in info.stderr
