"""The sign-up example: its producer and handler in one process on the memory driver, then as a user runs
it (``python publish.py`` and ``kq consume`` on the sqlite driver, in a copy of the example's folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kq.core import App, Limits, parse_config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from signups.handler import WelcomeMail
from signups.producer import SignupProducer

EXAMPLE = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The example's kq.toml on a memory driver of its own, in an empty folder."""
    monkeypatch.chdir(tmp_path)
    config = parse_config(
        {
            "default_driver": "mem",
            "drivers": {"mem": {"type": "memory", "namespace": uuid.uuid4().hex}},
            "queues": {
                "signups": {
                    "consumer": "signups.handler:WelcomeMail",
                    "routing_keys": ["user.signup.*"],
                    "retry": {"max_attempts": 3, "delay": 0.5},
                }
            },
        },
        root=str(tmp_path),
    )
    with App(config) as instance:
        yield instance


def test_published_signups_are_welcomed_by_the_configured_handler(app: App, tmp_path: Path) -> None:
    signups = app.producer_of(SignupProducer, "signups")
    sent = signups.publish("alice@example.com", "pro")
    assert sent.routing_key == "user.signup.pro"
    signups.publish_batch([{"email": "bob@example.com"}, {"email": "carol@example.com", "plan": "team"}])
    assert isinstance(app.handler("signups"), WelcomeMail)
    loop = app.consume_loop("signups", limits=Limits(messages=3, time=10), handle_signals=False)
    loop.run()
    assert loop.stats.consumed == 3
    assert (tmp_path / "outbox.txt").read_text().splitlines() == [
        "Welcome alice@example.com, enjoy the pro plan!",
        "Welcome bob@example.com, enjoy the free plan!",
        "Welcome carol@example.com, enjoy the team plan!",
    ]


def test_the_producer_refuses_what_is_not_an_email_and_sends_nothing(app: App) -> None:
    with pytest.raises(ValueError, match="not an email address"):
        app.producer_of(SignupProducer, "signups").publish("alice")
    assert app.driver().queue_manager().info("signups")["messages"] == 0


def test_a_body_the_handler_cannot_read_is_dead_lettered_without_retries(app: App, tmp_path: Path) -> None:
    app.producer("signups").publish('{"name": "alice"}', routing_key="user.signup.free")
    loop = app.consume_loop("signups", limits=Limits(messages=1, time=10), handle_signals=False)
    loop.run()
    assert (loop.stats.consumed, loop.stats.failed) == (0, 1)
    assert app.driver().queue_manager().info("signups.failed")["messages"] == 1
    assert not (tmp_path / "outbox.txt").exists()


def test_the_example_runs_as_the_cookbook_shows(tmp_path: Path) -> None:
    folder = tmp_path / "signups"
    shutil.copytree(
        EXAMPLE, folder, ignore=shutil.ignore_patterns("tests", "__pycache__", ".kq", "outbox.txt")
    )
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KQ_")}
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    published = subprocess.run(
        [sys.executable, "publish.py"],
        check=False,
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert published.returncode == 0, published.stderr
    assert [line.split(" as message ")[0] for line in published.stdout.splitlines()] == [
        "queued user.signup.pro",
        "queued user.signup.free",
    ]
    worker = subprocess.run(
        [str(Path(bin_dir) / "kq"), "consume", "signups", "-m", "2", "-t", "30"],
        check=False,
        cwd=folder,
        env={**env, "PYTHONPATH": "."},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout == "Stopped because: message limit of 2 reached\n"
    assert (folder / "outbox.txt").read_text().splitlines() == [
        "Welcome alice@example.com, enjoy the pro plan!",
        "Welcome bob@example.com, enjoy the free plan!",
    ]
