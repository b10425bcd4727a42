"""The ``kq`` script and ``python -m kq.cli`` start with the garbage collector paused
(:mod:`kq.cli._startup`): it runs again, with what the start created frozen, once a command's function
starts, or, for ``kq consume``, once the worker's loop is built."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kq.core.testing import Workspace

RUN_PROBE = """
import gc, sys
import click
import _kq_launcher
from kq.cli._global_options import add_to
from kq.cli._main import cli

@cli.command("gcprobe")
def gcprobe():
    print("in the command:", "enabled" if gc.isenabled() else "disabled", gc.get_freeze_count() > 1000)

add_to(gcprobe)  # as kq does for each of its commands and each plugin's

sys.argv = ["kq", *sys.argv[1:]]
try:
    _kq_launcher.run()
except SystemExit:
    pass
print("after:", "enabled" if gc.isenabled() else "disabled", gc.get_freeze_count() > 1000)
"""


def _probe(tmp_path: Path, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", RUN_PROBE, *args], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


def test_a_command_runs_with_the_collector_on_and_the_start_frozen(tmp_path: Path) -> None:
    assert _probe(tmp_path, "gcprobe") == ["in the command: enabled True", "after: enabled True"]


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("nosuchcommand",), ("gcprobe", "--nosuch")])
def test_the_collector_runs_again_when_no_command_ran(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Help, the version or a usage error: no command function ran, the launcher restarts it."""
    assert _probe(tmp_path, *args)[-1] == "after: enabled True"


HANDLER = """
import gc, json
from pathlib import Path

AT_IMPORT = gc.isenabled()


def record(body, delivery):
    Path("gc.json").write_text(json.dumps(
        {"at_import": AT_IMPORT, "in_handler": gc.isenabled(), "frozen": gc.get_freeze_count()}
    ))
"""


def test_a_worker_builds_its_loop_with_the_collector_paused_and_handles_messages_with_it_on(
    workspace: Workspace,
) -> None:
    """The handler's module is imported while the loop is built: the collector is still paused then,
    and on by the time the first message is handled, with the start frozen."""
    (workspace.root / "gc_probe.py").write_text(HANDLER, encoding="utf-8")
    workspace.write_config('[queues.probe]\nconsumer = "gc_probe:record"\n', recorder=False)
    workspace.kq("queuemessage", "probe", "{}")
    workspace.kq("consume", "probe", "-m", "1")
    seen = json.loads((workspace.root / "gc.json").read_text(encoding="utf-8"))
    assert seen["at_import"] is False
    assert seen["in_handler"] is True
    assert seen["frozen"] > 1000
