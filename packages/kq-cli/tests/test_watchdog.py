"""`kq watchdog` with real processes: workers started detached, found by label, restarted, stopped.

Every test works in its own workspace (a tmp folder with a kq.toml on a sqlite queue). The workers
outlive the `kq watchdog start` that started them, so the fixture kills whatever still names the
workspace's configuration file when the test ends, passed or failed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from kq.core import App
from kq.core.testing import Workspace

pytestmark = pytest.mark.slow

CONFIG = """
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "queues.sqlite3"
poll_interval = 0.05

[queues.jobs]
[queues.mail]

[allow]
commands = ["record"]
"""

WORKERS = """
[workers.jobs]
queue = "jobs"
count = 2
options = { poll_interval = 0.2 }

[workers.mail]
queue = "mail"
options = { poll_interval = 0.2 }
"""

#: A worker that cannot even start: its queue is not configured, so `kq consume` exits 1 at once.
BROKEN = """
[workers.broken]
queue = "missing"
"""

#: A listener recording the watchdog's events in events.log next to it.
LISTENER = """
from pathlib import Path

def record(event):
    with (Path(__file__).parent / "events.log").open("a") as log:
        log.write(f"{event.name} {event.pid} {event.worker} {' '.join(event.command)}\\n")
"""


def _workers(space: Workspace) -> dict[str, list[psutil.Process]]:
    """The live `kq consume` processes naming this workspace's kq.toml, by label (independent of kq's
    own finder, so that the tests do not check the watchdog with itself)."""
    found: dict[str, list[psutil.Process]] = {}
    for process in psutil.process_iter():
        try:
            cmdline = process.cmdline()
            if str(space.config) not in cmdline or "consume" not in cmdline:
                continue
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        found.setdefault(cmdline[cmdline.index("--label") + 1], []).append(process)
    return found


def _pids(space: Workspace) -> dict[str, int]:
    found = _workers(space)
    assert all(len(processes) == 1 for processes in found.values()), f"duplicates: {found}"
    return {label: processes[0].pid for label, processes in found.items()}


def _leftovers(space: Workspace) -> list[psutil.Process]:
    """Every process still running from this workspace: workers, watchdogs, recorder commands."""
    marks = (str(space.config), str(space.root / "record.py"))
    leftovers = []
    for process in psutil.process_iter():
        try:
            cmdline = process.cmdline()
            mine = process.pid != os.getpid() and any(mark in cmdline for mark in marks)
            if mine and process.status() != psutil.STATUS_ZOMBIE:
                leftovers.append(process)
        except psutil.Error:
            continue
    return leftovers


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen within {timeout}s")


def _check(space: Workspace) -> dict[str, dict[str, Any]]:
    # check exits 1 while a worker is down: the rows are what the tests look at.
    done = space.kq("watchdog", "check", "--format", "json", check=False)
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return {row["label"]: row for row in rows}


@pytest.fixture
def space(workspace: Workspace) -> Iterator[Workspace]:
    """A workspace with queues jobs and mail and workers jobs (2 processes) and mail (1)."""
    workspace.write_config(CONFIG + WORKERS)
    yield workspace
    workspace.cleanup()  # supervisors first: they would restart the workers killed next
    for process in _leftovers(workspace):
        for child in process.children(recursive=True):
            child.kill()
        process.kill()


def test_start_spawns_every_instance_detached_and_check_reports_them(space: Workspace) -> None:
    done = space.kq("watchdog", "start")
    assert "started worker jobs-1" in done.stderr

    pids = _pids(space)
    assert set(pids) == {"jobs-1", "jobs-2", "mail-1"}
    for label, pid in pids.items():
        worker = psutil.Process(pid)
        assert os.getsid(pid) == pid, f"{label} should lead its own session"
        assert os.path.samefile(worker.cwd(), space.root)
        if Path(f"/proc/{pid}/fd/0").exists():
            assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull
        log = space.root / ".kq" / "logs" / f"{label}.log"
        assert "kq watchdog starts" in log.read_text()

    rows = _check(space)
    assert set(rows) == {"jobs-1", "jobs-2", "mail-1"}
    row = rows["jobs-2"]
    assert set(row) == {"worker", "label", "queue", "state", "pid", "uptime", "rss", "log"}
    assert (row["worker"], row["queue"], row["state"]) == ("jobs", "jobs", "running")
    assert row["pid"] == pids["jobs-2"]
    assert row["uptime"] >= 0
    assert 1 < row["rss"] < 1000
    assert row["log"] == str(space.root / ".kq" / "logs" / "jobs-2.log")

    text = space.kq("watchdog", "check").stdout
    assert text.splitlines()[0].split()[:3] == ["LABEL", "STATE", "PID"]
    assert ["jobs-1", "running", str(pids["jobs-1"])] in [line.split()[:3] for line in text.splitlines()]

    # Idempotent: a second start (cron, a minute later) finds them all and starts nothing.
    outcomes = space.kq_json("watchdog", "start")
    assert {o["label"]: (o["outcome"], o["pid"]) for o in outcomes} == {
        label: ("running", pid) for label, pid in pids.items()
    }
    assert _pids(space) == pids


def test_start_restarts_only_the_killed_worker(space: Workspace) -> None:
    space.kq("watchdog", "start")
    before = _pids(space)
    psutil.Process(before["jobs-2"]).kill()
    _wait(lambda: "jobs-2" not in _workers(space), 10, "jobs-2 gone")
    assert _check(space)["jobs-2"]["state"] == "stopped"

    outcomes = {o["label"]: o["outcome"] for o in space.kq_json("watchdog", "start")}

    assert outcomes == {"jobs-1": "running", "jobs-2": "started", "mail-1": "running"}
    after = _pids(space)
    assert after["jobs-1"] == before["jobs-1"]
    assert after["mail-1"] == before["mail-1"]
    assert after["jobs-2"] != before["jobs-2"]


def test_start_reports_a_worker_that_exits_at_once(space: Workspace) -> None:
    space.write_config(CONFIG + BROKEN)

    done = space.kq("watchdog", "start", "--wait", "3", check=False)

    assert done.returncode == 1
    log = space.root / ".kq" / "logs" / "broken-1.log"
    assert f"worker broken-1 exited at once with status 1; see {log}" in done.stderr
    assert "queue 'missing' is not configured" in log.read_text()
    assert _workers(space) == {}


def test_stop_terms_then_kills_a_worker_stuck_in_a_command(space: Workspace) -> None:
    """Idle workers exit on SIGTERM; one waiting for a 60 s command is killed, command included."""
    space.kq("watchdog", "start")
    with App.from_config(space.config) as app:
        app.command_producer("jobs").publish("record", ["long"], {"sleep": "60"})
    space.wait_for(lambda: ["start", "long"] in [words[:2] for words in space.lines()], 15, "start long")
    busy = next(words[2] for words in space.lines())  # the label of the worker running the command
    assert any("record.py" in " ".join(p.cmdline()) for p in _leftovers(space))

    started = time.monotonic()
    outcomes = space.kq_json("watchdog", "stop", "--grace", "1")
    elapsed = time.monotonic() - started

    assert {o["label"]: o["killed"] for o in outcomes} == {
        "jobs-1": busy == "jobs-1",
        "jobs-2": busy == "jobs-2",
        "mail-1": False,
    }
    assert elapsed < 10
    assert _leftovers(space) == [], "no worker and no command may survive stop"
    assert {row["state"] for row in _check(space).values()} == {"stopped"}


def test_stop_also_stops_workers_no_longer_configured(space: Workspace) -> None:
    space.kq("watchdog", "start")
    space.write_config(CONFIG + WORKERS.replace("count = 2", "count = 1"))

    rows = _check(space)
    assert rows["jobs-2"]["state"] == "unconfigured"
    outcomes = space.kq_json("watchdog", "stop", "--grace", "5")

    assert sorted(o["label"] for o in outcomes) == ["jobs-1", "jobs-2", "mail-1"]
    assert _workers(space) == {}


def test_process_events_reach_configured_listeners(space: Workspace) -> None:
    (space.root / "kq_events.py").write_text(LISTENER)
    space.write_config(
        CONFIG
        + '[workers.mail]\nqueue = "mail"\n'
        + '[[listeners]]\nevent = ["process_started", "process_stopped"]\nhandler = "kq_events:record"\n'
    )

    space.kq("watchdog", "start")
    pid = _pids(space)["mail-1"]
    space.kq("watchdog", "stop")

    lines = (space.root / "events.log").read_text().splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["process_started", str(pid), "mail"],
        ["process_stopped", str(pid), "mail"],
    ]
    assert f"--config {space.config} consume mail --label mail-1" in lines[0]


def _supervise(space: Workspace, *options: str) -> Any:
    return space.start(
        "run",
        sys.executable,
        "-m",
        "kq.cli",
        "--config",
        str(space.config),
        "watchdog",
        "run",
        "--poll-interval",
        "0.1",
        # Generous: a worker that cannot start must exit within it even on a loaded machine.
        "--start-seconds",
        "2",
        "--grace",
        "5",
        *options,
    )


def test_run_restarts_workers_backs_off_and_gives_up_on_a_crashing_one(space: Workspace) -> None:
    space.write_config(CONFIG + '[workers.jobs]\nqueue = "jobs"\n' + BROKEN)
    supervisor = _supervise(space, "--max-retries", "3")

    first = _wait(lambda: _pids(space).get("jobs-1"), 10, "jobs-1 started")
    rows = _wait(lambda: (r := _check(space))["broken-1"]["state"] == "fatal" and r, 20, "broken-1 FATAL")
    assert rows["jobs-1"]["state"] == "running"

    # A worker killed behind the supervisor's back comes back (it lived past --start-seconds by now).
    psutil.Process(first).kill()
    second = _wait(lambda: (pid := _pids(space).get("jobs-1")) != first and pid, 10, "jobs-1 restarted")
    assert second

    output = space.output("run")
    assert "exited with status 1" in output
    assert "(quick exit 1 of 3); restarting it in 1s" in output
    assert "(quick exit 2 of 3); restarting it in 2s" in output
    assert "worker broken-1 is FATAL" in output
    assert f"worker jobs-1 (pid {first}) exited with signal SIGKILL" in output
    broken_log = (space.root / ".kq" / "logs" / "broken-1.log").read_text()
    assert broken_log.count("kq watchdog starts") == 3
    assert broken_log.count("queue 'missing' is not configured") == 3

    # SIGHUP gives the FATAL worker another chance.
    supervisor.send_signal(signal.SIGHUP)
    _wait(lambda: "trying it again" in space.output("run"), 10, "retry after SIGHUP")

    assert space.stop(supervisor, timeout=20) == 0
    assert "received SIGTERM; stopping the workers" in space.output("run")
    assert _workers(space) == {}
    assert not (space.root / ".kq" / "watchdog" / "kq.toml.json").exists()


def test_stop_and_start_next_to_a_supervisor(space: Workspace) -> None:
    supervisor = _supervise(space)
    pids = _wait(lambda: len(p := _pids(space)) == 3 and p, 15, "three workers")

    done = space.kq("watchdog", "start")
    assert "supervises the workers" in done.stderr
    assert _pids(space) == pids

    space.kq("watchdog", "stop")

    assert supervisor.wait(timeout=20) == 0
    assert _workers(space) == {}


def test_stop_reports_the_workers_a_supervisor_stopped(space: Workspace) -> None:
    """`stop` next to `run`: the supervisor stops the workers, and `stop` still says which and how."""
    supervisor = _supervise(space)
    pids = _wait(lambda: len(p := _pids(space)) == 3 and p, 15, "three workers")

    done = space.kq("watchdog", "stop", "--format", "json")

    outcomes = json.loads(done.stdout)
    by = supervisor.pid
    assert sorted(outcomes, key=lambda o: o["label"]) == [
        {"worker": "jobs", "label": "jobs-1", "pid": pids["jobs-1"], "killed": False, "supervisor": by},
        {"worker": "jobs", "label": "jobs-2", "pid": pids["jobs-2"], "killed": False, "supervisor": by},
        {"worker": "mail", "label": "mail-1", "pid": pids["mail-1"], "killed": False, "supervisor": by},
    ]
    # The text output (the log on stderr) names them too, and who stopped them.
    assert (
        f"worker jobs-2 (pid {pids['jobs-2']}) was stopped by kq watchdog run (pid {supervisor.pid}): "
        "exited after SIGTERM" in done.stderr
    )
    assert supervisor.wait(timeout=20) == 0
    assert _workers(space) == {}


def test_stop_says_what_it_cannot_know_when_a_supervisor_leaves_no_report(space: Workspace) -> None:
    """A supervisor that cannot write its report: `stop` lists the workers it had, `killed` unknown."""
    report = space.root / ".kq" / "watchdog" / "kq.toml.stopped.json"
    report.mkdir(parents=True)  # a folder where the file should go: the supervisor cannot write it
    supervisor = _supervise(space)
    pids = _wait(lambda: len(p := _pids(space)) == 3 and p, 15, "three workers")

    done = space.kq("watchdog", "stop", "--format", "json")

    by = supervisor.pid
    assert {o["label"]: (o["pid"], o["killed"], o["supervisor"]) for o in json.loads(done.stdout)} == {
        label: (pid, None, by) for label, pid in pids.items()
    }
    assert f"kq watchdog run (pid {by}) left no report of the workers it stopped" in done.stderr
    assert (
        f"worker mail-1 (pid {pids['mail-1']}) was stopped by kq watchdog run (pid {by}): how is not known"
        in (done.stderr)
    )
    assert supervisor.wait(timeout=20) == 0
    assert _workers(space) == {}


def test_projects_with_the_same_worker_names_are_kept_apart(space: Workspace, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = Workspace(tmp_path / "other")
    other.write_config(CONFIG + WORKERS)
    try:
        space.kq("watchdog", "start")
        other.kq("watchdog", "start")
        mine, theirs = _pids(space), _pids(other)
        assert set(mine) == set(theirs) == {"jobs-1", "jobs-2", "mail-1"}
        assert not set(mine.values()) & set(theirs.values())

        assert {row["pid"] for row in _check(space).values()} == set(mine.values())
        space.kq("watchdog", "stop")
        assert _pids(other) == theirs
    finally:
        for process in _leftovers(other):
            process.kill()


def test_without_a_configuration_file_there_is_nothing_to_do(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kq.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["watchdog", "start"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["watchdog", "check", "--format", "json"])
    assert (result.exit_code, json.loads(result.output)) == (0, [])
    result = runner.invoke(cli, ["watchdog", "run"])
    assert result.exit_code == 78
    assert "no [workers.<name>] to supervise" in result.output


def test_workerswatchdog_is_the_php_name(space: Workspace) -> None:
    space.kq("workerswatchdog")
    assert set(_pids(space)) == {"jobs-1", "jobs-2", "mail-1"}
    assert "running" in space.kq("workerswatchdog", "check").stdout
    space.kq("workerswatchdog", "stop")
    assert _workers(space) == {}
    done = space.kq("workerswatchdog", "restart", check=False)
    assert done.returncode == 2


def test_without_kq_cli_importable_start_names_the_distribution_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a kq-core-only environment would see: one error before any worker is spawned, exit 1."""
    import importlib.util

    from click.testing import CliRunner

    from kq.cli import cli

    config = tmp_path / "kq.toml"
    config.write_text(CONFIG + WORKERS)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, package=None: None if name == "kq.cli" else real_find_spec(name, package),
    )

    result = CliRunner().invoke(cli, ["--config", str(config), "watchdog", "start"])

    assert result.exit_code == 1, result.output
    assert "install the kq-cli distribution (pip install kq-cli)" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / ".kq" / "logs").exists(), "no worker was spawned"
