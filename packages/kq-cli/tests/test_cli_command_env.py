"""The signing key of a real `kq consume` worker never reaches the commands it runs.

The layout docs/signing.md recommends: ``[signing] keys = { "prod" = "${KQ_SIGNING_KEY}" }`` and the
variable exported for the worker. A command that prints its environment on error used to put the key
into the ``kq-dead-letter-error`` header and into the worker's ``-vv`` log.
"""

from __future__ import annotations

import json
import sys

import pytest

from kq.core import App, new_key
from kq.core.testing import Workspace, drain

pytestmark = pytest.mark.slow

CONFIG = """
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "queues.sqlite3"
poll_interval = 0.05

[queues.jobs]

[console]
prefix = [{python}, "env_dump.py"]
{console}

[allow]
commands = ["dump"]

[signing]
keys = {{ "prod" = "${{KQ_SIGNING_KEY}}" }}
"""
#: Prints its KQ* settings on one line, as a careless program's error report might, and fails (one short
#: line: the dead-letter error quotes the first 300 characters of the last line of stderr).
ENV_DUMP = (
    "import json, os, sys\n"
    "print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('KQ')}), file=sys.stderr)\n"
    "sys.exit(3)\n"
)


@pytest.mark.parametrize("console", ["", "inherit_env = false"], ids=["inherited", "explicit"])
def test_a_command_that_prints_its_environment_cannot_leak_the_key(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, console: str
) -> None:
    key = new_key()
    monkeypatch.setenv("KQ_SIGNING_KEY", key)
    workspace.write_config(CONFIG.format(python=json.dumps(sys.executable), console=console), recorder=False)
    (workspace.root / "env_dump.py").write_text(ENV_DUMP)
    workspace.kq("queuecommand", "jobs", "dump")
    worker = workspace.kq("-vv", "consume", "jobs", "-m", "1", "-t", "60", "-w")
    with App.from_config(workspace.config) as app, app.driver().consumer("jobs.failed") as consumer:
        [dead] = drain(consumer, idle=0.1)
    assert dead.headers["kq-dead-letter-reason"] == "failed"
    error = dead.headers["kq-dead-letter-error"]
    assert "exited with status 3" in error
    assert '"KQ_QUEUE": "jobs"' in error  # what the command printed is there...
    assert key not in error  # ...but not the key
    assert key not in json.dumps(dead.headers)
    assert "KQ_QUEUE" in worker.stderr  # the -vv log shows the command's output...
    assert key not in worker.stderr + worker.stdout  # ...but not the key
    if not console:
        assert "do not inherit KQ_SIGNING_KEY" in worker.stderr  # named as withheld, never its value
