"""``kq managedriver`` and ``kq managequeue`` on the zero-configuration sqlite driver and with a kq.toml."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
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
    result = kq("queuemessage", queue, body, "-n", str(count))
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
    # A type without an instance shows its defaults; a configured type, its instances' capabilities.
    assert re.search(
        r"^             capabilities \(type defaults\): routing keys emulated \(-r filters\), "
        r"delivery count exact, .*one process only$",
        text,
        re.MULTILINE,
    )
    # The sqlite type's own lines: up to the next type (another installed driver, such as sqs) or section.
    sqlite_type = text.split("  sqlite ")[1].split("Driver instances")[0]
    sqlite_type = re.split(r"^  \S", sqlite_type, maxsplit=1, flags=re.MULTILINE)[0]
    assert "capabilities" not in sqlite_type
    instance = text.split("Driver instances")[1]
    assert re.search(
        r"^             capabilities: routing keys emulated \(-r filters\), delivery count exact, "
        r"delays, TTL, batch send, leases$",
        instance,
        re.MULTILINE,
    )


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
    assert data["instances"] == [
        {
            "name": "default",
            "type": "sqlite",
            "default": True,
            "capabilities": types["sqlite"]["capabilities"],
        }
    ]
    assert types["sqlite"]["capabilities"]["delivery_count"] == "exact"
    assert types["sqlite"]["capabilities"]["consumer_routing"] == "filter"
    assert data["configuration"] is None


def test_managedriver_list_configured_instances(workdir: Path) -> None:
    (workdir / "kq.toml").write_text(
        'default_driver = "mem"\n[drivers.mem]\ntype = "memory"\n[drivers.other]\ntype = "sqlite"\n',
        encoding="utf-8",
    )
    data = kq_json("managedriver", "list")
    instances = {item["name"]: item for item in data["instances"]}
    assert {k: v for k, v in instances["mem"].items() if k != "capabilities"} == {
        "name": "mem",
        "type": "memory",
        "default": True,
    }
    assert instances["mem"]["capabilities"]["cross_process"] is False
    assert {k: v for k, v in instances["other"].items() if k != "capabilities"} == {
        "name": "other",
        "type": "sqlite",
        "default": False,
    }
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


def test_asking_about_queues_creates_no_database(workdir: Path) -> None:
    """Zero-config: info, list-available, purge and delete before anything was queued leave the folder
    as it was (no .kq/kq.sqlite3 made on the way)."""
    assert kq_json("managequeue", "info", "nosuch")["exists"] is False
    assert kq_json("managequeue", "list-available") == []
    assert kq_json("managequeue", "purge", "nosuch") == {"queue": "nosuch", "purged": 0}
    assert kq_json("managequeue", "delete", "nosuch") == {"queue": "nosuch", "deleted": False}
    assert not (workdir / ".kq").exists()


def test_delete_of_a_missing_queue_says_so() -> None:
    queue_messages("other")
    result = kq("managequeue", "delete", "nosuch")
    assert result.exit_code == EXIT_OK, result.output
    assert result.output == "Queue nosuch does not exist on driver default; nothing was deleted\n"
    assert kq_json("managequeue", "delete", "nosuch") == {"queue": "nosuch", "deleted": False}
    assert kq_json("managequeue", "list-available") == ["other"]


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
    sqlite = (
        "  capabilities: routing keys emulated (-r filters), delivery count exact, delays, TTL, batch send, "
        "leases"
    )
    assert lines == [
        "jobs: driver default, consumer console_command, routing keys app.*, dead letters to jobs.failed",
        sqlite,
        "mail: driver default, consumer noop, routing keys #, dead letters to mail.dead",
        sqlite,
    ]
    data = kq_json("managequeue", "list-configured")
    assert [item["queue"] for item in data] == ["jobs", "mail"]
    assert data[0]["routing_keys"] == ["app.*"]
    assert data[0]["capabilities"]["delivery_count"] == "exact"
    assert data[0]["warnings"] == []
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


# --- capabilities of instances and queues ---------------------------------------------------------------

#: A sqlite driver whose capabilities depend on its options and its queues, as a broker driver's do
#: (RabbitMQ quorum and classic queues, SQS FIFO and standard queues).
_CAPS_DRIVER = """
import dataclasses
from kq.core.driver import Option
from kq.drivers.sqlite import SqliteDriver

class CapsDriver(SqliteDriver):
    driver_options = {**SqliteDriver.driver_options, "counts": Option("exact", str, "delivery_count")}
    queue_options = {**SqliteDriver.queue_options, "counts": Option(None, str, "delivery_count")}

    def capabilities_for(self, queue=None):
        counts = self.options["counts"]
        if queue is not None:
            counts = self.queue(queue).options["counts"] or counts
        return dataclasses.replace(self.capabilities, delivery_count=counts, max_requeue_delay=43200.0)
"""


@pytest.fixture
def caps_driver(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registers the driver type ``capsdemo`` (:data:`_CAPS_DRIVER`) and configures it with queues."""
    import importlib.metadata
    import sys

    from kq.core import _registry as registry

    (workdir / "kqtest_caps_driver.py").write_text(_CAPS_DRIVER, encoding="utf-8")
    monkeypatch.syspath_prepend(str(workdir))
    real = registry._entry_points
    found = dict(real(registry.DRIVER_GROUP))
    found["capsdemo"] = importlib.metadata.EntryPoint(
        name="capsdemo", value="kqtest_caps_driver:CapsDriver", group=registry.DRIVER_GROUP
    )
    registry.clear_cache()
    monkeypatch.setattr(
        registry, "_entry_points", lambda group: found if group == registry.DRIVER_GROUP else real(group)
    )
    (workdir / "kq.toml").write_text(
        'default_driver = "flagged"\n'
        '[drivers.flagged]\ntype = "capsdemo"\ncounts = "flag"\n'
        "[queues.jobs]\n"  # max_deliveries = 10 on a flag: the warning
        '[queues.exactly]\ncounts = "exact"\n'
        "[queues.once]\nmax_deliveries = 1\n"  # a flag is enough for 1
        '[queues.counted]\ncounts = "receives"\n',
        encoding="utf-8",
    )
    yield
    sys.modules.pop("kqtest_caps_driver", None)


@pytest.mark.usefixtures("caps_driver")
def test_managedriver_list_shows_the_instances_capabilities_and_the_types_defaults() -> None:
    data = kq_json("managedriver", "list")
    types = {item["type"]: item for item in data["types"]}
    instances = {item["name"]: item for item in data["instances"]}
    assert types["capsdemo"]["capabilities"]["delivery_count"] == "exact"  # the class: type defaults
    assert instances["flagged"]["capabilities"]["delivery_count"] == "flag"  # the instance's options
    assert instances["flagged"]["capabilities"]["max_requeue_delay"] == 43200.0
    text = kq("managedriver", "list").output
    capsdemo_type = text.split("  capsdemo ")[1].split("\n  ")[0]
    assert "capabilities" not in capsdemo_type  # it has an instance: the instance's are shown
    assert re.search(
        r"^  flagged\s+type capsdemo\s+\(default\)\n {13}capabilities: routing keys emulated \(-r filters\), "
        r"delivery count flag, delays \(requeue max 12h\), TTL, batch send, leases$",
        text,
        re.MULTILINE,
    )
    assert "capabilities (type defaults): routing keys emulated" in text  # memory: no instance


@pytest.mark.usefixtures("caps_driver")
@pytest.mark.parametrize(
    ("queue", "counts", "warning"),
    [
        ("jobs", "flag", "max_deliveries = 10 cannot work: the broker only flags a redelivery"),
        ("exactly", "exact", None),
        ("once", "flag", None),
        ("counted", "receives", "max_deliveries = 10 is not applied: the broker counts receives"),
    ],
)
def test_info_shows_the_queues_capabilities_and_the_poison_warning(
    queue: str, counts: str, warning: str | None
) -> None:
    data = kq_json("managequeue", "info", queue)
    assert data["messages"] == 0
    assert data["capabilities"]["delivery_count"] == counts
    assert data["capabilities"]["consumer_routing"] == "filter"
    expected = [warning] if warning else []
    assert [w[: len(warning or "")] for w in data["warnings"]] == expected
    lines = kq("managequeue", "info", queue).output.splitlines()
    assert "messages: 0" in lines
    assert f"capabilities: routing keys emulated (-r filters), delivery count {counts}, " in "\n".join(lines)
    warnings = [line.removeprefix("warning: ") for line in lines if line.startswith("warning: ")]
    assert warnings == data["warnings"]


@pytest.mark.usefixtures("caps_driver")
@pytest.mark.parametrize("extra", [[], ["-i", "flagged"]])
def test_list_configured_shows_each_queues_capabilities_and_warnings(extra: list[str]) -> None:
    data = {item["queue"]: item for item in kq_json("managequeue", "list-configured", *extra)}
    assert {name: item["capabilities"]["delivery_count"] for name, item in data.items()} == {
        "jobs": "flag",
        "exactly": "exact",
        "once": "flag",
        "counted": "receives",
    }
    assert [name for name, item in data.items() if item["warnings"]] == ["jobs", "counted"]
    lines = kq("managequeue", "list-configured", *extra).output.splitlines()
    jobs = lines.index(
        "jobs: driver flagged, consumer console_command, routing keys #, dead letters to jobs.failed"
    )
    assert lines[jobs + 1].startswith(
        "  capabilities: routing keys emulated (-r filters), delivery count flag"
    )
    assert lines[jobs + 2].startswith("  warning: max_deliveries = 10 cannot work")
    assert lines[jobs + 3].startswith("exactly: ")


def test_an_instance_that_cannot_be_built_does_not_break_the_listings(workdir: Path) -> None:
    (workdir / "kq.toml").write_text(
        '[drivers.bad]\ntype = "sqlite"\nsynchronous = "sometimes"\n[queues.jobs]\ndriver = "bad"\n',
        encoding="utf-8",
    )
    instances = {item["name"]: item for item in kq_json("managedriver", "list")["instances"]}
    assert "must be OFF, NORMAL, FULL or EXTRA" in instances["bad"]["error"]
    assert "capabilities" not in instances["bad"]
    assert instances["default"]["capabilities"]["delivery_count"] == "exact"
    text = kq("managedriver", "list").output
    assert re.search(r"^  bad\s+type sqlite\n {13}unavailable: .*must be OFF", text, re.MULTILINE)
    (configured,) = kq_json("managequeue", "list-configured")
    assert "must be OFF" in configured["error"]
    lines = kq("managequeue", "list-configured").output.splitlines()
    assert lines[1].startswith("  capabilities unknown: ")
    assert "must be OFF" in lines[1]


@pytest.mark.parametrize(
    ("publish", "requeue", "text"),
    [
        (None, None, "delays"),
        (900.0, 900.0, "delays (max 900s)"),
        (900.0, 43200.0, "delays (publish max 900s, requeue max 12h)"),
        (0.0, 43200.0, "delays (publish max 0s, requeue max 12h)"),
        (None, 4294667.0, "delays (requeue max 49.7d)"),
        (315359700.0, 315359700.0, "delays (max 10y)"),
        (3600.0, 86400.0, "delays (publish max 1h, requeue max 1d)"),
    ],
)
def test_delay_limits_in_the_text_output(publish: float | None, requeue: float | None, text: str) -> None:
    from kq.cli._manage import capabilities_text
    from kq.core.driver import Capabilities

    caps = Capabilities(
        delayed_delivery=True, max_publish_delay=publish, max_requeue_delay=requeue, message_ttl=True
    )
    line = capabilities_text(caps.as_dict())
    assert line.startswith(f"routing keys emulated (-r filters), delivery count exact, {text}, TTL")
