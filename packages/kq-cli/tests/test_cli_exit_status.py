"""The exit statuses of docs/cli.md, command by command: usage 2, configuration 78, broker unavailable 69.

Each broker is "down" by pointing its driver at a local port where nothing listens (RabbitMQ, STOMP,
SQS and the management APIs), with short timeouts.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kq.cli import EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_USAGE, cli


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kq(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


#: Every command that talks to a broker, with what it needs to get that far.
BROKER_COMMANDS = [
    ["queuecommand", "jobs", "app:cmd", "--novalidate"],
    ["queuemessage", "jobs", "{}"],
    ["queueservice", "jobs", "app.reports", "build"],
    ["queuehttp", "jobs", "https://example.com/hook"],
    ["managequeue", "info", "jobs"],
    ["managequeue", "purge", "jobs", "-y"],
    ["managequeue", "delete", "jobs", "-y"],
    ["managequeue", "list-available"],
    ["failed", "show", "jobs", "--idle", "0.05"],
    ["failed", "retry", "jobs", "--all", "--idle", "0.05"],
    ["failed", "remove", "jobs", "--all", "-y", "--idle", "0.05"],
    ["status"],
]


def _down(driver: str) -> str:
    """A kq.toml whose default driver is ``driver`` on a port where nothing listens."""
    port, management = _closed_port(), _closed_port()
    if driver == "rabbitmq":
        options = (
            f'url = "amqp://guest:guest@127.0.0.1:{port}/%2F"\npublish_timeout = 0.5\n'
            f'management_url = "http://127.0.0.1:{management}"\n'
        )
    elif driver == "stomp":
        options = (
            f'hosts = ["127.0.0.1:{port}"]\nconnect_timeout = 1\n'
            f'management_url = "http://127.0.0.1:{management}"\n'
        )
    else:
        options = f'endpoint_url = "http://127.0.0.1:{port}"\nregion = "us-east-1"\n'
    return f'default_driver = "down"\n\n[drivers.down]\ntype = "{driver}"\n{options}'


@pytest.mark.parametrize("driver", ["rabbitmq", "stomp", "sqs"])
@pytest.mark.parametrize("args", BROKER_COMMANDS, ids=lambda args: " ".join(args[:2]))
def test_broker_unavailable_is_69(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, driver: str, args: list[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    (workdir / "kq.toml").write_text(_down(driver))
    result = kq(*args)
    if driver == "stomp" and args[:2] == ["managequeue", "delete"]:
        # ActiveMQ cannot delete a queue over STOMP: the driver refuses before connecting.
        pytest.skip("delete is not offered on a STOMP driver without flavour = 'rabbitmq'")
    assert result.exit_code == EXIT_UNAVAILABLE, result.output
    if args == ["status"]:  # a table: the error is on the driver's row
        assert "error: " in result.output, result.output
    else:
        assert result.output.count("kq: error:") == 1, result.output


#: Every command, with arguments that would do, for the configuration and usage checks.
ALL_COMMANDS = [
    *BROKER_COMMANDS,
    ["consume", "jobs", "-t", "0.1"],
    ["managedriver", "list"],
    ["watchdog", "check"],
]


@pytest.mark.parametrize("args", ALL_COMMANDS, ids=lambda args: " ".join(args[:2]))
def test_a_broken_configuration_is_78(workdir: Path, args: list[str]) -> None:
    (workdir / "kq.toml").write_text('default_driver = "nosuch"\n')
    result = kq(*args)
    assert result.exit_code == EXIT_CONFIG, result.output
    assert "nosuch" in result.output


@pytest.mark.parametrize("args", [*ALL_COMMANDS, ["signing", "new-key"]], ids=lambda args: " ".join(args[:2]))
def test_an_unknown_option_is_2(args: list[str]) -> None:
    result = kq(*args, "--no-such-option")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "No such option '--no-such-option'" in result.output
