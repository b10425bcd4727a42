"""``kq failed show|retry|remove`` on the zero-configuration sqlite driver and with a kq.toml."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kq.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, cli
from kq.core import App, Delivery, Handler, Limits

IDLE = "0.05"


class Failing(Handler):
    accepted_content_types = None

    def consume(self, body: Any, delivery: Delivery) -> Any:
        raise RuntimeError(f"cannot handle {body!r} " + "x" * 100)


class Recording(Handler):
    accepted_content_types = None

    def __init__(self) -> None:
        self.ids: list[str] = []

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.ids.append(delivery.message_id)
        return body


def kq(*args: str) -> Result:
    result = CliRunner().invoke(cli, [*args[:2], *args[2:], "--idle", IDLE], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def kq_json(*args: str) -> Any:
    result = kq(*args, "--format", "json")
    assert result.exit_code == EXIT_OK, result.output
    return json.loads(result.stdout)


def dead_letter(queue: str = "jobs", count: int = 3) -> list[str]:
    """Publish signed messages with the app's producer and fail them with a worker."""
    with App.from_config() as app:
        producer = app.producer(queue)
        ids = [producer.publish(f'{{"n": {n}}}', routing_key=f"job.{n}").message_id for n in range(count)]
        app.consume_loop(queue, handler=Failing(), limits=Limits(messages=count, time=10)).run()
    return ids


def consume(queue: str = "jobs", count: int = 1, wait: float = 10) -> list[str]:
    """Run a worker (the queue's signature requirement applies) and return the ids it handled."""
    worker = Recording()
    with App.from_config() as app:
        app.consume_loop(queue, handler=worker, limits=Limits(messages=count, time=wait)).run()
    return worker.ids


def shown_ids(queue: str = "jobs") -> list[str]:
    return [item["message_id"] for item in kq_json("failed", "show", queue)]


# --- show ------------------------------------------------------------------------------------------------


def test_show_text() -> None:
    ids = dead_letter()
    result = kq("failed", "show", "jobs")
    assert result.exit_code == EXIT_OK, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    for n, (line, message_id) in enumerate(zip(lines[:3], ids, strict=True)):
        assert line.startswith(message_id + "  ")
        assert re.search(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+s ago\)  failed  ", line)
        assert f"RuntimeError: cannot handle {{'n': {n}}} xxx" in line
        assert line.endswith(f"...  key job.{n}")
    error = lines[0].split("  ")[3]
    assert len(error) == 80
    assert lines[-1] == "3 messages in jobs.failed"


def test_show_json_and_limit() -> None:
    ids = dead_letter()
    items = kq_json("failed", "show", "jobs")
    assert [item["message_id"] for item in items] == ids
    assert items[0]["reason"] == "failed"
    assert items[0]["original_queue"] == "jobs"
    assert items[0]["routing_key"] == "job.0"
    assert items[0]["body"] == '{"n": 0}'
    assert items[0]["attempts"] == 1
    assert items[0]["delivery_count"] == 1
    assert "kq-signature" not in json.dumps(items)
    assert [item["message_id"] for item in kq_json("failed", "show", "jobs", "--limit", "1")] == ids[:1]


def test_show_ids_in_full() -> None:
    ids = dead_letter()
    result = kq("failed", "show", "jobs", ids[1])
    assert result.exit_code == EXIT_OK, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"message {ids[1]}"
    assert re.match(r"  dead-lettered   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+s ago\)$", lines[1])
    assert "  reason          failed" in lines
    assert "  routing key     job.1" in lines
    assert "  original queue  jobs" in lines
    headers = lines[lines.index("  headers") + 1 : lines.index("  body")]
    names = [line.split(":")[0].strip() for line in headers]
    assert names == sorted(names)
    # Every header, kq's own included: the signature and the dead-letter notes.
    assert {"kq-signature", "kq-dead-letter-reason"} <= set(names), names
    assert lines[-1] == '    {"n": 1}'
    items = kq_json("failed", "show", "jobs", ids[2], ids[0])
    assert [item["message_id"] for item in items] == [ids[0], ids[2]]  # oldest first
    assert "kq-signature" in items[0]["all_headers"]
    assert items[0]["headers"] == {}  # the short view still leaves kq's headers out


def test_show_unknown_id_fails_and_names_it() -> None:
    ids = dead_letter(count=1)
    result = kq("failed", "show", "jobs", ids[0], "nosuchid")
    assert result.exit_code == EXIT_FAILURE
    assert f"message {ids[0]}" in result.stdout
    assert "kq: not found in jobs.failed: nosuchid" in result.stderr
    assert kq("failed", "show", "jobs", ids[0], "--limit", "1").exit_code == EXIT_USAGE


def test_show_empty() -> None:
    result = kq("failed", "show", "jobs")
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout == "No message in jobs.failed\n"
    assert kq_json("failed", "show", "jobs") == []


# --- retry -----------------------------------------------------------------------------------------------


def test_retry_one_text() -> None:
    ids = dead_letter()
    result = kq("failed", "retry", "jobs", ids[1])
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout == "1 message queued again on jobs\n"
    assert shown_ids() == [ids[0], ids[2]]
    # The zero-configuration jobs queue (console_command consumer) requires signatures.
    assert consume() == [ids[1]]


def test_retry_all_json() -> None:
    ids = dead_letter()
    data = kq_json("failed", "retry", "jobs", "--all")
    assert data == {
        "queue": "jobs",
        "dead_letter_queue": "jobs.failed",
        "retried": ids,
        "missing": [],
        "failed": {},
        "targets": dict.fromkeys(ids, "jobs"),
    }
    assert shown_ids() == []
    assert consume(count=3) == ids


def test_retry_all_text() -> None:
    dead_letter(count=2)
    result = kq("failed", "retry", "jobs", "--all")
    assert result.stdout == "2 messages queued again on jobs\n"
    assert kq("failed", "retry", "jobs", "--all").stdout == "No message queued again from jobs.failed\n"


def test_retry_unknown_id_is_reported_and_the_others_are_done() -> None:
    ids = dead_letter()
    result = kq("failed", "retry", "jobs", "nope", ids[0])
    assert result.exit_code == EXIT_FAILURE
    assert result.stdout == "1 message queued again on jobs\n"
    assert "kq: not found in jobs.failed: nope" in result.stderr
    assert shown_ids() == ids[1:]


def test_retry_unknown_id_json() -> None:
    dead_letter(count=1)
    result = kq("failed", "retry", "jobs", "nope", "--format", "json")
    assert result.exit_code == EXIT_FAILURE
    assert json.loads(result.stdout)["missing"] == ["nope"]


def test_retry_refused_message_is_reported(workdir: Path) -> None:
    from kq.core import Message

    forged = Message(body=b"{}")
    with App.from_config() as app:
        app.driver().producer("jobs").send(forged)  # unsigned: the worker dead-letters it
    assert consume() == []
    result = kq("failed", "retry", "jobs", "--all")
    assert result.exit_code == EXIT_FAILURE
    assert f"kq: {forged.message_id} left in jobs.failed: its signature does not check (unsigned)" in (
        result.stderr
    )
    assert shown_ids() == [forged.message_id]
    result = kq("failed", "retry", "jobs", "--all", "--resign-unverified")
    assert result.exit_code == EXIT_OK, result.output
    assert consume() == [forged.message_id]


# --- remove ----------------------------------------------------------------------------------------------


def test_remove_text_and_json() -> None:
    ids = dead_letter()
    result = kq("failed", "remove", "jobs", ids[0])
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout == "1 message removed from jobs.failed\n"
    assert shown_ids() == ids[1:]
    data = kq_json("failed", "remove", "jobs", "--all")
    assert data == {
        "queue": "jobs",
        "dead_letter_queue": "jobs.failed",
        "removed": ids[1:],
        "missing": [],
        "failed": {},
    }
    assert shown_ids() == []
    assert consume(wait=0.3) == []


def test_remove_unknown_id() -> None:
    result = kq("failed", "remove", "jobs", "nope")
    assert result.exit_code == EXIT_FAILURE
    assert result.stdout == "0 messages removed from jobs.failed\n"
    assert "not found in jobs.failed: nope" in result.stderr


# --- usage and configuration -----------------------------------------------------------------------------


def test_usage_errors() -> None:
    for command in ("retry", "remove"):
        result = kq("failed", command, "jobs")
        assert result.exit_code == EXIT_USAGE
        assert "give the IDs of the messages, or --all for every one" in result.stderr
        result = kq("failed", command, "jobs", "abc", "--all")
        assert result.exit_code == EXIT_USAGE
        assert "give message IDs or --all, not both" in result.stderr
    result = CliRunner().invoke(cli, ["failed", "show"])
    assert result.exit_code == EXIT_USAGE
    result = kq("failed", "show", "jobs", "--limit", "0")
    assert result.exit_code == EXIT_USAGE


def test_help_lists_the_group() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert re.search(r"^  failed\s+Look at, retry and remove", result.stdout, re.MULTILINE)
    result = CliRunner().invoke(cli, ["failed", "retry", "--help"])
    for option in ("--all", "--resign-unverified", "-i, --driver", "--format", "--idle"):
        assert option in result.stdout


def test_configured_dead_letter_queue_and_driver(workdir: Path) -> None:
    (workdir / "kq.toml").write_text(
        "[drivers.local]\n"
        'type = "sqlite"\n'
        "[queues.jobs]\n"
        'driver = "local"\n'
        'consumer = "noop"\n'
        'dead_letter_queue = "graveyard"\n'
    )
    ids = dead_letter(count=2)
    items = kq_json("failed", "show", "jobs")
    assert [item["message_id"] for item in items] == ids
    assert kq("failed", "show", "jobs").stdout.endswith("2 messages in graveyard\n")
    # An unconfigured queue needs a driver.
    result = kq("failed", "show", "adhoc")
    assert result.exit_code == EXIT_FAILURE
    assert "is not configured" in result.stderr
    assert kq_json("failed", "show", "adhoc", "-i", "local") == []
    result = kq("failed", "retry", "jobs", "--all", "-i", "local")
    assert result.stdout == "2 messages queued again on jobs\n"
    assert consume(count=2) == ids


# --- many dead letters, partial publishes (issue 11) ------------------------------------------------------


def test_retry_all_of_more_than_a_chunk() -> None:
    """sqlite has leases: re-drive acts on them in chunks of LEASE_CHUNK; every one goes back once."""
    ids = dead_letter(count=250)
    result = kq("failed", "retry", "jobs", "--all")
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout == "250 messages queued again on jobs\n"
    assert shown_ids() == []
    assert sorted(consume(count=250, wait=0.5)) == sorted(ids)
    assert consume(wait=0.2) == []


def test_retry_whose_publish_stops_part_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """The messages a partial publish sent are removed from the dead-letter queue, the others stay and
    are reported; running the command again sends only those (nothing twice)."""
    from kq.core import PublishError
    from kq.drivers.sqlite._producer import SqliteProducer

    ids = dead_letter(count=4)
    real = SqliteProducer._send_batch

    def two_then_fail(self: SqliteProducer, messages: Any) -> None:
        if self.queue.name != "jobs":
            real(self, messages)
            return
        real(self, messages[:2])
        raise PublishError(
            "the broker went away",
            published=[m.message_id for m in messages[:2]],
            failed=[m.message_id for m in messages[2:]],
        )

    with monkeypatch.context() as patch:
        patch.setattr(SqliteProducer, "_send_batch", two_then_fail)
        result = kq("failed", "retry", "jobs", "--all")
    assert result.exit_code == EXIT_FAILURE
    assert result.stdout == "2 messages queued again on jobs\n"
    for message_id in ids[2:]:
        assert (
            f"kq: {message_id} left in jobs.failed: could not be queued again on jobs: PublishError: the "
            "broker went away" in result.stderr
        )
    assert shown_ids() == ids[2:]
    assert kq("failed", "retry", "jobs", "--all").stdout == "2 messages queued again on jobs\n"
    assert consume(count=4) == ids
