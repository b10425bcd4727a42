"""Regression tests for CLI defects found in review; each failed before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kq.cli import cli


def test_closed_stdout_is_not_an_unexpected_error(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "kq.cli", "managedriver", "list", "--format", "json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # like `kq ... | head -0`
    stderr = process.stderr.read().decode()
    process.stderr.close()
    process.wait(timeout=30)
    assert "unexpected" not in stderr
    assert "Traceback" not in stderr


def test_driver_listing_shows_queue_options(tmp_path: Path, monkeypatch: object) -> None:
    result = CliRunner().invoke(cli, ["managedriver", "list", "--format", "json"], catch_exceptions=False)
    types = {item["type"]: item for item in json.loads(result.stdout)["types"]}
    assert "visibility_timeout" in types["sqlite"]["queue_options"]


def test_the_kq_script_imports_handlers_from_the_current_folder(tmp_path: Path) -> None:
    """``consumer = "tasks:handle"`` with tasks.py where ``kq`` runs: the console script (whose own
    folder is what Python puts on sys.path) finds it, as ``python -m kq.cli`` does."""
    script = Path(sys.executable).parent / "kq"
    if not script.exists():
        pytest.skip("the kq console script is not installed next to this interpreter")
    (tmp_path / "kq.toml").write_text('[queues.events]\nconsumer = "tasks:handle"\n')
    (tmp_path / "tasks.py").write_text(
        "def handle(body, delivery=None):\n    open('handled.txt', 'w').write(repr(body))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("KQ_CONFIG", "PYTHONPATH")}
    queued = subprocess.run(
        [str(script), "queuemessage", "events", '{"a": 1}'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert queued.returncode == 0, queued.stderr
    worker = subprocess.run(
        [str(script), "consume", "events", "-m", "1", "-t", "20"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert worker.returncode == 0, worker.stderr
    assert "No module named" not in worker.stderr
    assert (tmp_path / "handled.txt").read_text() == "{'a': 1}"
