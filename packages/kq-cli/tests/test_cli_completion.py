"""Shell completion: queue names, driver instances and managequeue actions from the configuration file
alone (nothing created, no broker asked, no driver imported), through click's ``_KQ_COMPLETE``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.shell_completion import ShellComplete

from kq.cli import cli
from kq.cli._complete import STANDARD_ACTIONS


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(workdir: Path, name: str = "kq.toml") -> None:
    port = _closed_port()
    (workdir / name).write_text(
        f"""
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "q.sqlite3"

[drivers.rabbit]
type = "rabbitmq"
url = "amqp://guest:guest@127.0.0.1:{port}/%2F"

[queues.jobs]
[queues.emails]
[queues.reports]
driver = "rabbit"
"""
    )


def complete(*words: str) -> list[str]:
    """What ``kq WORDS...<TAB>`` offers (the last word is the one being completed)."""
    *args, incomplete = words
    completer = ShellComplete(cli, {}, "kq", "_KQ_COMPLETE")
    return [item.value for item in completer.get_completions(args, incomplete)]


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


#: Every command with a QUEUE argument, with what comes before it on the command line.
QUEUE_COMMANDS = [
    path
    for path, command in _walk(cli)
    if any(isinstance(p, click.Argument) and p.name in ("queue", "queues") for p in command.params)
]


def test_every_queue_command_is_covered() -> None:
    assert set(QUEUE_COMMANDS) >= {
        ("queuecommand",),
        ("queuemessage",),
        ("queueservice",),
        ("queuehttp",),
        ("consume",),
        ("managequeue",),
        ("failed", "show"),
        ("failed", "retry"),
        ("failed", "remove"),
    }


@pytest.mark.parametrize("path", QUEUE_COMMANDS, ids=" ".join)
def test_queue_names(workdir: Path, path: tuple[str, ...]) -> None:
    _config(workdir)
    before = ["info"] if path == ("managequeue",) else []
    assert complete(*path, *before, "") == ["emails", "jobs", "reports"]
    assert complete(*path, *before, "e") == ["emails"]
    assert list(workdir.iterdir()) == [workdir / "kq.toml"]  # nothing created


def test_consume_completes_every_queue_it_takes(workdir: Path) -> None:
    _config(workdir)
    assert complete("consume", "jobs", "r") == ["reports"]


@pytest.mark.parametrize(
    "path",
    [("queuecommand",), ("queuemessage",), ("consume", "jobs"), ("managequeue", "info"), ("failed", "show")],
    ids=" ".join,
)
def test_driver_instances(workdir: Path, path: tuple[str, ...]) -> None:
    _config(workdir)
    assert complete(*path, "-i", "") == ["default", "local", "rabbit"]
    assert complete(*path, "--driver", "r") == ["rabbit"]


def test_managequeue_actions(workdir: Path) -> None:
    assert complete("managequeue", "") == list(STANDARD_ACTIONS)
    assert complete("managequeue", "list") == ["list-configured", "list-available"]
    assert complete("managequeue", "p") == ["purge"]


def test_the_config_option_before_or_after_the_command_is_used(workdir: Path) -> None:
    (workdir / "other.toml").write_text("[queues.elsewhere]\n")
    _config(workdir)
    assert complete("--config", "other.toml", "consume", "") == ["elsewhere"]
    assert complete("consume", "--config", "other.toml", "") == ["elsewhere"]


def test_kq_config_is_used(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / "other.toml").write_text("[queues.from_env]\n")
    monkeypatch.setenv("KQ_CONFIG", "other.toml")
    assert complete("consume", "") == ["from_env"]


def test_a_broken_or_missing_configuration_completes_nothing(workdir: Path) -> None:
    assert complete("consume", "") == []  # zero-config: no configured queue
    (workdir / "kq.toml").write_text("default_driver = \n")
    assert complete("consume", "") == []
    assert complete("consume", "-i", "") == []


def _bash(workdir: Path, line: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    return subprocess.run(
        [sys.executable, "-m", "kq.cli"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            **(env or {}),
            "_KQ_COMPLETE": "bash_complete",
            "COMP_WORDS": line,
            "COMP_CWORD": str(cword),
        },
        check=False,
    )


PROBE = """
import json, sys
from kq.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def test_through_the_environment_in_a_subprocess_without_drivers_or_files(workdir: Path) -> None:
    _config(workdir)
    started = time.monotonic()
    done = _bash(workdir, "kq failed show ")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["plain,emails", "plain,jobs", "plain,reports"]
    assert elapsed < 5  # a Python start and the configuration loader; well under a second unloaded

    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "_KQ_COMPLETE": "bash_complete",
            "COMP_WORDS": "kq queuecommand -i ",
            "COMP_CWORD": "3",
        },
        check=True,
    )
    assert probe.stdout.splitlines() == ["plain,default", "plain,local", "plain,rabbit"]
    loaded = json.loads(probe.stderr.strip().splitlines()[-1])
    assert not [m for m in loaded if m.startswith("kq.drivers")], loaded  # no driver imported, none asked
    assert "pika" not in loaded
    assert list(workdir.iterdir()) == [workdir / "kq.toml"]


@pytest.mark.parametrize(
    ("shell", "marker"), [("bash", "complete -o"), ("zsh", "#compdef kq"), ("fish", "complete")]
)
def test_the_scripts_of_the_three_shells(workdir: Path, shell: str, marker: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kq.cli"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "_KQ_COMPLETE": f"{shell}_source"},
        check=True,
    )
    assert marker in done.stdout
    assert "_KQ_COMPLETE" in done.stdout
