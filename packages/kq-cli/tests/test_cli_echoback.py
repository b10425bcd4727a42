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


def _refused(path: str, workdir: Path) -> str:
    result = CliRunner().invoke(cli, ["echoback", "x", "-f", path], catch_exceptions=False)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "Traceback" not in result.output
    assert f"'{path}'" in result.output  # names the refused path
    assert "inside the current directory" in result.output
    assert not list(workdir.parent.glob("escaped*")), "nothing may be written outside"
    return result.output


def test_echoback_refuses_an_absolute_path(workdir: Path) -> None:
    target = workdir.parent / "escaped-absolute.txt"
    _refused(str(target), workdir)
    assert not target.exists()
    # An absolute path inside the current directory is refused too: the rule is simple to state.
    _refused(str(workdir / "inside.txt"), workdir)
    assert not (workdir / "inside.txt").exists()


@pytest.mark.parametrize("path", ["../escaped-dotdot.txt", "sub/../../escaped-dotdot.txt"])
def test_echoback_refuses_a_path_that_climbs_out(workdir: Path, path: str) -> None:
    (workdir / "sub").mkdir()
    _refused(path, workdir)


def test_echoback_refuses_a_symlink_pointing_outside(workdir: Path) -> None:
    outside = workdir.parent / "escaped-link-target.txt"
    (workdir / "link.txt").symlink_to(outside)  # dangling: open() would create the target
    (workdir / "linkdir").symlink_to(workdir.parent)
    _refused("link.txt", workdir)
    _refused("linkdir/escaped-via-dir.txt", workdir)
    assert not outside.exists()


def test_echoback_appends_to_a_relative_path_in_a_subfolder(workdir: Path) -> None:
    (workdir / "sub" / "deeper").mkdir(parents=True)
    (workdir / "inner-link.txt").symlink_to(workdir / "sub" / "target.txt")  # a link that stays inside
    for path in ["sub/deeper/out.txt", "sub/../sub/deeper/out.txt", "inner-link.txt"]:
        result = CliRunner().invoke(cli, ["echoback", "x", "-f", path], catch_exceptions=False)
        assert result.exit_code == EXIT_OK, result.output
    assert len((workdir / "sub" / "deeper" / "out.txt").read_text(encoding="utf-8").splitlines()) == 2
    assert LINE.fullmatch((workdir / "sub" / "target.txt").read_text(encoding="utf-8").rstrip("\n"))


def test_echoback_in_a_missing_folder_is_an_error_naming_the_file(workdir: Path) -> None:
    result = CliRunner().invoke(cli, ["echoback", "x", "-f", "missing/out.txt"], catch_exceptions=False)
    assert result.exit_code != EXIT_OK
    assert "missing/out.txt" in result.output
    assert "Traceback" not in result.output
