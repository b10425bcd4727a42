"""The watchdog's parts: command lines, finding workers among other processes, killing, locks, backoff.

The end-to-end behaviour (real `kq consume` workers) is tested in kq-cli's test_watchdog.py; here the
"workers" are sleeping Python processes whose command line looks like a worker's.
"""

from __future__ import annotations

import ast
import graphlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from kq.core import ProcessStarted, parse_config
from kq.core.watchdog import RestartPolicy, Watchdog, WatchdogError
from kq.core.watchdog import _control as watchdog_control
from kq.core.watchdog import _procs as watchdog_procs
from kq.core.watchdog._procs import (
    describe_status,
    find_workers,
    parse_command_line,
    terminate,
    worker_command,
)
from kq.core.watchdog._state import WatchdogLock, exclusive, read_status, write_status
from kq.core.watchdog._supervisor import BACKOFF, FATAL, RUNNING, STARTING, Supervisor

SLEEPER = "import time; time.sleep(60)"
#: Ignores SIGTERM, and starts a grandchild in a session of its own that sleeps too.
STUBBORN = (
    "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', 'grandchild'], "
    "start_new_session=True); time.sleep(60)"
)


class Processes:
    """Fake workers: Python processes with a worker-like command line, all killed at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, *argv: str, code: str = SLEEPER, cwd: Path | None = None, **kwargs: Any
    ) -> psutil.Process:
        process = subprocess.Popen([sys.executable, "-c", code, *argv], cwd=cwd, **kwargs)
        self.started.append(process)
        return psutil.Process(process.pid)

    def cleanup(self) -> None:
        for process in self.started:
            if process.poll() is None:
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
                process.kill()
            process.wait()


@pytest.fixture
def processes() -> Iterator[Processes]:
    fakes = Processes()
    try:
        yield fakes
    finally:
        fakes.cleanup()


def _config(tmp_path: Path, workers: str) -> Any:
    path = tmp_path / "kq.toml"
    path.write_text(workers)
    from kq.core import load_config

    return load_config(path)


def test_worker_command_runs_this_interpreter_with_the_consume_options(tmp_path: Path) -> None:
    config = _config(
        tmp_path, '[workers.mail]\nqueue = "emails"\noptions = { messages = 100, memory_limit = 256 }\n'
    )
    spec = config.workers["mail"]

    command = worker_command("/srv/app/kq.toml", spec, "mail-1")

    assert command == [
        sys.executable,
        "-m",
        "kq.cli",
        "--config",
        "/srv/app/kq.toml",
        "consume",
        "emails",
        "--label",
        "mail-1",
        "--messages",
        "100",
        "--memory-limit",
        "256",
    ]
    parsed = parse_command_line(command)
    assert parsed is not None
    assert (parsed.config, parsed.label, parsed.queue) == ("/srv/app/kq.toml", "mail-1", "emails")


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["kq", "--config=/a.toml", "consume", "q", "--label=w-1"], ("/a.toml", "w-1", "q")),
        (["kq", "--config", "a.toml", "consume", "--label", "w-1", "q"], ("a.toml", "w-1", "")),
        (["kq", "--config", "/a.toml", "managequeue", "--label", "w-1"], None),
        (["kq", "consume", "q", "--label", "w-1"], None),  # no --config: not started by a watchdog
        (["kq", "--config", "/a.toml", "consume", "q"], None),  # no label
        (["kq", "--config", "/a.toml", "consume", "q", "--label"], None),
        (["grep", "--label", "w-1", "consume", "--config", "/a.toml"], None),  # --config after consume
    ],
)
def test_parse_command_line(cmdline: list[str], expected: tuple[str, str, str] | None) -> None:
    parsed = parse_command_line(cmdline)
    assert (None if parsed is None else (parsed.config, parsed.label, parsed.queue)) == expected


def test_find_workers_by_exact_label_and_configuration_file(tmp_path: Path, processes: Processes) -> None:
    mine, theirs = tmp_path / "a" / "kq.toml", tmp_path / "b" / "kq.toml"
    for path in (mine, theirs):
        path.parent.mkdir()
        path.write_text("")
    worker = processes.start("--config", str(mine), "consume", "jobs", "--label", "jobs-1")
    relative = processes.start("--config=kq.toml", "consume", "jobs", "--label=jobs-2", cwd=mine.parent)
    processes.start("--config", str(theirs), "consume", "jobs", "--label", "jobs-1")  # another project
    processes.start("--config", str(mine), "managequeue", "info", "--label", "jobs-3")  # not a worker
    zombie = processes.start("--config", str(mine), "consume", "jobs", "--label", "jobs-4")
    zombie.kill()  # our child, never waited for: a zombie until the fixture reaps it
    _wait_for(lambda: zombie.status() == psutil.STATUS_ZOMBIE)

    found = find_workers(str(mine))

    assert {label: [p.pid for p in ps] for label, ps in found.items()} == {
        "jobs-1": [worker.pid],
        "jobs-2": [relative.pid],
    }


def test_terminate_escalates_to_sigkill_and_kills_the_leftovers(processes: Processes) -> None:
    polite = processes.start("polite", start_new_session=True)
    stubborn = processes.start("stubborn", code=STUBBORN, start_new_session=True)
    # A stubborn process in *our* process group: it must be killed without killing the group (pytest).
    in_our_group = processes.start("ours", code=STUBBORN)
    _wait_for(lambda: len(stubborn.children()) == 1 and len(in_our_group.children()) == 1)
    grandchildren = stubborn.children() + in_our_group.children()

    started = time.monotonic()
    gone, killed = terminate(
        [polite, stubborn, in_our_group], grace=0.5, reap=lambda: [p.poll() for p in processes.started]
    )

    assert time.monotonic() - started < 5
    assert [p.pid for p in gone] == [polite.pid]
    assert sorted(p.pid for p in killed) == sorted([stubborn.pid, in_our_group.pid])
    _wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in grandchildren))


def test_describe_status() -> None:
    assert describe_status(0) == "status 0"
    assert describe_status(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_status(None).startswith("unknown status")


def test_instances_labels_and_log_paths(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        '[workers.mail]\ncount = 2\nlog = "logs/{name}.log"\n[workers.jobs]\nlog = "/var/log/{label}.out"\n',
    )
    watchdog = Watchdog(config)

    assert watchdog.config_file == str(tmp_path / "kq.toml")
    assert [(i.label, str(i.log)) for i in watchdog.instances()] == [
        ("mail-1", str(tmp_path / "logs" / "mail.log")),
        ("mail-2", str(tmp_path / "logs" / "mail.log")),
        ("jobs-1", "/var/log/jobs-1.out"),
    ]
    default = Watchdog(_config(tmp_path, "[workers.mail]\n")).instances()[0]
    assert default.log == tmp_path / ".kq" / "logs" / "mail-1.log"


def test_pyproject_configuration_is_passed_as_the_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.kq.workers.mail]\nqueue = "mail"\n')
    from kq.core import load_config

    watchdog = Watchdog(load_config(tmp_path / "pyproject.toml"))

    assert watchdog.instances()[0].command[3:5] == ("--config", str(tmp_path / "pyproject.toml"))


def test_zero_configuration_has_nothing_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    watchdog = Watchdog(parse_config({}))
    assert (watchdog.start(), watchdog.stop(), watchdog.check()) == ([], [], [])


def test_lock_is_exclusive_and_says_who_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "kq.toml"
    path.write_text("")
    first, second = WatchdogLock(tmp_path / "w.lock"), WatchdogLock(tmp_path / "w.lock")
    assert first.acquire("run")
    assert not second.acquire("start", wait=0.1)
    assert second.holder() == (os.getpid(), "run")
    first.release()
    assert second.acquire("start")
    second.release()

    with exclusive(str(path), "run", wait=0):
        with exclusive(str(path), "start", wait=0) as supervisor:
            assert supervisor == os.getpid()  # start yields to a supervisor instead of waiting
        with pytest.raises(WatchdogError, match="already supervises"), exclusive(str(path), "run", wait=0):
            pass


def test_status_file_is_believed_only_while_its_writer_lives(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_status(path, {"w-1": {"state": "fatal"}})
    assert read_status(path) == {"w-1": {"state": "fatal"}}

    path.write_text(path.read_text().replace('"pid_started": ', '"pid_started": 1'))
    assert read_status(path) == {}


class _FakePopen:
    """Stands for a started worker: this test's process (alive), with an exit status set by hand."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.status: int | None = None

    def poll(self) -> int | None:
        return self.status


def test_supervisor_backs_off_exponentially_and_gives_up(tmp_path: Path) -> None:
    config = _config(tmp_path, "[workers.w]\n")
    watchdog = Watchdog(config, start_seconds=3, max_retries=4, backoff=1, max_backoff=3)
    started: list[_FakePopen] = []
    events: list[ProcessStarted] = []
    watchdog.dispatcher.add_listener("process_started", events.append)

    def spawn(instance: object) -> _FakePopen:
        started.append(_FakePopen())
        return started[-1]

    watchdog.control.spawn = spawn  # type: ignore[assignment,method-assign]
    supervisor = Supervisor(
        watchdog.policy, watchdog.control, str(tmp_path / "kq.toml"), watchdog.instances(), grace=1
    )
    slot = supervisor.slots[0]

    supervisor._tick(0.0)
    assert (slot.state, len(started)) == (STARTING, 1)

    # A worker that lived past start_seconds and exits (a -m limit, say) is restarted at once.
    supervisor._tick(3.5)
    assert slot.state == RUNNING
    started[-1].status = 0
    supervisor._tick(10.0)
    assert (slot.state, slot.quick_exits, len(started)) == (STARTING, 0, 2)

    # Quick exits: restarts after 1 s, 2 s, then 3 s (the cap), FATAL at the 4th.
    now, delays = 10.0, []
    for _ in range(3):
        started[-1].status = 1
        supervisor._tick(now + 0.5)
        assert slot.state == BACKOFF
        delays.append(slot.next_start - (now + 0.5))
        supervisor._tick(slot.next_start - 0.01)
        assert slot.state == BACKOFF, "restarted before its delay"
        now = slot.next_start
        supervisor._tick(now)
        assert slot.state == STARTING
    assert delays == [1.0, 2.0, 3.0]
    started[-1].status = 1
    supervisor._tick(now + 0.5)
    assert slot.state == FATAL
    supervisor._tick(now + 1000)
    assert slot.state == FATAL, "a FATAL worker is not restarted"
    assert supervisor.states()["w-1"]["state"] == FATAL

    # SIGHUP (the flag its handler sets) gives it a new chance.
    supervisor._retry_fatal = True
    supervisor._tick(now + 1001)
    assert (slot.state, slot.quick_exits) == (STARTING, 0)
    assert len(events) == len(started) == 6
    assert all(event.worker == "w" for event in events)


def _wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _without_cli(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Make ``kq.cli`` look uninstalled, and record any attempt to spawn a worker."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "kq.cli" else real_find_spec(name, package)

    spawned: list[object] = []
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(watchdog_procs, "spawn", lambda *args: spawned.append(args))
    monkeypatch.setattr(watchdog_control, "spawn", lambda *args: spawned.append(args))
    return spawned


@pytest.mark.parametrize("command", ["start", "run"])
def test_missing_kq_cli_is_one_clear_error_before_anything_is_spawned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    spawned = _without_cli(monkeypatch)
    watchdog = Watchdog(_config(tmp_path, '[workers.mail]\nqueue = "mail"\n'), lock_wait=0)

    with pytest.raises(WatchdogError, match=r"install the kq-cli distribution \(pip install kq-cli\)"):
        getattr(watchdog, command)()

    assert spawned == []


def test_the_supervisor_retries_a_worker_whose_start_finds_kq_cli_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kq-cli removed while `run` supervises: a failed start (backoff), not a supervisor that dies."""
    watchdog = Watchdog(_config(tmp_path, "[workers.w]\n"), max_retries=2)
    supervisor = Supervisor(
        watchdog.policy, watchdog.control, str(tmp_path / "kq.toml"), watchdog.instances(), 1
    )
    spawned = _without_cli(monkeypatch)

    supervisor._tick(0.0)

    assert (supervisor.slots[0].state, supervisor.slots[0].quick_exits, spawned) == (BACKOFF, 1, [])


def test_restart_policy_doubles_the_delay_up_to_its_cap_and_tries_at_least_once() -> None:
    policy = RestartPolicy(backoff=0.5, max_backoff=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert RestartPolicy(max_retries=0).max_retries == 1
    assert Watchdog(parse_config({}), max_retries=-3).policy.max_retries == 1


def test_the_watchdog_modules_import_each_other_without_a_cycle() -> None:
    """No cycle inside kq.core.watchdog, not even one hidden under ``if TYPE_CHECKING:``."""
    package = Path(watchdog_procs.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        module = f"kq.core.watchdog.{path.stem}".removesuffix(".__init__")
        graph[module] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                graph[module].add(node.module)
            elif isinstance(node, ast.Import):
                graph[module].update(alias.name for alias in node.names)
    internal = {module: {m for m in imports if m in graph} for module, imports in graph.items()}
    # The package's __init__ re-exports its modules; a module importing it back would be a cycle.
    assert all("kq.core.watchdog" not in imports for imports in internal.values())
    del internal["kq.core.watchdog"]

    order = list(graphlib.TopologicalSorter(internal).static_order())  # raises CycleError on a cycle

    assert set(order) == set(internal)
    assert "kq.core.watchdog._watchdog" not in internal["kq.core.watchdog._supervisor"]


def test_importing_kq_core_loads_neither_the_watchdog_nor_psutil() -> None:
    code = (
        "import sys, kq.core; "
        "print(sorted(m for m in sys.modules if m.startswith(('kq.core.watchdog', 'psutil'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert loaded.strip() == "[]"
