"""Global options after the command name, their KQ_* environment variables, the default level of
read-only commands, --log-format json and --log-file (with real processes where it is about them)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kq.cli import EXIT_OK, EXIT_USAGE, cli
from kq.cli._log_json import JsonFormatter

#: How a worker's INFO lines (it says what it consumes when it starts) begin after the time.
STARTS = " INFO kq.core."


def run(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KQ_")}
    return subprocess.run(
        [sys.executable, "-m", "kq.cli", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, **(env or {})},
        check=False,
    )


def kq(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "env", "heard"),
    [
        (["consume", "demo", "-t", "0.1"], {}, True),
        (["consume", "demo", "-t", "0.1", "-q"], {}, False),
        (["-q", "consume", "demo", "-t", "0.1"], {}, False),
        (["consume", "demo", "-t", "0.1", "--log-level", "WARNING"], {}, False),
        (["consume", "demo", "-t", "0.1"], {"KQ_LOG_LEVEL": "WARNING"}, False),
        # after the command name wins over the environment and over what comes before it
        (["consume", "demo", "-t", "0.1", "--log-level", "INFO"], {"KQ_LOG_LEVEL": "ERROR"}, True),
        (["--log-level", "ERROR", "consume", "demo", "-t", "0.1", "--log-level", "INFO"], {}, True),
        # -v and -q add up wherever they are
        (["-q", "consume", "demo", "-t", "0.1", "-v"], {}, True),
    ],
)
def test_levels_before_and_after_the_command_and_from_the_environment(
    workdir: Path, args: list[str], env: dict[str, str], heard: bool
) -> None:
    done = run(workdir, *args, env=env)
    assert done.returncode == EXIT_OK, done.stderr
    assert (STARTS in done.stderr) is heard, done.stderr


def test_v_after_the_command_shows_debug_lines(workdir: Path) -> None:
    assert run(workdir, "queuecommand", "demo", "echoback", "hi").returncode == EXIT_OK
    done = run(workdir, "consume", "demo", "-m", "1", "-v")
    assert done.returncode == EXIT_OK, done.stderr
    assert " DEBUG kq.core." in done.stderr


def test_config_after_the_command_name(workdir: Path) -> None:
    (workdir / "a.toml").write_text("[queues.from_a]\n")
    (workdir / "b.toml").write_text("[queues.from_b]\n")
    assert kq("managequeue", "list-configured", "--config", "a.toml").output.startswith("from_a: ")
    # after the command name wins
    assert kq("--config", "a.toml", "managequeue", "list-configured", "--config", "b.toml").output.startswith(
        "from_b: "
    )


def test_kq_config_is_still_read(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / "a.toml").write_text("[queues.from_env]\n")
    monkeypatch.setenv("KQ_CONFIG", "a.toml")
    assert kq("managequeue", "list-configured").output.startswith("from_env: ")


@pytest.mark.parametrize(
    ("args", "level"),
    [
        (["status"], logging.WARNING),
        (["managequeue", "info", "demo"], logging.WARNING),
        (["managequeue", "list-configured"], logging.WARNING),
        (["managequeue", "list-available"], logging.WARNING),
        (["failed", "show", "demo", "--idle", "0.05"], logging.WARNING),
        (["managedriver", "list"], logging.WARNING),
        (["watchdog", "check"], logging.WARNING),
        (["workerswatchdog", "check"], logging.WARNING),
        (["managequeue", "purge", "demo", "-y"], logging.INFO),
        (["managequeue", "help"], logging.INFO),
        (["queuemessage", "demo", "{}"], logging.INFO),
        (["status", "-v"], logging.INFO),
        (["-v", "status"], logging.INFO),
        (["status", "--log-level", "DEBUG"], logging.DEBUG),
    ],
)
def test_read_only_commands_log_warnings_only_by_default(
    args: list[str], level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # let kq install its handler, then put things back
    monkeypatch.setattr(root, "level", root.level)
    result = kq(*args)
    assert result.exit_code == EXIT_OK, result.output
    assert root.level == level


def test_read_only_commands_keep_stderr_clean(workdir: Path) -> None:
    """A zero-config producer creates the signing key (an INFO line); a listing says nothing."""
    created = run(workdir, "queuemessage", "demo", "{}")
    assert "created the signing key" in created.stderr
    for args in (["managequeue", "info", "demo"], ["status"], ["failed", "show", "demo", "--idle", "0.05"]):
        done = run(workdir, *args)
        assert done.returncode == EXIT_OK, done.stderr
        assert done.stderr == "", (args, done.stderr)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("where", ["before", "after", "environment"])
def test_log_format_json(workdir: Path, where: str) -> None:
    assert run(workdir, "queuemessage", "demo", '"not a command"').returncode == EXIT_OK
    args, env = ["consume", "demo", "-m", "1"], {}
    if where == "before":
        args = ["--log-format", "json", *args]
    elif where == "after":
        args = [*args, "--log-format", "json"]
    else:
        env = {"KQ_LOG_FORMAT": "json"}
    done = run(workdir, *args, env=env)
    assert done.returncode == EXIT_OK, done.stderr
    lines = _json_lines(done.stderr)
    start = next(line for line in lines if line["level"] == "INFO" and "queue demo" in line["message"])
    assert start["level"] == "INFO"
    assert start["logger"].startswith("kq.core.")
    assert start["pid"] > 0
    assert start["time"].endswith("Z")
    assert start["time"][10] == "T"
    dead = next(line for line in lines if line["level"] == "ERROR")
    assert dead["queue"] == "demo"
    assert len(dead["message_id"]) >= 16
    assert f"queue demo message {dead['message_id']}: " in dead["message"]
    assert "dead-letter queue demo.failed" in dead["message"]


def test_json_formatter_fields() -> None:
    logger = logging.getLogger("kq.test")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            "kq.test",
            logging.ERROR,
            __file__,
            1,
            "queue %s message %s: it broke",
            ("jobs", "m1"),
            sys.exc_info(),
        )
    document = json.loads(JsonFormatter().format(record))
    assert document["message"] == "queue jobs message m1: it broke"
    assert (document["queue"], document["message_id"]) == ("jobs", "m1")
    assert "ValueError: boom" in document["exception"]

    extra = logger.makeRecord(
        "kq.test", logging.INFO, __file__, 1, "queue %s: purged", ("q",), None, extra={"tenant": "acme"}
    )
    document = json.loads(JsonFormatter().format(extra))
    assert (document["queue"], document["tenant"]) == ("q", "acme")
    assert "message_id" not in document
    # explicit attributes win over what the message says
    explicit = logger.makeRecord(
        "kq.test", logging.INFO, __file__, 1, "queue %s: x", ("q",), None, extra={"queue": "real"}
    )
    assert json.loads(JsonFormatter().format(explicit))["queue"] == "real"
    plain = logger.makeRecord("kq.test", logging.INFO, __file__, 1, "requeued %s", ("q",), None)
    assert "queue" not in json.loads(JsonFormatter().format(plain))


@pytest.mark.parametrize("where", ["before", "after", "environment"])
def test_log_file_appends_and_leaves_stderr_clean(workdir: Path, where: str) -> None:
    log = workdir / "logs" / "kq.log"
    log.parent.mkdir()
    args = ["consume", "demo", "-t", "0.1"]
    env: dict[str, str] = {}
    if where == "before":
        args = ["--log-file", str(log), *args]
    elif where == "after":
        args = [*args, "--log-file", str(log)]
    else:
        env = {"KQ_LOG_FILE": str(log)}
    sizes = []
    for _ in range(2):
        done = run(workdir, *args, env=env)
        assert done.returncode == EXIT_OK, done.stderr
        assert done.stderr == ""
        sizes.append(len(log.read_text().splitlines()))
    assert 0 < sizes[0] < sizes[1]  # appended, not overwritten
    assert STARTS in log.read_text()


def test_log_file_and_json_together(workdir: Path) -> None:
    done = run(workdir, "consume", "demo", "-t", "0.1", "--log-file", "kq.jsonl", "--log-format", "json")
    assert done.returncode == EXIT_OK, done.stderr
    assert any(line["level"] == "INFO" for line in _json_lines((workdir / "kq.jsonl").read_text()))


def test_log_file_is_reopened_after_logrotate_moved_it(workdir: Path) -> None:
    log = workdir / "worker.log"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kq.cli",
            "consume",
            "demo",
            "-v",
            "--log-file",
            str(log),
            "--poll-interval",
            "0.1",
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: log.exists() and STARTS in log.read_text())
        log.rename(workdir / "worker.log.1")
        queued = run(workdir, "queuecommand", "demo", "echoback", "after-rotation", "--format", "json")
        message_id = json.loads(queued.stdout)["message_id"]
        _wait_for(lambda: log.exists() and message_id in log.read_text())  # -v: a line per message
        rotated = (workdir / "worker.log.1").read_text()
        assert STARTS in rotated
        assert message_id not in rotated
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=20)
    assert err == ""


def _wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("not seen in time")
        time.sleep(0.1)


def test_bad_values_are_usage_errors(workdir: Path) -> None:
    done = run(workdir, "status", env={"KQ_LOG_FORMAT": "xml"})
    assert done.returncode == EXIT_USAGE
    assert "KQ_LOG_FORMAT" in done.stderr or "--log-format" in done.stderr
    done = run(workdir, "status", "--log-file", str(workdir / "missing" / "kq.log"))
    assert done.returncode == EXIT_USAGE
    assert "cannot open" in done.stderr
    assert "--log-file" in done.stderr
    done = run(workdir, "status", "--log-level", "LOUD")
    assert done.returncode == EXIT_USAGE
    assert "unknown log level 'LOUD'" in done.stderr


def test_help_says_where_the_global_options_go() -> None:
    main = kq("--help").output
    for option in ("--log-format", "--log-file", "KQ_LOG_LEVEL", "KQ_LOG_FORMAT", "KQ_LOG_FILE"):
        assert option in main
    sub = kq("consume", "--help").output
    assert (
        "Global options (--config, --log-level, --log-format, --log-file, -v, -q) may also follow"
        in " ".join(sub.split())
    )


def test_after_a_double_dash_they_belong_to_the_queued_command(workdir: Path) -> None:
    result = kq("queuecommand", "demo", "echoback", "--format", "json", "--", "-v", "--log-file", "x")
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout)["body"]["arguments"] == ["-v", "--log-file", "x"]
    assert not (workdir / "x").exists()
