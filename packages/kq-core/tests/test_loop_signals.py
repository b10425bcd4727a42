"""Signals: ``ConsumeLoop.run()`` on the main thread stops gracefully on SIGTERM/SIGINT, like ``kq consume``.

The subprocess tests run ``App.consume_loop(...).run()`` in a real Python process (no CLI) on a sqlite
queue, and signal it while a message is being handled.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kq.core import App, ConsumeLoop, Delivery, Handler, Limits, Message, parse_config
from kq.core._signals import Abandoned, StopSignals
from kq.core.driver import DriverSpec, QueueSpec
from kq.drivers.memory import MemoryDriver

WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    from kq.core import App, Handler, Limits, parse_config

    root, seconds, grace = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])


    class Sleepy(Handler):
        accepted_content_types = None

        def consume(self, body, delivery):
            (root / "started").write_text("")
            time.sleep(seconds)
            (root / "done").write_text("")
            return body


    config = parse_config(json.loads((root / "config.json").read_text()), source="kq.toml", root=str(root))
    with App(config) as app:
        loop = app.consume_loop(
            "jobs", handler=Sleepy(), limits=Limits(messages=5), poll_interval=0.1, grace=grace
        )
        reason = loop.run()
        print(json.dumps({"reason": reason, "abandoned": loop.abandoned, "consumed": loop.stats.consumed}))
    """
)


def _config(root: Path) -> dict[str, Any]:
    options = {"path": str(root / "q.db"), "poll_interval": 0.05, "visibility_timeout": 30.0}
    return {"drivers": {"default": {"type": "sqlite", **options}}, "queues": {"jobs": {"consumer": "noop"}}}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(_config(tmp_path)))
    (tmp_path / "worker.py").write_text(WORKER)
    with App(parse_config(_config(tmp_path), source="kq.toml", root=str(tmp_path))) as app:
        app.producer("jobs").publish('"work"')
    return tmp_path


def _start(root: Path, seconds: float, grace: float = 0.0) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [sys.executable, str(root / "worker.py"), str(root), str(seconds), str(grace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (root / "started").exists():
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the message was never handled"
        time.sleep(0.02)
    return worker


def _finish(worker: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    result: dict[str, Any] = json.loads(stdout.splitlines()[-1])
    return result


def _waiting(root: Path) -> tuple[int, int]:
    with App(parse_config(_config(root), source="kq.toml", root=str(root))) as app:
        info = app.driver().queue_manager().info("jobs")
    return info["messages"], info["in_flight"]


def test_sigterm_lets_the_message_in_progress_complete(workspace: Path) -> None:
    worker = _start(workspace, seconds=1.0)
    worker.send_signal(signal.SIGTERM)
    result = _finish(worker)
    assert result == {"reason": "received SIGTERM", "abandoned": False, "consumed": 1}
    assert (workspace / "done").exists()
    assert _waiting(workspace) == (0, 0)  # acknowledged


def test_the_grace_period_running_out_abandons_the_message(workspace: Path) -> None:
    worker = _start(workspace, seconds=30.0, grace=0.5)
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    result = _finish(worker)
    assert time.monotonic() - started < 15
    assert result == {
        "reason": "received SIGTERM and the grace period of 0.5s ran out",
        "abandoned": True,
        "consumed": 0,
    }
    assert not (workspace / "done").exists()
    assert _waiting(workspace) == (1, 0), "the abandoned message must be back at once"


def test_a_second_signal_abandons_the_message(workspace: Path) -> None:
    worker = _start(workspace, seconds=30.0)
    worker.send_signal(signal.SIGINT)
    time.sleep(0.3)
    worker.send_signal(signal.SIGTERM)
    result = _finish(worker)
    assert result == {"reason": "received SIGTERM while stopping", "abandoned": True, "consumed": 0}
    assert _waiting(workspace) == (1, 0)


# --- in this process ---------------------------------------------------------------------------------------


class _SeesHandlers(Handler):
    """Records the SIGTERM handler in place while it handles a message."""

    accepted_content_types = None

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.seen.append(signal.getsignal(signal.SIGTERM))
        return body


@pytest.fixture
def driver() -> Iterator[MemoryDriver]:
    MemoryDriver.reset()
    driver = MemoryDriver(DriverSpec(name="mem", type="memory"), [QueueSpec(name="jobs", driver="mem")])
    driver.producer("jobs").send(Message(b'"x"'))
    yield driver
    MemoryDriver.reset()


def _loop(driver: MemoryDriver, handler: Handler, **options: Any) -> ConsumeLoop:
    return ConsumeLoop(
        driver, "jobs", handler, limits=Limits(messages=1, time=10), poll_interval=0.05, **options
    )


def test_run_installs_the_handlers_and_puts_the_previous_ones_back(driver: MemoryDriver) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    handler = _SeesHandlers()
    _loop(driver, handler, grace=5).run()
    assert handler.seen[0] != before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before


def test_without_signal_handling_nothing_is_installed(driver: MemoryDriver) -> None:
    handler = _SeesHandlers()
    _loop(driver, handler, handle_signals=False).run()
    assert handler.seen == [signal.getsignal(signal.SIGTERM)]


def test_off_the_main_thread_nothing_is_installed(driver: MemoryDriver) -> None:
    handler = _SeesHandlers()
    worker = threading.Thread(target=_loop(driver, handler).run)
    worker.start()
    worker.join(10)
    assert handler.seen == [signal.getsignal(signal.SIGTERM)]


def test_a_stop_signal_asks_to_stop_and_a_second_one_abandons() -> None:
    reasons: list[str] = []
    with StopSignals(reasons.append) as signals:
        assert signals.installed
        signal.raise_signal(signal.SIGINT)
        deadline = time.monotonic() + 5
        while not reasons and time.monotonic() < deadline:
            time.sleep(0.01)  # stop() runs on a thread of its own
        assert reasons == ["received SIGINT"]
        signal.raise_signal(signal.SIGTERM)
        pytest.fail("the second signal did not abandon the block")
    assert signals.abandoned == "received SIGTERM while stopping"
    assert not signals.installed
    assert issubclass(Abandoned, BaseException)
    assert not issubclass(Abandoned, Exception)  # a handler catching Exception does not swallow it
