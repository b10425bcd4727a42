"""What kq-core does without its optional dependencies: requests (the ``http`` extra) and pytest (the
``testing`` extra). Each case runs in a child process where the package cannot be imported, as if it
were not installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

CORE = Path(__file__).parents[1]
#: Makes the named packages unimportable (``import requests`` raises ModuleNotFoundError), then runs the
#: code given after it.
BLOCK = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None\n"

CONFIG = """
[queues.web]
consumer = "http"
retry = { max_attempts = 1 }

[allow]
urls = ["127.0.0.1"]
"""

WORKER = """
from kq.core import App, Limits
with App.from_config() as app:
    app.http_producer("web").publish("http://127.0.0.1:9/ok")
    app.consume_loop("web", limits=Limits(messages=1, time=10), handle_signals=False).run()
print("worker ended")
"""


def _run(tmp_path: Path, blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK.format(names=blocked) + code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_requests_is_an_extra_not_a_dependency() -> None:
    project = tomllib.loads((CORE / "pyproject.toml").read_text())["project"]
    assert not [r for r in project["dependencies"] if r.startswith("requests")]
    assert [r for r in project["optional-dependencies"]["http"] if r.startswith("requests")]


def test_an_http_message_without_requests_is_dead_lettered_naming_the_extra(tmp_path: Path) -> None:
    """The worker starts, says once what it lacks, and fails the message with the reason; it does not
    crash."""
    (tmp_path / "kq.toml").write_text(CONFIG)
    worker = _run(tmp_path, ("requests", "urllib3"), WORKER)
    assert worker.returncode == 0, worker.stderr
    assert "worker ended" in worker.stdout
    assert "Traceback" not in worker.stderr
    assert "queue web: HTTP requests cannot be sent" in worker.stderr
    assert "pip install 'kq-core[http]'" in worker.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "kq.cli", "failed", "show", "web", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    dead: list[dict[str, Any]] = json.loads(shown.stdout)
    assert [(d["original_queue"], d["reason"]) for d in dead] == [("web", "failed")]
    assert dead[0]["error"] == (
        "MissingExtraError: HTTP GET http://127.0.0.1:9/ok: the http execution type needs requests, "
        "which is not installed: pip install 'kq-core[http]'"
    )


def test_http_messages_are_queued_without_requests(tmp_path: Path) -> None:
    """A producer needs no HTTP client: the URL is checked again by the worker that sends it."""
    code = (
        "from kq.core import make_http_request, MessageFormatError\n"
        "print(make_http_request('http://127.0.0.1:8000/jobs', {'method': 'POST'}).url)\n"
        "try:\n"
        "    make_http_request('ftp://127.0.0.1/x')\n"
        "except MessageFormatError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = _run(tmp_path, ("requests", "urllib3"), code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "http://127.0.0.1:8000/jobs"
    assert lines[1].startswith("refused: url 'ftp://127.0.0.1/x' must be an http:// or https:// URL")


def test_kq_core_testing_without_pytest_names_the_extra(tmp_path: Path) -> None:
    code = (
        "try:\n    import kq.core.testing\nexcept ImportError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    done = _run(tmp_path, ("pytest", "_pytest"), code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "ImportError kq.core.testing (the driver conformance suite and test helpers) needs pytest, "
        "which is not installed: pip install 'kq-core[testing]'"
    )


def test_kq_core_imports_without_requests_and_pytest(tmp_path: Path) -> None:
    code = "import kq.core, kq.core.driver, kq.core.handlers\nprint('ok')\n"
    done = _run(tmp_path, ("requests", "urllib3", "pytest", "_pytest"), code)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
