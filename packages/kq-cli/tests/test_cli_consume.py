"""``kq consume``: runs queued echoback commands, dead-letters bad messages, stops at its limits."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from kq.cli import EXIT_OK, cli
from kq.core import App, Delivery

ECHO_LINE = re.compile(
    r"It is \d{4}/\d\d/\d\d - \d\d:\d\d:\d\d\.\d{3} and process with pid (\d+) on host .+ says: (.*)"
)


def kq(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def ok(*args: str) -> str:
    result = kq(*args)
    assert result.exit_code == EXIT_OK, result.output
    return result.stdout


def info(queue: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok("managequeue", "info", queue, "--format", "json"))
    return data


def waiting(queue: str) -> list[Delivery]:
    with App() as app, app.driver().consumer(queue) as consumer:
        deliveries = []
        while (delivery := consumer.receive(0)) is not None:
            deliveries.append(delivery)
        return deliveries


def test_consume_runs_good_messages_and_dead_letters_bad_ones() -> None:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ok("queuemessage", "demo", "not json", "-c", "text/plain")
    ok("queuecommand", "demo", "echoback", "hello", "-o", "f=out.txt")
    assert info("demo")["messages"] == 2

    output = ok("consume", "demo", "-m", "2", "--poll-interval", "0.1")

    assert output.splitlines()[-1] == "Stopped because: message limit of 2 reached"
    # the bad message came first and did not stop the worker: echoback ran after it
    lines = Path("out.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    match = ECHO_LINE.fullmatch(lines[0])
    assert match
    assert match[2] == "hello"
    assert int(match[1]) != os.getpid()  # run as a child process
    assert info("demo")["messages"] == 0
    assert info("demo")["in_flight"] == 0  # both acknowledged
    assert info("demo.failed")["messages"] == 1
    [dead] = waiting("demo.failed")
    assert (dead.body, dead.content_type) == (b"not json", "text/plain")
    assert dead.headers["kq-dead-letter-reason"] == "undecodable"
    assert "text/plain" in dead.headers["kq-dead-letter-error"]
    assert dead.headers["kq-original-queue"] == "demo"
    # the worker put back the signal handlers it installed
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def test_consume_dead_letters_a_command_not_allowed() -> None:
    ok("queuecommand", "demo", "touch", "pwned.txt", "--novalidate")
    ok("queuecommand", "demo", "echoback", "after", "-o", "f=out.txt")
    output = ok("consume", "demo", "-m", "2", "--poll-interval", "0.1", "-w")
    assert "Stopped because: message limit of 2 reached" in output
    assert not Path("pwned.txt").exists()
    assert Path("out.txt").read_text(encoding="utf-8").endswith("says: after\n")
    [dead] = waiting("demo.failed")
    assert json.loads(dead.body)["command"] == "touch"
    assert dead.headers["kq-dead-letter-reason"] == "not-allowed"


def test_consume_failed_command_goes_to_dead_letter_queue() -> None:
    Path("adir").mkdir()
    ok("queuecommand", "demo", "echoback", "x", "-o", "f=adir")  # echoback exits 2: not a file
    output = ok("consume", "demo", "-m", "1", "--poll-interval", "0.1")
    assert output.splitlines()[-1] == "Stopped because: message limit of 1 reached"
    [dead] = waiting("demo.failed")
    assert dead.headers["kq-dead-letter-reason"] == "failed"
    assert "exited with status 2" in dead.headers["kq-dead-letter-error"]


def test_consume_time_limit_on_empty_queue() -> None:
    started = time.monotonic()
    output = ok("consume", "demo", "-t", "0.5", "--poll-interval", "0.1")
    elapsed = time.monotonic() - started
    assert "time limit" in output
    assert output.splitlines()[-1] == "Stopped because: time limit of 0.5s reached"
    assert 0.45 <= elapsed < 5


def test_consume_time_limit_leaves_messages_it_does_not_take() -> None:
    ok("queuecommand", "demo", "echoback", "x", "-o", "f=out.txt")
    output = ok("consume", "demo", "-t", "0.3", "--poll-interval", "0.1", "-r", "other.*")
    assert "time limit" in output
    assert not Path("out.txt").exists()
    assert info("demo")["messages"] == 1


def test_consume_routing_key_selects_messages() -> None:
    ok("queuecommand", "demo", "echoback", "first", "-o", "f=out.txt", "-r", "skip.me")
    ok("queuecommand", "demo", "echoback", "second", "-o", "f=out.txt", "-r", "take.me")
    output = ok("consume", "demo", "-m", "1", "-r", "take.*", "--poll-interval", "0.1", "-t", "5")
    assert "message limit of 1 reached" in output
    assert Path("out.txt").read_text(encoding="utf-8").endswith("says: second\n")
    assert [d.routing_key for d in waiting("demo")] == ["skip.me"]


def test_consume_label_reaches_the_command(workdir: Path) -> None:
    script = 'printf "%s %s %s\\n" "$KQ_LABEL" "$KQ_QUEUE" "$0" >> env.txt'
    prefix = json.dumps(["sh", "-c", script])  # a JSON array of strings is a TOML array
    (workdir / "kq.toml").write_text(
        f'[queues.jobs]\n[allow]\ncommands = ["echoback"]\n[console]\nprefix = {prefix}\n', encoding="utf-8"
    )
    ok("queuecommand", "jobs", "echoback")
    output = ok("consume", "jobs", "-m", "1", "--label", "worker-7", "--poll-interval", "0.1")
    assert "message limit of 1 reached" in output
    assert Path("env.txt").read_text(encoding="utf-8") == "worker-7 jobs echoback\n"
