"""Commands from other distributions: the ``kq.commands`` entry points and the kq.cli.plugin API."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import kq.cli
from kq.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, cli, plugin
from kq.cli._main import _plugin_commands

#: A command as another distribution writes it: only kq.cli.plugin and click.
HELLO = '''
"""kq hello: a command from another distribution."""

import click

from kq.cli.plugin import State, driver_option, emit, format_option, json_option, pass_state


@click.command()
@click.argument("name")
@json_option("-j", "--json-extra", kind=dict, help="Extra fields as a JSON object.")
@driver_option
@format_option
@pass_state
def hello(state: State, name, json_extra, driver, output_format) -> None:
    """Say hello to NAME (from {dist})."""
    emit({{"hello": name, "extra": json_extra, "driver": driver, "dist": "{dist}"}}, output_format)
'''


@pytest.fixture
def distributions(tmp_path: Path) -> Iterator[Any]:
    """Install fake distributions (a ``.dist-info`` folder and a module, on sys.path) for one test."""
    modules: list[str] = []

    def install(dist: str, entry_points: dict[str, str], module: str | None = None) -> None:
        folder = tmp_path / "site" / dist
        info = folder / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[kq.commands]\n{lines}")
        if module is not None:
            (folder / f"{module}.py").write_text(HELLO.format(dist=dist))
            modules.append(module)
        # Appended: the first distribution installed comes first on the path.
        sys.path.append(str(folder))
        _plugin_commands.cache_clear()

    before = list(sys.path)
    _plugin_commands.cache_clear()
    yield install
    sys.path[:] = before
    for module in modules:
        sys.modules.pop(module, None)
    _plugin_commands.cache_clear()


def _kq(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, prog_name="kq")


def test_a_command_from_another_distribution_runs_with_kqs_options(distributions: Any) -> None:
    distributions("kq-fake-hello", {"hello": "kq_fake_hello:hello"}, module="kq_fake_hello")
    assert "hello" in _kq("--help").output
    result = _kq("hello", "world", "-j", '{"a": [1]}', "-i", "local", "--format", "json")
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout) == {
        "hello": "world",
        "extra": {"a": [1]},
        "driver": "local",
        "dist": "kq-fake-hello",
    }


def test_the_first_registration_of_a_name_wins_and_the_second_is_logged(
    distributions: Any, caplog: pytest.LogCaptureFixture
) -> None:
    distributions("kq-fake-first", {"hello": "kq_fake_first:hello"}, module="kq_fake_first")
    distributions("kq-fake-second", {"hello": "kq_fake_second:hello"}, module="kq_fake_second")
    with caplog.at_level(logging.WARNING, logger="kq.cli"):
        result = _kq("hello", "world", "--format", "json")
    assert json.loads(result.stdout)["dist"] == "kq-fake-first"
    assert "two distributions register command 'hello' (kq_fake_first:hello and kq_fake_second:hello)" in (
        caplog.text
    )


def test_a_broken_command_is_listed_as_unavailable_and_names_its_distribution(distributions: Any) -> None:
    distributions("kq-fake-broken", {"broken": "kq_fake_nosuchmodule:broken"})
    assert "(unavailable)" in _kq("--help").output
    result = _kq("broken")
    assert result.exit_code == EXIT_FAILURE
    assert "the command 'broken' (kq_fake_nosuchmodule:broken) cannot be loaded" in result.output
    assert "reinstall kq-fake-broken" in result.output


@click.command()
@plugin.json_option("-j", "--json-arguments", kind=list, help="A JSON array.")
@plugin.json_option("--json-kwargs", kind=dict, help="A JSON object.")
@plugin.json_option("--json", "anything", help="Any JSON value.")
def _echo(json_arguments: Any, json_kwargs: Any, anything: Any) -> None:
    click.echo(json.dumps([json_arguments, json_kwargs, anything]))


@pytest.mark.parametrize(
    ("args", "printed"),
    [
        ([], [None, None, None]),
        (["-j", '[1, "a"]', "--json-kwargs", '{"k": null}'], [[1, "a"], {"k": None}, None]),
        (["--json", "3.5"], [None, None, 3.5]),
        (["--json", '"text"'], [None, None, "text"]),
    ],
)
def test_json_option_passes_the_decoded_value(args: list[str], printed: Any) -> None:
    result = CliRunner().invoke(_echo, args, catch_exceptions=False)
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout) == printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-j", "[1,"], "Invalid value for -j/--json-arguments: not valid JSON: "),
        (["-j", '{"a": 1}'], "Invalid value for -j/--json-arguments: must be a JSON array, not object"),
        (["--json-kwargs", "[]"], "Invalid value for --json-kwargs: must be a JSON object, not array"),
        (["--json-kwargs", "null"], "must be a JSON object, not null"),
        (["-j", "true"], "must be a JSON array, not boolean"),
        (["--json", "{"], "Invalid value for --json: not valid JSON"),
    ],
)
def test_json_option_refuses_other_values_as_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(_echo, args)
    assert result.exit_code == EXIT_USAGE
    assert message in result.output


def test_the_plugin_api_exports_what_its_docstring_names() -> None:
    assert plugin.__doc__ is not None
    for name in plugin.__all__:
        assert getattr(plugin, name) is not None
        assert name in plugin.__doc__ or name.startswith("EXIT_"), name


def test_the_package_docstring_lists_every_command() -> None:
    assert kq.cli.__doc__ is not None
    missing = [name for name in cli.commands if f"kq {name}" not in kq.cli.__doc__]
    assert missing == []
