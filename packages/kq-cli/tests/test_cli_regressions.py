"""Regression tests for CLI defects found in review; each failed before its fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
