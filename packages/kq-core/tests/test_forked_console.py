"""The forked console-command consumer: a zygote imports the entry point once and forks per message.

Real processes throughout: the zygote is a fresh interpreter, each message a child it forks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from kq.core import (
    AllowList,
    App,
    CommandResult,
    ConfigError,
    Delivery,
    ExecutionFailedError,
    Limits,
    MessageFormatError,
    NotAllowedError,
    parse_config,
)
from kq.core._config import ConsoleSettings
from kq.core._resources import MemoryGauge
from kq.core.handlers import ForkedConsoleCommandHandler
from kq.core.handlers._process import MAX_OUTPUT
from kq.core.listeners import Accumulator
from kq.drivers.memory import MemoryDriver

pytestmark = pytest.mark.slow

CLICK_APP = """
import os, subprocess, sys, time, click

# Counts the imports of this module, one line per import, in the file the test names.
with open(os.environ["KQTEST_IMPORTS"], "a") as _imports:
    _imports.write(f"{os.getpid()}\\n")

state = []

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
    names = ("KQ_QUEUE", "KQ_MESSAGE_ID", "KQ_DELIVERY_COUNT", "KQ_LABEL", "EXTRA", "KQTEST_SECRET")
    click.echo(" ".join(os.environ.get(n, "-") for n in names))

@cli.command()
def where():
    click.echo(f"{os.getcwd()} {sorted(os.environ)}")

@cli.command("sys-exit")
@click.argument("code", type=int)
def sys_exit(code):
    sys.exit(code)

@cli.command()
def refuse():
    raise click.ClickException("refused by the command")

@cli.command()
def crash():
    raise RuntimeError("crash inside the command")

@cli.command()
def remember():
    state.append(os.getpid())
    click.echo(f"{len(state)} {os.getpid()} {os.getsid(0)}")

@cli.command()
@click.argument("path")
def record(path):
    with open(path, "a") as out:
        out.write("ran\\n")

@cli.command()
@click.argument("path")
def hang(path):
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(path, "w") as out:
        out.write(f"{os.getpid()} {grandchild.pid} {os.getsid(0)}")
    click.echo("started, now hanging", err=True)
    sys.stderr.flush()
    time.sleep(60)

@cli.command("kill-parent")
@click.argument("path")
def kill_parent(path):
    with open(path, "w") as out:
        out.write(str(os.getpid()))
    os.kill(os.getppid(), 9)
    time.sleep(60)

@cli.command()
@click.argument("megabytes", type=int)
def eat(megabytes):
    chunk = bytearray(megabytes * 1024 * 1024)
    chunk[::4096] = b"x" * len(chunk[::4096])
    click.echo(len(chunk))

@cli.command()
@click.argument("count", type=int)
def lines(count):
    for _ in range(count):
        sys.stdout.write("o" * 1023 + "\\n")
    sys.stdout.write("end")

not_callable = 1
"""

FUNCTION_APP = """
import argparse, ast

def main(argv):
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

BROKEN_APP = """
raise RuntimeError("the app cannot start")
"""


@pytest.fixture
def imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Modules ``kqtest_fkclick`` (a click group), ``kqtest_fkargs`` (``main(argv)``) and
    ``kqtest_fkbroken`` (fails at import) on sys.path; yields the file counting the click app's imports."""
    (tmp_path / "kqtest_fkclick.py").write_text(CLICK_APP)
    (tmp_path / "kqtest_fkargs.py").write_text(FUNCTION_APP)
    (tmp_path / "kqtest_fkbroken.py").write_text(BROKEN_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    MemoryDriver.reset()
    yield tmp_path / "imports.txt"
    MemoryDriver.reset()


@pytest.fixture
def handlers(imports: Path) -> Iterator[list[ForkedConsoleCommandHandler]]:
    """Handlers built by a test, closed after it (their zygotes stop)."""
    built: list[ForkedConsoleCommandHandler] = []
    yield built
    for handler in built:
        handler.close()


def _handler(
    handlers: list[ForkedConsoleCommandHandler],
    imports: Path,
    entry: str = "kqtest_fkclick:cli",
    *allowed: str,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    withheld_env: frozenset[str] = frozenset(),
) -> ForkedConsoleCommandHandler:
    settings = ConsoleSettings(
        callable=entry,
        timeout=timeout,
        env={"KQTEST_IMPORTS": str(imports), **(env or {})},
        withheld_env=withheld_env,
    )
    handler = ForkedConsoleCommandHandler(settings, AllowList(allowed or ("re:.*",)), label="worker-1")
    handlers.append(handler)
    return handler


def _run(
    handler: ForkedConsoleCommandHandler, body: dict[str, Any], message_id: str = "m-123"
) -> CommandResult:
    delivery = Delivery(
        json.dumps(body).encode(), "application/json", {}, "", message_id, "jobs", delivery_count=2
    )
    result = handler.consume(body, delivery)
    assert isinstance(result, CommandResult)
    return result


def _failure(handler: ForkedConsoleCommandHandler, body: dict[str, Any], match: str) -> CommandResult:
    with pytest.raises(ExecutionFailedError, match=match) as caught:
        _run(handler, body)
    result = caught.value.result
    assert isinstance(result, CommandResult)
    return result


def _zygote_pid(handler: ForkedConsoleCommandHandler) -> int:
    zygote = handler._zygote
    assert zygote is not None
    return zygote.pid


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not _gone(pid):
        assert time.monotonic() < deadline, f"{what} (pid {pid}) is still running"
        time.sleep(0.05)


def test_click_command_output_is_captured(
    handlers: list[ForkedConsoleCommandHandler], imports: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    handler = _handler(handlers, imports)
    result = _run(handler, {"command": "say", "arguments": ["hi"], "options": {"upper": None}})
    assert (result.exit_code, result.stdout, result.stderr) == (0, "HI\n", "a warning\n")
    assert result.argv == ("kqtest_fkclick:cli", "say", "--upper", "hi")
    assert result.ok
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("command", "arguments", "code", "stderr"),
    [
        ("sys-exit", ["4"], 4, ""),
        ("sys-exit", ["300"], 300 % 256, ""),
        ("refuse", [], 1, "Error: refused by the command\n"),
        ("say", [], 2, "Missing argument 'TEXT'"),
        ("no-such-command", [], 2, "No such command 'no-such-command'"),
    ],
)
def test_click_exit_codes(
    handlers: list[ForkedConsoleCommandHandler],
    imports: Path,
    command: str,
    arguments: list[str],
    code: int,
    stderr: str,
) -> None:
    result = _failure(
        _handler(handlers, imports),
        {"command": command, "arguments": arguments},
        f"exited with status {code}",
    )
    assert result.exit_code == code
    assert stderr in result.stderr


@pytest.mark.parametrize("code", ["None", "0", "3", "'a message'", "True", "False", "-1"])
def test_system_exit_codes_match_a_real_process(
    handlers: list[ForkedConsoleCommandHandler], imports: Path, code: str
) -> None:
    """A child raising ``SystemExit(x)`` exits as a Python process raising it does."""
    real = subprocess.run(
        [sys.executable, "-c", f"raise SystemExit({code})"], capture_output=True, text=True, check=False
    )
    handler = _handler(handlers, imports, "kqtest_fkargs:main")
    result: object
    try:
        result = _run(handler, {"command": "exit", "options": {"value": code}})
    except ExecutionFailedError as exc:
        result = exc.result
    assert isinstance(result, CommandResult)
    assert (result.exit_code, result.stderr) == (real.returncode, real.stderr)


def test_a_function_entry_point_gets_the_argument_vector(
    handlers: list[ForkedConsoleCommandHandler], imports: Path
) -> None:
    handler = _handler(handlers, imports, "kqtest_fkargs:main")
    result = _run(handler, {"command": "hello", "options": {"value": "a b; $(id)"}})
    assert (result.exit_code, result.stdout) == (0, "hello a b; $(id)\n")
    _failure(handler, {"command": "ret", "options": {"value": "5"}}, "status 5$")
    result = _failure(handler, {"command": "bogus"}, "status 2: tool: error: argument action")
    assert result.stderr.startswith("usage: tool")


def test_an_exception_exits_1_with_its_traceback(
    handlers: list[ForkedConsoleCommandHandler], imports: Path
) -> None:
    handler = _handler(handlers, imports)
    result = _failure(
        handler, {"command": "crash"}, r"exited with status 1: RuntimeError: crash inside the command"
    )
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert 'raise RuntimeError("crash inside the command")' in result.stderr
    assert _run(handler, {"command": "say", "arguments": ["still serving"]}).stdout == "still serving\n"


def test_the_app_is_imported_once_and_each_child_starts_from_the_preload(
    handlers: list[ForkedConsoleCommandHandler], imports: Path
) -> None:
    handler = _handler(handlers, imports)
    zygote = _zygote_pid(handler)
    outputs = [_run(handler, {"command": "remember"}).stdout.split() for _ in range(4)]
    assert [count for count, _, _ in outputs] == ["1"] * 4, "a child's change to module state leaked"
    pids = {int(pid) for _, pid, _ in outputs}
    assert len(pids) == 4
    assert zygote not in pids
    assert all(int(pid) == int(session) for _, pid, session in outputs), "each child leads its own session"
    assert all(int(session) != os.getsid(0) for _, _, session in outputs)
    assert imports.read_text().split() == [str(zygote)], "the app was imported more than once"


def test_environment_is_the_subprocess_modes(
    handlers: list[ForkedConsoleCommandHandler], imports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KQTEST_SECRET", "signing key")
    monkeypatch.delenv("KQ_QUEUE", raising=False)
    handler = _handler(
        handlers, imports, env={"EXTRA": "from-config"}, withheld_env=frozenset({"KQTEST_SECRET"})
    )
    assert _run(handler, {"command": "env"}).stdout == "jobs m-123 2 worker-1 from-config -\n"
    assert _run(handler, {"command": "env"}, message_id="a\x00b\ud800").stdout.startswith(
        "jobs a\\x00b\\ud800 2"
    )
    assert "KQ_QUEUE" not in os.environ


def test_an_explicit_environment_and_working_directory_apply(imports: Path, tmp_path: Path) -> None:
    """``inherit_env = false`` and ``cwd`` reach the children: the zygote is started with them."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    settings = ConsoleSettings(
        callable="kqtest_fkclick:cli",
        inherit_env=False,
        env={"KQTEST_IMPORTS": str(imports)},
        cwd=str(workdir),
    )
    handler = ForkedConsoleCommandHandler(settings, AllowList(["where"]), label="w")
    try:
        result = _run(handler, {"command": "where"})
    finally:
        handler.close()
    names = ["KQTEST_IMPORTS", "KQ_DELIVERY_COUNT", "KQ_LABEL", "KQ_MESSAGE_ID", "KQ_QUEUE"]
    # A fresh interpreter may set LC_CTYPE itself (PEP 538); nothing else comes from the worker.
    assert result.stdout in (f"{workdir} {names}\n", f"{workdir} {sorted([*names, 'LC_CTYPE'])}\n")


def test_a_timeout_kills_the_child_and_its_grandchildren(
    handlers: list[ForkedConsoleCommandHandler], imports: Path, tmp_path: Path
) -> None:
    handler = _handler(handlers, imports, timeout=1.0)
    pids = tmp_path / "pids"
    started = time.monotonic()
    result = _failure(
        handler, {"command": "hang", "arguments": [str(pids)]}, r"'hang': timed out after 1s and was killed"
    )
    assert time.monotonic() - started < 1 + 3
    assert result.exit_code == -signal.SIGKILL
    assert result.stderr == "started, now hanging\n"
    child, grandchild, session = (int(word) for word in pids.read_text().split())
    assert session == child
    _wait_gone(child, "the child")
    _wait_gone(grandchild, "the grandchild")
    assert _run(handler, {"command": "say", "arguments": ["next"]}).stdout == "next\n"


def test_a_timeout_fails_the_message_in_a_consume_loop(imports: Path) -> None:
    config = parse_config(
        {
            "drivers": {"mem": {"type": "memory"}},
            "default_driver": "mem",
            "queues": {"jobs": {"consumer": "forked_console_command", "require_signature": False}},
            "console": {
                "callable": "kqtest_fkclick:cli",
                "timeout": 0.5,
                "env": {"KQTEST_IMPORTS": str(imports)},
            },
            "allow": {"commands": ["say", "hang"]},
        },
        source="kq.toml",
    )
    with App(config) as app:
        producer = app.command_producer("jobs")
        producer.publish("say", ["forked"])
        producer.publish("hang", [str(imports.parent / "pids")])
        accumulator = Accumulator()
        for event in Accumulator.events:
            app.dispatcher.add_listener(event, accumulator)
        loop = app.consume_loop("jobs", limits=Limits(messages=2), poll_interval=0.05)
        assert isinstance(loop.handler, ForkedConsoleCommandHandler)
        zygote = _zygote_pid(loop.handler)
        loop.run()
        assert [r.stdout for r in accumulator.results] == ["forked\n"]
        [failure] = accumulator.failures
        assert (failure.reason, failure.outcome) == ("timeout", "dead-lettered")
        assert "timed out after 0.5s and was killed" in str(failure.error)
        assert app.driver().queue_manager().info("jobs.failed")["messages"] == 1
    _wait_gone(zygote, "the zygote after the loop ended")


def test_memory_is_given_back_after_each_message(
    handlers: list[ForkedConsoleCommandHandler], imports: Path
) -> None:
    """What a child allocates goes with it; neither the worker nor the zygote grows with messages."""
    handler = _handler(handlers, imports)
    zygote = psutil.Process(_zygote_pid(handler))
    gauge = MemoryGauge(children_interval=0.0)
    _run(handler, {"command": "say", "arguments": ["warm up"]})
    worker_before, zygote_before, total_before = (
        psutil.Process().memory_info().rss,
        zygote.memory_info().rss,
        gauge.megabytes(),
    )
    for _ in range(5):
        assert _run(handler, {"command": "eat", "arguments": ["150"]}).stdout == f"{150 * 1024 * 1024}\n"
        assert gauge.megabytes() < total_before + 30, "a child's memory was not given back"
    assert psutil.Process().memory_info().rss - worker_before < 20 * 1024 * 1024
    assert zygote.memory_info().rss - zygote_before < 5 * 1024 * 1024


def test_output_is_kept_as_a_bounded_tail(handlers: list[ForkedConsoleCommandHandler], imports: Path) -> None:
    result = _run(_handler(handlers, imports), {"command": "lines", "arguments": [str(3 * 1024)]})
    assert result.stdout == (("o" * 1023 + "\n") * 3 * 1024 + "end")[-MAX_OUTPUT:]


def test_a_zygote_dying_mid_message_fails_it_and_the_next_message_restarts_it(
    handlers: list[ForkedConsoleCommandHandler],
    imports: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = _handler(handlers, imports)
    first = _zygote_pid(handler)
    pid_file = tmp_path / "child.pid"
    with pytest.raises(
        ExecutionFailedError,
        match=r"parent process \(pid \d+\) for kqtest_fkclick:cli exited with status -9 while the command",
    ):
        _run(handler, {"command": "kill-parent", "arguments": [str(pid_file)]})
    _wait_gone(int(pid_file.read_text()), "the orphaned child")
    with caplog.at_level(logging.WARNING, logger="kq.core.handlers.forked"):
        assert _run(handler, {"command": "say", "arguments": ["back"]}, message_id="m-9").stdout == "back\n"
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"queue jobs message m-9: the forked-mode parent process (pid {first}) for kqtest_fkclick:cli had"
    )
    second = _zygote_pid(handler)
    assert second != first
    assert imports.read_text().split() == [str(first), str(second)]


def test_a_zygote_killed_between_messages_is_restarted(
    handlers: list[ForkedConsoleCommandHandler], imports: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handler = _handler(handlers, imports)
    first = _zygote_pid(handler)
    os.kill(first, signal.SIGKILL)
    _wait_gone(first, "the killed zygote")
    with caplog.at_level(logging.WARNING, logger="kq.core.handlers.forked"):
        assert _run(handler, {"command": "say", "arguments": ["back"]}).stdout == "back\n"
    assert "had exited (status -9); starting a new one" in caplog.text
    assert _zygote_pid(handler) != first


def test_an_interrupted_run_kills_the_child_and_re_raises(
    handlers: list[ForkedConsoleCommandHandler], imports: Path, tmp_path: Path
) -> None:
    """A forced stop (here KeyboardInterrupt) while a command runs: the child must not run on."""
    handler = _handler(handlers, imports)
    pids = tmp_path / "pids"

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.5)
        with pytest.raises(KeyboardInterrupt):
            _run(handler, {"command": "hang", "arguments": [str(pids)]})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    child, grandchild, _ = (int(word) for word in pids.read_text().split())
    _wait_gone(child, "the interrupted child")
    _wait_gone(grandchild, "the interrupted child's grandchild")
    assert _run(handler, {"command": "say", "arguments": ["next"]}).stdout == "next\n"


def test_allow_list_and_validation_come_before_any_fork(
    handlers: list[ForkedConsoleCommandHandler], imports: Path, tmp_path: Path
) -> None:
    handler = _handler(handlers, imports, "kqtest_fkclick:cli", "say")
    ran = tmp_path / "ran"
    with pytest.raises(
        NotAllowedError, match=r"command 'record' is not in the allow-list \(\[allow\] commands"
    ):
        _run(handler, {"command": "record", "arguments": [str(ran)]})
    for body in ({"command": "say", "options": {"-x;rm": None}}, {"command": "../say"}, {"cmd": "say"}):
        with pytest.raises(MessageFormatError):
            _run(handler, body)
    assert not ran.exists()
    assert psutil.Process(_zygote_pid(handler)).children() == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("kqtest_missing_module:cli", "cannot load the forked-mode entry point 'kqtest_missing_module:cli'"),
        ("kqtest_fkclick:nothing", "cannot load the forked-mode entry point 'kqtest_fkclick:nothing'"),
        ("kqtest_fkclick:not_callable", "'kqtest_fkclick:not_callable' is not callable"),
        (
            "kqtest_fkbroken:main",
            "importing the forked-mode entry point 'kqtest_fkbroken:main' raised RuntimeError",
        ),
    ],
)
def test_a_bad_entry_point_is_a_configuration_error_at_start(
    handlers: list[ForkedConsoleCommandHandler], imports: Path, entry: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _handler(handlers, imports, entry)
    assert caught.value.key == "console.callable"


def test_without_fork_the_subprocess_mode_is_named(imports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "fork")
    with pytest.raises(ConfigError, match=r'needs os.fork.*use consumer = "console_command"'):
        ForkedConsoleCommandHandler(ConsoleSettings(callable="kqtest_fkclick:cli"), AllowList(["say"]))


def test_a_forced_stop_abandons_the_message_and_kills_the_child(imports: Path, tmp_path: Path) -> None:
    """SIGTERM, then the grace period running out, while a command runs: the worker's own stop path."""
    config = parse_config(
        {
            "drivers": {"mem": {"type": "memory"}},
            "default_driver": "mem",
            "queues": {"jobs": {"consumer": "forked_console_command", "require_signature": False}},
            "console": {"callable": "kqtest_fkclick:cli", "env": {"KQTEST_IMPORTS": str(imports)}},
            "allow": {"commands": ["hang"]},
        },
        source="kq.toml",
    )
    pids = tmp_path / "pids"
    with App(config) as app:
        app.command_producer("jobs").publish("hang", [str(pids)])
        loop = app.consume_loop("jobs", poll_interval=0.05, grace=0.5)
        zygote = _zygote_pid(loop.handler)  # type: ignore[arg-type]

        def stop_once_started() -> None:
            deadline = time.monotonic() + 20
            while not pids.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGTERM)

        stopper = threading.Thread(target=stop_once_started)
        stopper.start()
        reason = loop.run()
        stopper.join()
        assert loop.abandoned
        assert "grace period of 0.5s ran out" in reason
    child, grandchild, _ = (int(word) for word in pids.read_text().split())
    _wait_gone(child, "the abandoned child")
    _wait_gone(grandchild, "the abandoned child's grandchild")
    _wait_gone(zygote, "the zygote after the loop ended")


WORKER = """
import sys
from kq.core import AllowList, Delivery
from kq.core._config import ConsoleSettings
from kq.core.handlers import ForkedConsoleCommandHandler

sys.path.insert(0, sys.argv[1])
handler = ForkedConsoleCommandHandler(
    ConsoleSettings(callable="kqtest_fkclick:cli", env={"KQTEST_IMPORTS": sys.argv[2]}), AllowList(["hang"])
)
print(handler._zygote.pid, flush=True)
body = {"command": "hang", "arguments": [sys.argv[3]]}
handler.consume(body, Delivery(b"", "application/json", {}, "", "m-1", "jobs"))
"""


def test_a_worker_killed_outright_takes_its_zygote_and_child_along(imports: Path, tmp_path: Path) -> None:
    """SIGKILL leaves the worker no say: the zygote sees its socket close and kills the child's group."""
    pids = tmp_path / "pids"
    argv = [sys.executable, "-c", WORKER, str(imports.parent), str(imports), str(pids)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as worker:
        try:
            assert worker.stdout is not None
            zygote = int(worker.stdout.readline())
            deadline = time.monotonic() + 20
            while not pids.exists():
                assert time.monotonic() < deadline, "the command did not start"
                time.sleep(0.02)
            time.sleep(0.1)  # the pids are written: the grandchild exists
        finally:
            worker.kill()
    child, grandchild, _ = (int(word) for word in pids.read_text().split())
    _wait_gone(zygote, "the zygote of a killed worker")
    _wait_gone(child, "the child of a killed worker")
    _wait_gone(grandchild, "the grandchild of a killed worker")
