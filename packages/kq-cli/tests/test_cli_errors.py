"""Errors: one line, a documented exit code, never a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kq.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, cli
from kq.cli._common import CORE_CLIENT_LOGGERS, configure_logging
from kq.core.driver import Driver
from kq.core.plugins import load_driver_class


def kq(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def kq_error(code: int, *args: str, env: dict[str, str] | None = None) -> str:
    """Run kq, check the exit code and that stderr has one ``kq: error:`` line; return that line."""
    result = kq(*args, env=env)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kq: error: ")
    return lines[0]


# Every command that takes a queue and -i, with arguments that would otherwise succeed.
QUEUE_COMMANDS = [
    ["queuecommand", "{queue}", "echoback", "x"],
    ["queuemessage", "{queue}", "{{}}"],
    ["consume", "{queue}", "-t", "0.01", "--poll-interval", "0.01"],
    ["managequeue", "info", "{queue}"],
    ["managequeue", "purge", "{queue}"],
]


def _args(template: list[str], queue: str) -> list[str]:
    return [part.format(queue=queue) for part in template]


@pytest.mark.parametrize("template", QUEUE_COMMANDS, ids=lambda t: " ".join(t[:2]))
def test_unknown_driver(template: list[str]) -> None:
    line = kq_error(EXIT_FAILURE, *_args(template, "demo"), "-i", "nope")
    assert "unknown driver 'nope'" in line
    assert "available: default" in line


def test_unknown_driver_lists_configured_instances(workdir: Path) -> None:
    (workdir / "kq.toml").write_text('[drivers.mem]\ntype = "memory"\n', encoding="utf-8")
    line = kq_error(EXIT_FAILURE, "managequeue", "info", "demo", "-i", "nope")
    assert "available: default, mem" in line


@pytest.mark.parametrize("template", QUEUE_COMMANDS, ids=lambda t: " ".join(t[:2]))
def test_queue_not_configured(workdir: Path, template: list[str]) -> None:
    (workdir / "kq.toml").write_text(
        '[queues.jobs]\n[queues.mail]\n[allow]\ncommands = ["echoback"]\n', encoding="utf-8"
    )
    line = kq_error(EXIT_FAILURE, *_args(template, "other"))
    assert "'other' is not configured" in line
    assert "configured: jobs, mail" in line
    assert "kq.toml" in line
    # the configured queue works with the same command line
    assert kq(*_args(template, "jobs")).exit_code == EXIT_OK


def test_queue_on_another_driver(workdir: Path) -> None:
    (workdir / "kq.toml").write_text(
        '[drivers.second]\ntype = "sqlite"\npath = "second.sqlite3"\n[queues.jobs]\n', encoding="utf-8"
    )
    line = kq_error(EXIT_FAILURE, "managequeue", "info", "jobs", "-i", "second")
    assert "configured on driver 'default', not 'second'" in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["queuecommand", "demo", "echoback", "-o", "=x"], "'=x' has no name"),
        (["queuecommand", "demo", "echoback", "-o", "="], "has no name"),
        (["queuemessage", "demo", "{}", "-H", "noequals"], "'noequals' has no '='"),
        (["queuemessage", "demo", "{}", "-H", "=v"], "has no name"),
        (["managequeue", "info", "demo", "-a", "novalue"], "'novalue' has no '='"),
        (["queuemessage", "demo", "{}", "-n", "0"], "-n"),
        (["consume", "demo", "-m", "-1"], "-m"),
        (["consume", "demo", "--poll-interval", "0"], "--poll-interval"),
        (["managequeue", "info", "demo", "--format", "xml"], "--format"),
        (["--log-level", "LOUD", "managequeue", "help"], "LOUD"),
    ],
)
def test_malformed_options_are_usage_errors(args: list[str], fragment: str) -> None:
    result = kq(*args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert fragment in result.output
    assert not Path(".kq").exists()  # rejected before any queue was touched


def test_invalid_header_name_is_a_failure() -> None:
    line = kq_error(EXIT_FAILURE, "queuemessage", "demo", "{}", "-H", "bad name=x")
    assert "'bad name'" in line


# (file content, key the message names, fragment of the message)
BROKEN_CONFIGS = [
    pytest.param("x = [\n", None, "not valid TOML", id="invalid-toml"),
    pytest.param("surprise = 1\n", "surprise", "unknown key", id="unknown-top-level-key"),
    pytest.param("[queues.jobs]\nbogus = 1\n", "queues.jobs.bogus", "bogus", id="unknown-queue-key"),
    pytest.param('[console]\nshell = "sh"\n', "console.shell", "unknown key", id="unknown-console-key"),
    pytest.param("[drivers.x]\nport = 1\n", "drivers.x.type", "needs a 'type'", id="driver-without-type"),
    pytest.param('default_driver = "ghost"\n', "default_driver", "'ghost'", id="unknown-default-driver"),
    pytest.param(
        '[queues.jobs]\ndriver = "ghost"\n', "queues.jobs.driver", "'ghost'", id="queue-on-unknown-driver"
    ),
    pytest.param('[allow]\ncommands = "echoback"\n', "allow.commands", "list", id="allow-not-a-list"),
    pytest.param(
        '[drivers.default]\ntype = "sqlite"\npath = "${KQ_TEST_UNSET_VARIABLE}"\n',
        "drivers.default.path",
        "KQ_TEST_UNSET_VARIABLE",
        id="unset-environment-variable",
    ),
    pytest.param(
        '[drivers.default]\ntype = "sqlite"\nsynchronous = "SOMETIMES"\n',
        "drivers.default.synchronous",
        "FULL",
        id="bad-driver-option",
    ),
    pytest.param(
        'default_driver = "x"\n[drivers.x]\ntype = "nope"\n',
        "drivers.x.type",
        "nope",
        id="unknown-driver-type",
    ),
]


@pytest.mark.parametrize(("content", "key", "fragment"), BROKEN_CONFIGS)
@pytest.mark.parametrize("how", ["--config", "./kq.toml", "$KQ_CONFIG"])
def test_broken_configuration(workdir: Path, how: str, content: str, key: str | None, fragment: str) -> None:
    if how == "./kq.toml":
        path, args, env = workdir / "kq.toml", [], None
    else:
        (workdir / "conf").mkdir()
        path = workdir / "conf" / "broken.toml"
        args = ["--config", str(path)] if how == "--config" else []
        env = {"KQ_CONFIG": str(path)} if how == "$KQ_CONFIG" else None
    path.write_text(content, encoding="utf-8")
    line = kq_error(EXIT_CONFIG, *args, "managequeue", "info", "demo", env=env)
    assert str(path) in line
    assert fragment in line
    if key is not None:
        assert f"key '{key}'" in line


def test_broken_tool_kq_in_pyproject(workdir: Path) -> None:
    (workdir / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.kq]\nsurprise = 1\n', encoding="utf-8"
    )
    line = kq_error(EXIT_CONFIG, "managedriver", "list")
    assert "pyproject.toml [tool.kq]" in line
    assert "key 'surprise'" in line


def test_config_errors_beat_usage_of_the_command(workdir: Path) -> None:
    (workdir / "kq.toml").write_text("surprise = 1\n", encoding="utf-8")
    line = kq_error(EXIT_CONFIG, "queuecommand", "demo", "echoback", "x")
    assert "key 'surprise'" in line


@pytest.mark.parametrize(
    "how",
    [
        "--config",
        "$KQ_CONFIG",
    ],
)
def test_missing_configuration_file(how: str) -> None:
    args = ["--config", "missing.toml"] if how == "--config" else []
    env = {"KQ_CONFIG": "missing.toml"} if how == "$KQ_CONFIG" else None
    line = kq_error(EXIT_CONFIG, *args, "managedriver", "list", env=env)
    assert "missing.toml" in line
    assert "does not exist" in line
    assert how in line
    assert not Path(".kq").exists()


def test_config_option_wins_over_kq_toml(workdir: Path) -> None:
    (workdir / "kq.toml").write_text("surprise = 1\n", encoding="utf-8")
    (workdir / "good.toml").write_text("[queues.jobs]\n", encoding="utf-8")
    result = kq("--config", "good.toml", "managequeue", "list-configured")
    assert result.exit_code == EXIT_OK, result.output
    assert result.output.startswith("jobs: ")


@pytest.mark.parametrize(
    ("args", "kq_level", "library_level"),
    [
        ([], logging.INFO, logging.CRITICAL + 1),
        (["-q"], logging.WARNING, logging.CRITICAL + 1),
        (["-v"], logging.DEBUG, logging.WARNING),
        (["-vv"], logging.DEBUG, logging.DEBUG),
        (["--log-level", "DEBUG"], logging.DEBUG, logging.WARNING),
    ],
)
def test_broker_client_libraries_are_heard_from_at_debug_only(
    args: list[str], kq_level: int, library_level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pika logs a refused connection as ERROR lines with a traceback; kq says it in one line."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # let basicConfig configure, then put things back
    monkeypatch.setattr(root, "level", root.level)
    client_loggers = (*load_driver_class("rabbitmq").client_loggers, *CORE_CLIENT_LOGGERS)
    assert "pika" in client_loggers  # the drivers declare theirs (Driver.client_loggers)
    for name in client_loggers:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    assert kq(*args, "managequeue", "help").exit_code == EXIT_OK
    assert root.level == kq_level
    assert {logging.getLogger(name).level for name in client_loggers} == {library_level}


def test_a_driver_loaded_later_has_its_client_loggers_quieted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver imported after logging is set up (as kq commands import them on use) is quieted too."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    library = logging.getLogger("kqtest.client.library")
    monkeypatch.setattr(library, "level", logging.NOTSET)
    client_loggers = configure_logging("INFO", 0, 0)
    assert client_loggers in root.handlers[0].filters

    class ChattyDriver(Driver):  # imported after configure_logging, as `kq consume` loads a driver
        client_loggers = ("kqtest.client.library",)

    record = library.makeRecord(library.name, logging.ERROR, __file__, 1, "refused", (), None)
    assert not client_loggers.filter(record)  # CRITICAL + 1 by default: heard from at -vv only
    assert library.level == logging.CRITICAL + 1
    assert client_loggers.filter(
        logging.getLogger("kq.core").makeRecord("kq.core", logging.INFO, "", 1, "", (), None)
    )
    del ChattyDriver


def test_kq_records_do_not_look_for_new_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-record search for drivers loaded since (a walk over every Driver subclass) doubled the
    cost of each of kq's own log lines; only other libraries' records need it."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    client_loggers = configure_logging("INFO", 0, 0)
    searches: list[bool] = []
    monkeypatch.setattr(client_loggers, "quiet_loaded_drivers", lambda: searches.append(True))
    for name in ("kq", "kq.core.loop", "kq.drivers.rabbitmq.consumer"):
        record = logging.getLogger(name).makeRecord(name, logging.INFO, "", 1, "line", (), None)
        assert client_loggers.filter(record)
    assert searches == []
    other = logging.getLogger("kqtest.other").makeRecord("kqtest.other", logging.INFO, "", 1, "x", (), None)
    client_loggers.filter(other)
    assert searches == [True]
