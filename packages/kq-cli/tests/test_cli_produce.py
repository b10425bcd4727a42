"""``kq queuecommand`` and ``kq queuemessage`` on the zero-configuration sqlite driver."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kq.cli import EXIT_OK, EXIT_USAGE, cli
from kq.core import App, Delivery


def kq(*args: str, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def received(queue: str, routing_key: str | None = None) -> list[Delivery]:
    """Every message waiting on ``queue`` (left in place: the consumer releases them on close)."""
    with App() as app, app.driver().consumer(queue, routing_key=routing_key) as consumer:
        deliveries = []
        while (delivery := consumer.receive(0)) is not None:
            deliveries.append(delivery)
        return deliveries


def info(queue: str) -> dict[str, Any]:
    result = kq("managequeue", "info", queue, "--format", "json")
    assert result.exit_code == EXIT_OK, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def ttls(queue: str) -> list[float | None]:
    """Per-message TTLs as stored by the sqlite driver."""
    with contextlib.closing(sqlite3.connect(".kq/kq.sqlite3")) as db:
        rows = db.execute(
            "SELECT expires_at - enqueued_at FROM kq_messages WHERE queue = ? ORDER BY id", (queue,)
        ).fetchall()
    return [row[0] for row in rows]


def test_queuecommand_queues_the_body() -> None:
    result = kq("queuecommand", "demo", "echoback", "hello", "-o", "f=out.txt")
    assert result.exit_code == EXIT_OK, result.output
    assert result.output.startswith("Command queued for execution on queue demo as message ")
    assert info("demo")["messages"] == 1
    [delivery] = received("demo")
    assert delivery.content_type == "application/json"
    assert json.loads(delivery.body) == {
        "command": "echoback",
        "arguments": ["hello"],
        "options": {"f": "out.txt"},
    }
    assert delivery.routing_key == "echoback"
    assert result.output.split()[-1] == delivery.message_id
    assert not Path("out.txt").exists()  # queued, not run


def test_queuecommand_json_output() -> None:
    args = ["echoback", "a", "-o", "f=out.txt", "-o", "flag", "--format", "json", "--", "--dash"]
    result = kq("queuecommand", "demo", *args)
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout)
    [delivery] = received("demo")
    assert data["queue"] == "demo"
    assert data["message_id"] == delivery.message_id
    assert data["routing_key"] == "echoback"
    assert data["ttl"] is None
    assert data["body"] == json.loads(delivery.body)
    assert data["body"]["arguments"] == ["a", "--dash"]
    assert data["body"]["options"]["f"] == "out.txt"
    assert "flag" in data["body"]["options"]


@pytest.mark.parametrize(
    ("args", "routing_key"),
    [
        (["echoback", "x"], "echoback"),
        (["app:cmd", "--novalidate"], "app.cmd"),
        (["app:sub:cmd", "--novalidate"], "app.sub.cmd"),
        (["echoback", "x", "-r", "key"], "key"),
        (["echoback", "x", "--routing-key", "custom.key.here"], "custom.key.here"),
    ],
)
def test_queuecommand_routing_key(args: list[str], routing_key: str) -> None:
    result = kq("queuecommand", "demo", *args)
    assert result.exit_code == EXIT_OK, result.output
    [delivery] = received("demo")
    assert delivery.routing_key == routing_key


def test_queuecommand_routing_key_filters_consumers() -> None:
    assert kq("queuecommand", "demo", "app:cmd", "--novalidate").exit_code == EXIT_OK
    assert kq("queuecommand", "demo", "echoback", "x").exit_code == EXIT_OK
    assert [d.routing_key for d in received("demo", routing_key="app.*")] == ["app.cmd"]
    assert [d.routing_key for d in received("demo", routing_key="echoback")] == ["echoback"]


def test_queuecommand_ttl() -> None:
    result = kq("queuecommand", "demo", "echoback", "x", "--ttl", "30")
    assert result.exit_code == EXIT_OK, result.output
    assert "valid for 30 seconds" in result.output
    assert kq("queuecommand", "demo", "echoback", "y").exit_code == EXIT_OK
    first, second = ttls("demo")
    assert first == pytest.approx(30, abs=0.01)
    assert second is None
    assert info("demo")["messages"] == 2


@pytest.mark.parametrize("ttl", ["0", "-1", "soon"])
def test_queuecommand_bad_ttl_is_a_usage_error(ttl: str) -> None:
    result = kq("queuecommand", "demo", "echoback", "x", "--ttl", ttl)
    assert result.exit_code == EXIT_USAGE
    assert "--ttl" in result.output
    assert not Path(".kq").exists()  # refused before anything was opened


def test_queuecommand_refuses_a_command_not_allowed() -> None:
    result = kq("queuecommand", "demo", "rm", "-o", "rf", "--", "/")
    assert result.exit_code == EXIT_USAGE
    assert "'rm'" in result.output
    assert "--novalidate" in result.output
    assert "echoback" in result.output  # says what is allowed
    assert info("demo")["messages"] == 0


def test_queuecommand_novalidate_queues_it() -> None:
    result = kq("queuecommand", "demo", "rm", "x", "--novalidate")
    assert result.exit_code == EXIT_OK, result.output
    [delivery] = received("demo")
    assert json.loads(delivery.body) == {"command": "rm", "arguments": ["x"], "options": {}}


def test_queuecommand_validates_against_the_configuration(workdir: Path) -> None:
    (workdir / "kq.toml").write_text('[queues.jobs]\n[allow]\ncommands = ["re:app:.*"]\n', encoding="utf-8")
    assert kq("queuecommand", "jobs", "app:cmd").exit_code == EXIT_OK
    refused = kq("queuecommand", "jobs", "echoback", "x")
    assert refused.exit_code == EXIT_USAGE
    assert "kq.toml" in refused.output
    assert [d.routing_key for d in received("jobs")] == ["app.cmd"]


def test_queuemessage_json_body() -> None:
    result = kq("queuemessage", "demo", '{"a":1}')
    assert result.exit_code == EXIT_OK, result.output
    assert result.output == "1 message(s) queued on queue demo\n"
    [delivery] = received("demo")
    assert (delivery.body, delivery.content_type, delivery.routing_key) == (
        b'{"a":1}',
        "application/json",
        "",
    )


@pytest.mark.parametrize("extra", [[], ["-b"], ["--batch"]])
def test_queuemessage_repeat(extra: list[str]) -> None:
    result = kq("queuemessage", "demo", '{"a":1}', "-n", "3", *extra)
    assert result.exit_code == EXIT_OK, result.output
    assert result.output == "3 message(s) queued on queue demo\n"
    deliveries = received("demo")
    assert [d.body for d in deliveries] == [b'{"a":1}'] * 3
    assert len({d.message_id for d in deliveries}) == 3
    assert info("demo")["messages"] == 3


@pytest.mark.parametrize("extra", [[], ["-b"]])
def test_queuemessage_repeat_json_output(extra: list[str]) -> None:
    result = kq("queuemessage", "demo", "[1]", "--repeat", "3", "--format", "json", *extra)
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout)
    assert data["count"] == 3
    assert data["queue"] == "demo"
    assert data["message_ids"] == [d.message_id for d in received("demo")]


def test_queuemessage_refuses_non_json_by_default() -> None:
    result = kq("queuemessage", "demo", "not json")
    assert result.exit_code == EXIT_USAGE
    assert "-c text/plain" in result.output
    assert "not valid JSON" in result.output
    assert info("demo")["messages"] == 0


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain; charset=utf-8", "application/xml"])
def test_queuemessage_other_content_types(content_type: str) -> None:
    result = kq("queuemessage", "demo", "not json", "-c", content_type)
    assert result.exit_code == EXIT_OK, result.output
    [delivery] = received("demo")
    assert (delivery.body, delivery.content_type) == (b"not json", content_type)


def test_queuemessage_novalidate_sends_invalid_json() -> None:
    result = kq("queuemessage", "demo", "not json", "--novalidate")
    assert result.exit_code == EXIT_OK, result.output
    [delivery] = received("demo")
    assert (delivery.body, delivery.content_type) == (b"not json", "application/json")


def test_queuemessage_headers() -> None:
    result = kq("queuemessage", "demo", "{}", "-H", "name=value", "--header", "x-other=a=b", "-H", "empty=")
    assert result.exit_code == EXIT_OK, result.output
    [delivery] = received("demo")
    assert delivery.headers["name"] == "value"
    assert delivery.headers["x-other"] == "a=b"  # split on the first '='
    assert delivery.headers["empty"] == ""


def test_queuemessage_reads_stdin() -> None:
    result = kq("queuemessage", "demo", "-", stdin='{"from": "stdin", "n": [1, 2]}\n')
    assert result.exit_code == EXIT_OK, result.output
    [delivery] = received("demo")
    assert json.loads(delivery.body) == {"from": "stdin", "n": [1, 2]}
    refused = kq("queuemessage", "demo", "-", stdin="{broken")  # stdin is validated too
    assert refused.exit_code == EXIT_USAGE
    assert "-c text/plain" in refused.output


def test_queuemessage_routing_key_and_ttl() -> None:
    result = kq("queuemessage", "demo", "{}", "-r", "a.b", "--ttl", "2.5", "-n", "2", "-b")
    assert result.exit_code == EXIT_OK, result.output
    assert result.output == "2 message(s) queued on queue demo, valid for 2.5 seconds\n"
    assert [d.routing_key for d in received("demo")] == ["a.b", "a.b"]
    assert ttls("demo") == [pytest.approx(2.5, abs=0.01)] * 2


def test_queuemessage_delay() -> None:
    result = kq("queuemessage", "demo", "{}", "--delay", "60")
    assert result.exit_code == EXIT_OK, result.output
    data = info("demo")
    assert (data["messages"], data["delayed"]) == (0, 1)
    assert received("demo") == []


@pytest.mark.parametrize(
    "args",
    [
        ["queuecommand", "demo", "echoback", "hi"],
        ["queueservice", "demo", "os.path", "join", "a", "b"],
        ["queuehttp", "demo", "http://127.0.0.1:9/hook"],
    ],
    ids=["queuecommand", "queueservice", "queuehttp"],
)
def test_every_queueing_command_reports_the_same_json_fields(args: list[str]) -> None:
    """queueservice and queuehttp used to leave the delay out of their --format json report."""
    result = kq(*args, "--delay", "30", "--ttl", "600", "--format", "json")
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"queue", "message_id", "routing_key", "ttl", "delay", "body"}
    assert (data["queue"], data["ttl"], data["delay"]) == ("demo", 600, 30)
    assert info("demo")["delayed"] == 1
