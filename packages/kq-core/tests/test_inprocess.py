"""The in-process console-command consumer: click and argparse entry points called inside the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kq.core import (
    AllowList,
    App,
    CommandResult,
    ConfigError,
    Delivery,
    ExecutionFailedError,
    InProcessConsoleCommandHandler,
    Limits,
    MessageFormatError,
    NotAllowedError,
    parse_config,
)
from kq.core._config import ConsoleSettings
from kq.core.listeners import Accumulator
from kq.drivers.memory import MemoryDriver

CLICK_APP = """
import os, sys, click

@click.group()
def cli():
    pass

@cli.command()
@click.argument("text")
@click.option("--upper", is_flag=True)
def say(text, upper):
    click.echo(text.upper() if upper else text)
    click.echo("a warning", err=True)

@cli.command()
def env():
    names = ("KQ_QUEUE", "KQ_MESSAGE_ID", "KQ_DELIVERY_COUNT", "KQ_LABEL", "EXTRA")
    click.echo(" ".join(os.environ.get(n, "-") for n in names))

@cli.command("sys-exit")
@click.argument("code", type=int)
def sys_exit(code):
    sys.exit(code)

@cli.command("ctx-exit")
@click.argument("code", type=int)
@click.pass_context
def ctx_exit(ctx, code):
    ctx.exit(code)

@cli.command()
def abort():
    raise click.Abort()

@cli.command()
def refuse():
    raise click.ClickException("refused by the command")

@cli.command()
def crash():
    raise RuntimeError("crash inside the command")

not_callable = 1
"""

ARGPARSE_APP = """
import argparse, ast

calls = []

def main(argv):
    calls.append(list(argv))
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("action", choices=["hello", "ret", "exit"])
    parser.add_argument("--value", default="")
    args = parser.parse_args(argv)
    if args.action == "hello":
        print(f"hello {args.value}")
    elif args.action == "ret":
        return int(args.value)
    else:
        raise SystemExit(ast.literal_eval(args.value))
"""


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Modules ``kqtest_ipclick`` (a click group) and ``kqtest_ipargs`` (``main(argv)``) on sys.path."""
    (tmp_path / "kqtest_ipclick.py").write_text(CLICK_APP)
    (tmp_path / "kqtest_ipargs.py").write_text(ARGPARSE_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ("kqtest_ipclick", "kqtest_ipargs")
    for name in names:
        sys.modules.pop(name, None)
    MemoryDriver.reset()
    yield
    MemoryDriver.reset()
    for name in names:
        sys.modules.pop(name, None)


def consumer(entry: str, *allowed: str, env: dict[str, str] | None = None) -> InProcessConsoleCommandHandler:
    settings = ConsoleSettings(callable=entry, env=env or {})
    return InProcessConsoleCommandHandler(settings, AllowList(allowed or ("re:.*",)), label="worker-1")


def run(
    handler: InProcessConsoleCommandHandler, body: dict[str, Any], message_id: str = "m-123"
) -> CommandResult:
    delivery = Delivery(
        json.dumps(body).encode(), "application/json", {}, "", message_id, "jobs", delivery_count=2
    )
    return handler.consume(body, delivery)


@pytest.mark.usefixtures("apps")
def test_click_command_output_is_captured_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    result = run(
        consumer("kqtest_ipclick:cli"), {"command": "say", "arguments": ["hi"], "options": {"upper": None}}
    )
    assert (result.exit_code, result.stdout, result.stderr) == (0, "HI\n", "a warning\n")
    assert result.argv == ("kqtest_ipclick:cli", "say", "--upper", "hi")
    assert result.ok
    assert capsys.readouterr() == ("", "")


@pytest.mark.usefixtures("apps")
@pytest.mark.parametrize(
    ("command", "arguments", "code", "stderr"),
    [
        ("sys-exit", ["0"], 0, ""),
        ("sys-exit", ["4"], 4, ""),
        ("ctx-exit", ["3"], 3, ""),
        ("ctx-exit", ["0"], 0, ""),
        ("abort", [], 1, "Aborted!\n"),
        ("refuse", [], 1, "Error: refused by the command\n"),
        ("say", [], 2, "Missing argument 'TEXT'"),
        ("no-such-command", [], 2, "No such command 'no-such-command'"),
    ],
)
def test_click_exit_codes(command: str, arguments: list[str], code: int, stderr: str) -> None:
    handler = consumer("kqtest_ipclick:cli")
    body = {"command": command, "arguments": arguments}
    if code == 0:
        assert run(handler, body).exit_code == 0
        return
    with pytest.raises(ExecutionFailedError, match=f"exited with status {code}") as caught:
        run(handler, body)
    result = caught.value.result
    assert isinstance(result, CommandResult)
    assert result.exit_code == code
    assert stderr in result.stderr


@pytest.mark.usefixtures("apps")
def test_argparse_main_gets_the_argument_vector_without_program_name() -> None:
    handler = consumer("kqtest_ipargs:main")
    result = run(handler, {"command": "hello", "options": {"value": "a b; $(id)"}})
    assert (result.exit_code, result.stdout) == (0, "hello a b; $(id)\n")
    assert sys.modules["kqtest_ipargs"].calls == [["hello", "--value=a b; $(id)"]]
    with pytest.raises(ExecutionFailedError, match="status 5"):
        run(handler, {"command": "ret", "options": {"value": "5"}})
    with pytest.raises(ExecutionFailedError, match="status 2: tool: error: argument action") as caught:
        run(handler, {"command": "bogus"})
    assert isinstance(caught.value.result, CommandResult)
    assert caught.value.result.stderr.startswith("usage: tool")


@pytest.mark.usefixtures("apps")
@pytest.mark.parametrize(
    "code",
    [
        "None",
        "0",
        "3",
        "'a message'",
        "True",
        "False",
    ],
)
def test_system_exit_codes_match_a_real_process(code: str) -> None:
    """``SystemExit(x)`` in-process gives the exit status Python gives a process raising it."""
    argv = [sys.executable, "-c", f"raise SystemExit({code})"]
    real = subprocess.run(argv, capture_output=True, text=True, check=False)
    result: object
    try:
        result = run(consumer("kqtest_ipargs:main"), {"command": "exit", "options": {"value": code}})
    except ExecutionFailedError as exc:
        result = exc.result
    assert isinstance(result, CommandResult)
    assert result.exit_code == real.returncode
    assert result.stderr == real.stderr


@pytest.mark.usefixtures("apps")
def test_environment_is_set_during_the_call_and_restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KQ_QUEUE", "outer-queue")
    monkeypatch.delenv("KQ_MESSAGE_ID", raising=False)
    monkeypatch.delenv("EXTRA", raising=False)
    handler = consumer("kqtest_ipclick:cli", env={"EXTRA": "from-config"})
    assert run(handler, {"command": "env"}).stdout == "jobs m-123 2 worker-1 from-config\n"
    assert os.environ["KQ_QUEUE"] == "outer-queue"
    assert "KQ_MESSAGE_ID" not in os.environ
    assert "EXTRA" not in os.environ
    with pytest.raises(RuntimeError, match="crash inside the command"):
        run(handler, {"command": "crash"})
    assert os.environ["KQ_QUEUE"] == "outer-queue"
    assert "KQ_MESSAGE_ID" not in os.environ


@pytest.mark.usefixtures("apps")
def test_a_message_id_the_environment_cannot_hold_still_runs_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the property test: a NUL in a producer's message id made os.environ.update fail half-way,
    leaving KQ_QUEUE set in the worker and dead-lettering a valid command unrun."""
    monkeypatch.delenv("KQ_QUEUE", raising=False)
    monkeypatch.delenv("KQ_MESSAGE_ID", raising=False)
    handler = consumer("kqtest_ipclick:cli")
    assert run(handler, {"command": "env"}, message_id="a\x00b\ud800").stdout == (
        "jobs a\\x00b\\ud800 2 worker-1 -\n"
    )
    assert "KQ_QUEUE" not in os.environ
    assert "KQ_MESSAGE_ID" not in os.environ


@pytest.mark.usefixtures("apps")
def test_allow_list_and_validation_come_before_the_call() -> None:
    handler = consumer("kqtest_ipargs:main", "hello")
    with pytest.raises(NotAllowedError, match=r"command 'ret' is not in the allow-list \(\[allow\] commands"):
        run(handler, {"command": "ret", "options": {"value": "0"}})
    for body in ({"command": "hello", "options": {"-x;rm": None}}, {"command": "../hello"}, {"cmd": "hello"}):
        with pytest.raises(MessageFormatError):
            run(handler, body)
    assert sys.modules["kqtest_ipargs"].calls == []
    with pytest.raises(NotAllowedError):
        run(consumer("kqtest_ipargs:main", "nothing-else"), {"command": "hello"})
    assert sys.modules["kqtest_ipargs"].calls == []


@pytest.mark.usefixtures("apps")
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("kqtest_missing_module:cli", "cannot load the in-process entry point 'kqtest_missing_module:cli'"),
        ("kqtest_ipclick:nothing", "cannot load the in-process entry point"),
        ("kqtest_ipclick:not_callable", "'kqtest_ipclick:not_callable' is not callable"),
    ],
)
def test_bad_entry_points_are_configuration_errors(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        consumer(entry)
    assert caught.value.key == "console.callable"


@pytest.mark.usefixtures("apps")
def test_configured_queue_runs_in_process_and_dead_letters_failures() -> None:
    config = parse_config(
        {
            "drivers": {"mem": {"type": "memory"}},
            "default_driver": "mem",
            "queues": {"jobs": {"consumer": "inprocess_console_command"}},
            "console": {"callable": "kqtest_ipclick:cli"},
            "allow": {"commands": ["say", "sys-exit"]},
        },
        source="kq.toml",
    )
    with App(config) as app:
        producer = app.command_producer("jobs")
        producer.publish("say", ["in process"])
        producer.publish("sys-exit", ["3"])
        accumulator = Accumulator()
        for event in Accumulator.events:
            app.dispatcher.add_listener(event, accumulator)
        loop = app.consume_loop("jobs", limits=Limits(messages=2), poll_interval=0.05)
        assert isinstance(loop.handler, InProcessConsoleCommandHandler)
        loop.run()
        assert [r.stdout for r in accumulator.results] == ["in process\n"]
        [failure] = accumulator.failures
        assert (failure.reason, failure.outcome) == ("failed", "dead-lettered")
        assert "exited with status 3" in str(failure.error)
        assert app.driver().queue_manager().info("jobs.failed")["messages"] == 1
