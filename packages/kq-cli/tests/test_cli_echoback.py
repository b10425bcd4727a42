"""``kq echoback``: the demo command workers run."""

from __future__ import annotations

import os
import re
import socket
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from kq.cli import EXIT_OK, EXIT_USAGE, cli

LINE = re.compile(
    r"It is (?P<stamp>\d{4}/\d\d/\d\d - \d\d:\d\d:\d\d\.\d{3}) and process with pid (?P<pid>\d+) "
    r"on host (?P<host>.+) says: (?P<input>.*)"
)


@pytest.mark.parametrize("text", ["hello", "hello world", "héllo wörld ✓", "--"])
def test_echoback_prints_the_line(text: str) -> None:
    before = datetime.now()
    result = CliRunner().invoke(cli, ["echoback", "--", text], catch_exceptions=False)
    assert result.exit_code == EXIT_OK, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1
    match = LINE.fullmatch(lines[0])
    assert match, lines[0]
    assert match["input"] == text
    assert int(match["pid"]) == os.getpid()  # CliRunner runs in this process
    assert match["host"] == socket.gethostname()
    stamp = datetime.strptime(match["stamp"], "%Y/%m/%d - %H:%M:%S.%f")
    assert before - timedelta(seconds=1) <= stamp <= datetime.now() + timedelta(seconds=1)
    assert not Path(".kq").exists()  # echoback needs no queue


def test_echoback_appends_to_the_file() -> None:
    outputs = []
    for _ in range(2):
        result = CliRunner().invoke(cli, ["echoback", "INPUT", "-f", "out.txt"], catch_exceptions=False)
        assert result.exit_code == EXIT_OK, result.output
        outputs.append(result.output)
    lines = Path("out.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 2
    assert lines == outputs  # the file gets exactly the printed line, newline-terminated
    for line in lines:
        match = LINE.fullmatch(line.rstrip("\n"))
        assert match
        assert match["input"] == "INPUT"


def test_echoback_long_option_and_existing_file() -> None:
    Path("out.txt").write_text("first\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["echoback", "x", "--file", "out.txt"], catch_exceptions=False)
    assert result.exit_code == EXIT_OK
    assert Path("out.txt").read_text(encoding="utf-8") == "first\n" + result.output


def test_echoback_file_that_is_a_directory_is_a_usage_error() -> None:
    Path("adir").mkdir()
    result = CliRunner().invoke(cli, ["echoback", "x", "-f", "adir"], catch_exceptions=False)
    assert result.exit_code == EXIT_USAGE
    assert "adir" in result.output
    assert "Traceback" not in result.output


def test_echoback_needs_input() -> None:
    result = CliRunner().invoke(cli, ["echoback"], catch_exceptions=False)
    assert result.exit_code == EXIT_USAGE
    assert "INPUT" in result.output
