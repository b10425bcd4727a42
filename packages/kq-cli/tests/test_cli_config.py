"""Configuration mistakes the listing commands report, and ``kq consume`` options built from kq-core."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from kq.cli import EXIT_CONFIG, EXIT_OK, cli
from kq.cli._consume import consume
from kq.core import CONSUME_OPTIONS


def kq(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize(
    ("toml", "command", "key", "words"),
    [
        pytest.param(
            '[queues.jobs]\nconsumerr = "x"\n',
            ("managequeue", "list-configured"),
            "queues.jobs.consumerr",
            "did you mean 'consumer'?",
            id="queue-key-typo",
        ),
        pytest.param(
            '[drivers.x]\ntype = "nosuch"\n',
            ("managedriver", "list"),
            "drivers.x.type",
            "unknown driver type 'nosuch'",
            id="driver-type-not-installed",
        ),
        pytest.param(
            '[drivers.x]\ntype = "sqlit"\n',
            ("managedriver", "list"),
            "drivers.x.type",
            "did you mean 'sqlite'?",
            id="driver-type-typo",
        ),
        pytest.param(
            '[queues.jobs]\nconsumer = "nosuch"\n',
            ("managequeue", "list-configured"),
            "queues.jobs.consumer",
            "consumer must be one of",
            id="handler-not-installed",
        ),
        pytest.param(
            "[console]\ntimout = 3\n",
            ("managequeue", "list-configured"),
            "console.timout",
            "did you mean 'timeout'?",
            id="console-key-typo",
        ),
        pytest.param(
            "[workers.mail]\noptions = { mesages = 3 }\n",
            ("managedriver", "list"),
            "workers.mail.options.mesages",
            "did you mean 'messages'?",
            id="worker-option-typo",
        ),
    ],
)
def test_listing_commands_report_configuration_mistakes(
    workdir: Path, toml: str, command: tuple[str, ...], key: str, words: str
) -> None:
    (workdir / "kq.toml").write_text(toml, encoding="utf-8")
    result = kq(*command)
    assert result.exit_code == EXIT_CONFIG, result.output
    assert words in result.output
    assert f"key '{key}' in {workdir / 'kq.toml'}" in result.output


def test_the_listings_still_work_on_a_valid_configuration(workdir: Path) -> None:
    (workdir / "kq.toml").write_text('[queues.jobs]\nconsumer = "noop"\n', encoding="utf-8")
    assert kq("managequeue", "list-configured").exit_code == EXIT_OK
    assert kq("managedriver", "list").exit_code == EXIT_OK


def test_kq_consume_options_are_the_declared_ones() -> None:
    # A context under kq's own (click caches the help option of a command with the first context's names).
    with click.Context(cli, **cli.context_settings) as parent, click.Context(consume, parent=parent) as ctx:
        options = [
            p
            for p in consume.get_params(ctx)
            # the hidden copies of the global options (accepted after the command) are not consume's
            if isinstance(p, click.Option) and "--help" not in p.opts and not p.hidden
        ]
    assert [option.name for option in options] == list(CONSUME_OPTIONS)
    for option in options:
        declared = CONSUME_OPTIONS[str(option.name)]
        assert option.help == declared.help
        assert declared.long in option.opts
        if declared.short:
            assert declared.short in option.opts
        if declared.default is not None and declared.type is not bool:
            assert option.default == declared.default


def test_kq_consume_rejects_a_value_out_of_the_declared_range() -> None:
    result = kq("consume", "jobs", "--prefetch", "0")
    assert result.exit_code == 2
    assert "--prefetch" in result.output
