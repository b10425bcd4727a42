"""``kq --help`` on every command, help text on every option, and ``kq -V``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from kq.cli import EXIT_OK, __version__, cli


def _walk(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):  # kq's own are imported when asked for
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            yield from _walk(sub, (*path, name))


COMMANDS = [path for path, _ in _walk(cli)]


def test_every_expected_command_is_registered() -> None:
    assert set(COMMANDS) >= {
        (),
        ("queuecommand",),
        ("queuemessage",),
        ("consume",),
        ("managedriver",),
        ("managedriver", "list"),
        ("managequeue",),
        ("echoback",),
    }


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "kq")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_zero(path: tuple[str, ...], flag: str) -> None:
    result = CliRunner().invoke(cli, [*path, flag], catch_exceptions=False, prog_name="kq")
    assert result.exit_code == EXIT_OK, result.output
    assert result.output.startswith(f"Usage: kq {' '.join(path)}".rstrip() + " ")
    assert "Traceback" not in result.output
    # nothing was created by asking for help
    assert not Path(".kq").exists()


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "kq")
def test_help_lists_every_option(path: tuple[str, ...]) -> None:
    command = dict(_walk(cli))[path]
    result = CliRunner().invoke(cli, [*path, "--help"], catch_exceptions=False)
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.opts[-1] in result.output, (path, param.opts)


def test_every_option_has_help_text() -> None:
    missing = [
        (" ".join(path) or "kq", param.name)
        for path, command in _walk(cli)
        for param in command.params
        if isinstance(param, click.Option) and not (param.help and param.help.strip())
    ]
    checked = sum(isinstance(p, click.Option) for _, c in _walk(cli) for p in c.params)
    assert checked >= 30  # the walk really found the options
    assert missing == []


def test_every_command_has_a_docstring() -> None:
    for path, command in _walk(cli):
        assert command.help, path
        assert command.help.strip(), path


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str) -> None:
    result = CliRunner().invoke(cli, [flag], catch_exceptions=False)
    assert result.exit_code == EXIT_OK
    assert result.output.splitlines()[0] == f"kq, version {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", __version__)


def test_group_without_command_shows_usage() -> None:
    result = CliRunner().invoke(cli, [], catch_exceptions=False, prog_name="kq")
    assert "Usage: kq" in result.output
    for name in ("queuecommand", "queuemessage", "consume", "managedriver", "managequeue", "echoback"):
        assert name in result.output


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["nosuchcommand"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "No such command 'nosuchcommand'" in result.output
