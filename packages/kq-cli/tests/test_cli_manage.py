"""``kq managedriver`` and ``kq managequeue`` on the zero-configuration sqlite driver and with a kq.toml."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kq.cli import EXIT_FAILURE, EXIT_OK, cli


def kq(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def kq_json(*args: str) -> Any:
    result = kq(*args, "--format", "json")
    assert result.exit_code == EXIT_OK, result.output
    return json.loads(result.stdout)


def queue_messages(queue: str, body: str = "{}", count: int = 1) -> None:
    result = kq("queuemessage", queue, body, "-m", str(count))
    assert result.exit_code == EXIT_OK, result.output


# --- managedriver ---------------------------------------------------------------------------------------


def test_managedriver_list_text() -> None:
    result = kq("managedriver", "list")
    assert result.exit_code == EXIT_OK, result.output
    text = result.output
    assert re.search(r"^  memory\s+from kq-core$", text, re.MULTILINE)
    assert re.search(r"^  sqlite\s+from kq-core$", text, re.MULTILINE)
    assert re.search(r"^  default\s+type sqlite\s+\(default\)$", text, re.MULTILINE)
    assert "built-in defaults, no configuration file" in text
    assert "one process only" in text  # the memory driver's capabilities are shown
    assert text.count("capabilities:") >= 2


def test_managedriver_list_json() -> None:
    data = kq_json("managedriver", "list")
    assert set(data) >= {"types", "instances"}
    types = {item["type"]: item for item in data["types"]}
    assert {"memory", "sqlite"} <= set(types)
    for item in data["types"]:
        assert isinstance(item["type"], str)
        assert isinstance(item["capabilities"], dict)
        assert "routing_keys" in item["capabilities"]
    assert types["sqlite"]["capabilities"]["cross_process"] is True
    assert types["sqlite"]["capabilities"]["message_ttl"] is True
    assert types["memory"]["capabilities"]["cross_process"] is False
    assert types["sqlite"]["distribution"] == "kq-core"
    assert "path" in types["sqlite"]["options"]
    assert data["instances"] == [{"name": "default", "type": "sqlite", "default": True}]
    assert data["configuration"] is None


def test_managedriver_list_configured_instances(workdir: Path) -> None:
    (workdir / "kq.toml").write_text(
        'default_driver = "mem"\n[drivers.mem]\ntype = "memory"\n[drivers.other]\ntype = "sqlite"\n',
        encoding="utf-8",
    )
    data = kq_json("managedriver", "list")
    instances = {item["name"]: item for item in data["instances"]}
    assert instances["mem"] == {"name": "mem", "type": "memory", "default": True}
    assert instances["other"] == {"name": "other", "type": "sqlite", "default": False}
    assert instances["default"]["default"] is False
    assert data["configuration"].endswith("kq.toml")
    text = kq("managedriver", "list").output
    assert re.search(r"^  mem\s+type memory\s+\(default\)$", text, re.MULTILINE)


def test_managedriver_unknown_action() -> None:
    result = kq("managedriver", "nosuch")
    assert result.exit_code == 2
    assert "nosuch" in result.output


# --- managequeue ----------------------------------------------------------------------------------------


def test_info_counts_messages() -> None:
    empty = kq_json("managequeue", "info", "demo")
    assert (empty["queue"], empty["messages"], empty["exists"]) == ("demo", 0, False)
    queue_messages("demo", count=2)
    data = kq_json("managequeue", "info", "demo")
    assert (data["messages"], data["exists"], data["in_flight"], data["delayed"]) == (2, True, 0, 0)
    text = kq("managequeue", "info", "demo").output
    assert "messages: 2" in text.splitlines()


def test_purge() -> None:
    queue_messages("demo", count=2)
    queue_messages("other")
    result = kq("managequeue", "purge", "demo")
    assert result.exit_code == EXIT_OK, result.output
    assert result.output == "Purged 2 message(s) from queue demo\n"
    assert kq_json("managequeue", "info", "demo")["messages"] == 0
    assert kq_json("managequeue", "info", "other")["messages"] == 1  # only the named queue
    assert kq_json("managequeue", "purge", "other") == {"queue": "other", "purged": 1}


def test_delete() -> None:
    queue_messages("demo")
    queue_messages("other")
    result = kq("managequeue", "delete", "demo")
    assert result.exit_code == EXIT_OK, result.output
    assert result.output == "Deleted queue demo\n"
    assert kq_json("managequeue", "list-available") == ["other"]
    data = kq_json("managequeue", "info", "demo")
    assert (data["exists"], data["messages"]) == (False, 0)
    assert kq_json("managequeue", "delete", "other") == {"queue": "other", "deleted": True}


def test_list_available() -> None:
    assert kq_json("managequeue", "list-available") == []
    queue_messages("beta")
    queue_messages("alpha")
    assert kq_json("managequeue", "list-available") == ["alpha", "beta"]
    result = kq("managequeue", "list-available")
    assert result.exit_code == EXIT_OK
    assert result.output.splitlines() == ["alpha", "beta"]


@pytest.mark.parametrize("extra", [[], ["-i", "default"]])
def test_list_configured_without_configuration(extra: list[str]) -> None:
    result = kq("managequeue", "list-configured", *extra)
    assert result.exit_code == EXIT_OK, result.output
    assert "No queue is configured" in result.output
    assert kq_json("managequeue", "list-configured", *extra) == []


def test_list_configured_with_kq_toml(workdir: Path) -> None:
    (workdir / "kq.toml").write_text(
        '[queues.jobs]\nrouting_keys = ["app.*"]\n[queues.mail]\nconsumer = "noop"\n'
        'dead_letter_queue = "mail.dead"\n',
        encoding="utf-8",
    )
    result = kq("managequeue", "list-configured")
    assert result.exit_code == EXIT_OK, result.output
    lines = result.output.splitlines()
    assert lines == [
        "jobs: driver default, consumer console_command, routing keys app.*, dead letters to jobs.failed",
        "mail: driver default, consumer noop, routing keys #, dead letters to mail.dead",
    ]
    data = kq_json("managequeue", "list-configured")
    assert [item["queue"] for item in data] == ["jobs", "mail"]
    assert data[0]["routing_keys"] == ["app.*"]
    via_driver = kq_json("managequeue", "list-configured", "-i", "default")
    assert [item["queue"] for item in via_driver] == ["jobs", "mail"]


@pytest.mark.parametrize("extra", [[], ["demo"], ["-i", "default"]])
def test_help_lists_actions(extra: list[str]) -> None:
    result = kq("managequeue", "help", *extra)
    assert result.exit_code == EXIT_OK, result.output
    assert (
        result.output == "Actions of driver default: list-configured, list-available, info, purge, delete\n"
    )
    data = kq_json("managequeue", "help", *extra)
    assert data == {
        "driver": "default",
        "actions": ["list-configured", "list-available", "info", "purge", "delete"],
    }


@pytest.mark.parametrize("extra", [[], ["demo"]])
def test_unknown_action(extra: list[str]) -> None:
    result = kq("managequeue", "explode", *extra)
    assert result.exit_code == EXIT_FAILURE
    assert "explode" in result.output
    assert "available" in result.output
    assert "purge" in result.output


@pytest.mark.parametrize("action", ["info", "purge", "delete"])
def test_queue_action_without_queue(action: str) -> None:
    result = kq("managequeue", action)
    assert result.exit_code == EXIT_FAILURE
    assert "needs a queue name" in result.output
    assert result.output.startswith("kq: error: ")


def test_dead_letter_queue_of_a_configured_queue_is_known(workdir: Path) -> None:
    (workdir / "kq.toml").write_text("[queues.jobs]\n", encoding="utf-8")
    assert kq_json("managequeue", "info", "jobs.failed")["messages"] == 0
    assert kq_json("managequeue", "info", "jobs")["queue"] == "jobs"


def test_unconfigured_queue_with_explicit_driver(workdir: Path) -> None:
    (workdir / "kq.toml").write_text("[queues.jobs]\n", encoding="utf-8")
    assert kq_json("managequeue", "info", "elsewhere", "-i", "default")["messages"] == 0


def test_unknown_action_argument_is_a_clear_error() -> None:
    result = kq("managequeue", "info", "demo", "-a", "colour=blue")
    assert result.exit_code == EXIT_FAILURE
    assert "colour" in result.output
    assert "unexpected" not in result.output
