"""`kq status`: every queue's counts and the watchdog's workers, errors per row, --watch."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kq.cli import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, cli
from kq.core import App
from kq.core.testing import Workspace


def kq(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def kq_json(*args: str) -> Any:
    result = kq(*args, "--format", "json")
    return json.loads(result.stdout)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rows(document: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    return {row["queue"]: row for row in document["queues"]}


def test_an_empty_folder_shows_nothing_and_creates_nothing(workdir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kq.cli", "status"], cwd=workdir, capture_output=True, text=True, check=False
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.splitlines() == [
        "No queue configured, and the drivers list none.",
        "",
        "No workers configured ([workers.<name>] in the configuration file).",
    ]
    assert done.stderr == ""  # a read-only command: no INFO lines
    assert list(workdir.iterdir()) == []  # no .kq/kq.sqlite3, no watchdog folder


def test_zero_config_counts_ready_delayed_in_flight_and_failed(workdir: Path) -> None:
    assert kq("queuemessage", "demo", "1").exit_code == EXIT_OK
    assert kq("queuemessage", "demo", "2").exit_code == EXIT_OK
    assert kq("queuemessage", "demo", "3", "--delay", "600").exit_code == EXIT_OK
    assert kq("queuemessage", "demo.failed", "4").exit_code == EXIT_OK
    with App.from_config() as app:
        delivery = app.driver().consumer("demo").receive(5.0)  # leased, not settled: in flight
        assert delivery is not None
        document = kq_json("status")
    assert document["configuration"] is None
    assert document["queues"] == [
        {
            "queue": "demo",
            "driver": "default",
            "exists": True,
            "ready": 1,
            "in_flight": 1,
            "delayed": 1,
            "dead_letter_queue": "demo.failed",
            "dead_letters": 1,
            "error": None,
        }
    ]  # demo.failed is demo's dead-letter queue: a column, not a row
    assert document["workers"] == []
    text = kq("status").output.splitlines()
    assert text[0].split() == ["QUEUE", "DRIVER", "READY", "IN", "FLIGHT", "DELAYED", "FAILED"]
    assert text[1].split() == ["demo", "default", "1", "1", "1", "1"]


def _two_drivers(workdir: Path, *, local_queues: bool = True) -> None:
    port = _closed_port()
    config = f"""
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "q.sqlite3"

[drivers.down]
type = "rabbitmq"
url = "amqp://guest:guest@127.0.0.1:{port}/%2F"
management_url = "http://127.0.0.1:{port}"

[queues.remote1]
driver = "down"

[queues.remote2]
driver = "down"
"""
    if local_queues:
        config += '\n[queues.jobs]\ndead_letter_queue = "jobs.dead"\n'
    (workdir / "kq.toml").write_text(config)


def test_an_unreachable_driver_shows_its_error_on_its_rows_only(workdir: Path) -> None:
    _two_drivers(workdir)
    assert kq("queuemessage", "jobs", "{}").exit_code == EXIT_OK

    result = kq("status", "--format", "json")

    assert result.exit_code == EXIT_OK, result.output
    rows = _rows(json.loads(result.stdout))
    assert (rows["jobs"]["ready"], rows["jobs"]["dead_letters"], rows["jobs"]["error"]) == (1, 0, None)
    assert rows["jobs"]["dead_letter_queue"] == "jobs.dead"
    for name in ("remote1", "remote2"):
        assert rows[name]["driver"] == "down"
        assert rows[name]["ready"] is None
        assert "cannot connect to RabbitMQ" in rows[name]["error"]
    text = kq("status").output
    assert "remote1  down    error: cannot connect to RabbitMQ at 127.0.0.1:" in text


def test_exit_69_only_when_every_row_failed(workdir: Path) -> None:
    _two_drivers(workdir, local_queues=False)
    result = kq("status")
    assert result.exit_code == EXIT_UNAVAILABLE, result.output
    assert result.output.count("error: cannot connect to RabbitMQ") == 2


def test_a_driver_without_info_says_so_on_its_rows(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kq.drivers.sqlite._queue_manager import SqliteQueueManager

    monkeypatch.setattr(SqliteQueueManager, "actions", property(lambda self: ("list-available",)))
    (workdir / "kq.toml").write_text("[queues.jobs]\n")
    result = kq("status", "--format", "json")
    assert result.exit_code == EXIT_FAILURE, result.output
    assert "has no queue action 'info'" in _rows(json.loads(result.stdout))["jobs"]["error"]


def test_all_adds_the_queues_the_drivers_list(workdir: Path) -> None:
    (workdir / "kq.toml").write_text("[queues.jobs]\n")
    assert kq("queuemessage", "jobs", "{}").exit_code == EXIT_OK
    assert kq("queuemessage", "other", "{}", "-i", "default").exit_code == EXIT_OK
    assert kq("queuemessage", "other.failed", "{}", "-i", "default").exit_code == EXIT_OK

    assert list(_rows(kq_json("status"))) == ["jobs"]
    rows = _rows(kq_json("status", "--all"))
    assert list(rows) == ["jobs", "other"]
    assert (rows["other"]["ready"], rows["other"]["dead_letters"]) == (1, 1)


def test_a_listing_that_fails_is_a_row_of_its_own(workdir: Path) -> None:
    _two_drivers(workdir)
    rows = kq_json("status", "--all")["queues"]
    assert [row["queue"] for row in rows] == ["remote1", "remote2", "jobs", None]
    assert rows[-1]["driver"] == "down"
    assert "management API" in rows[-1]["error"]


def _watch(workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kq.cli", "status", "--watch", "0.2", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(fd: int, marker: bytes, count: int) -> bytes:
    """What ``fd`` gives until ``marker`` came ``count`` times, it ended, or 20 s passed (a loaded
    machine may take seconds per refresh)."""
    output = b""
    deadline = time.monotonic() + 20
    while output.count(marker) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # a pty whose other side closed
                break
            if not chunk:  # a pipe whose writer ended
                break
            output += chunk
    return output


def _interrupt_after(process: subprocess.Popen[str], marker: str, count: int) -> tuple[str, str]:
    """Ctrl-C ``process`` once its stdout showed ``marker`` ``count`` times; its whole stdout and stderr."""
    assert process.stdout is not None
    head = _read_until(process.stdout.fileno(), marker.encode(), count)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    return head.decode() + out, err


def test_watch_prints_one_block_per_refresh_until_ctrl_c(workdir: Path) -> None:
    (workdir / "kq.toml").write_text("[queues.jobs]\n")
    process = _watch(workdir)
    out, err = _interrupt_after(process, "kq status at ", 4)
    assert process.returncode == EXIT_OK, err
    assert "\x1b[" not in out  # not a terminal: no screen clearing
    blocks = out.split("kq status at ")
    assert blocks[0] == ""
    assert len(blocks) >= 4, out
    for block in blocks[1:-1]:  # the last one may have been cut short by Ctrl-C
        lines = block.splitlines()
        assert lines[0].endswith(", every 0.2s (Ctrl-C to stop)")
        assert lines[2].split() == ["jobs", "default", "0", "0", "0", "0"]
        assert lines[-1] == ""  # a blank line between blocks


def test_watch_in_json_prints_one_document_per_line(workdir: Path) -> None:
    (workdir / "kq.toml").write_text("[queues.jobs]\n")
    process = _watch(workdir, "--format", "json")
    out, err = _interrupt_after(process, "\n", 3)
    assert process.returncode == EXIT_OK, err
    documents = [json.loads(line) for line in out.splitlines()]
    assert len(documents) >= 3
    assert {row["queue"] for document in documents for row in document["queues"]} == {"jobs"}


def test_watch_on_a_terminal_redraws_the_screen(workdir: Path) -> None:
    (workdir / "kq.toml").write_text("[queues.jobs]\n")
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "kq.cli", "status", "--watch", "0.2"],
        cwd=workdir,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm"},
    )
    os.close(terminal)
    output = _read_until(controller, b"kq status at ", 3)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == EXIT_OK
    os.close(controller)
    assert output.count(b"kq status at ") >= 3, output
    assert output.count(b"\x1b[2J") >= 3  # cleared before each refresh


@pytest.mark.slow
def test_the_workers_the_watchdog_knows(workspace: Workspace) -> None:
    workspace.write_config(
        """
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "q.sqlite3"

[queues.jobs]

[workers.jobs]
queue = "jobs"
options = { poll_interval = 0.2 }

[allow]
commands = ["record"]
"""
    )
    before = workspace.kq_json("status")
    assert [(w["label"], w["state"]) for w in before["workers"]] == [("jobs-1", "stopped")]
    try:
        workspace.kq("watchdog", "start")
        document = workspace.kq_json("status")
        (worker,) = document["workers"]
        assert (worker["label"], worker["state"], worker["queue"]) == ("jobs-1", "running", "jobs")
        assert isinstance(worker["pid"], int)
        text = workspace.kq("status").stdout
        assert text.splitlines()[-2].split() == ["WORKER", "STATE", "PID", "UPTIME", "QUEUE"]
        assert text.splitlines()[-1].split()[:3] == ["jobs-1", "running", str(worker["pid"])]
    finally:
        workspace.kq("watchdog", "stop", "--grace", "5")


def test_configured_queues_and_workers_without_a_database_create_nothing(workdir: Path) -> None:
    (workdir / "kq.toml").write_text('[queues.jobs]\n\n[workers.jobs]\nqueue = "jobs"\n')
    for args in (["status"], ["status", "--all"], ["status", "--format", "json"]):
        assert kq(*args).exit_code == EXIT_OK
    assert list(workdir.iterdir()) == [workdir / "kq.toml"]
    document = kq_json("status")
    assert [(row["queue"], row["exists"], row["ready"]) for row in document["queues"]] == [("jobs", False, 0)]
    assert [(w["label"], w["state"]) for w in document["workers"]] == [("jobs-1", "stopped")]
