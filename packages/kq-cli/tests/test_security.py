"""What a message cannot make a worker do, proven with real `kq consume` processes on sqlite.

Commands never go through a shell; names are validated before anything runs; commands, services and
URLs outside the allow-list are never executed (the side effect that would prove otherwise is checked)
and end in ``<queue>.failed`` with the reason.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from kq.core import App, Message
from kq.core.testing import Workspace, drain

pytestmark = pytest.mark.slow

CONFIG = """
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "queues.sqlite3"
poll_interval = 0.05

[queues.jobs]

[queues.svc]
consumer = "service"

[queues.web]
consumer = "http"

[console]
prefix = [{python}, "argv_dump.py"]

[allow]
commands = ["dump"]
urls = ["allowed.invalid"]

[allow.services]
"sec_allowed" = ["ping"]
"""

#: The only allowed command: appends its argument vector, as JSON, to argv.jsonl.
ARGV_DUMP = "import json, sys\nopen('argv.jsonl', 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
#: A module whose import leaves a trace: importing it is already running code.
TRAP = "import pathlib\npathlib.Path({name!r} + '.imported').touch()\ndef run(*a): pass\ndef ping(): pass\n"

SHELL_PAYLOADS = [
    "; touch PWNED",
    "$(touch PWNED)",
    "`touch PWNED`",
    "| touch PWNED",
    "&& touch PWNED",
    "x\ntouch PWNED",
    "> PWNED",
    "'\"; touch PWNED #",
    "${IFS}touch${IFS}PWNED",
]

LONG = "x" * (64 * 1024 + 1)
#: (command, arguments, options) -> the dead-letter reason; None: it runs (argv.jsonl shows how).
CASES: list[tuple[str, list[Any], dict[str, Any], str | None]] = [
    ("dump", [], {"--help": None}, None),  # passed verbatim: the command decides what --help means
    ("dump", ["-x", "--also"], {"f": "-rf /", "name": "--evil"}, None),
    ("dump", [], {"-x;rm": None}, "invalid"),
    ("dump", [], {"a b": None}, "invalid"),
    ("dump", [], {"$(id)": None}, "invalid"),
    ("dump", [], {"---x": None}, "invalid"),
    ("dump", [], {"x" * 65: None}, "invalid"),
    ("../../bin/sh", ["-c", "touch PWNED"], {}, "invalid"),
    ("/bin/sh", ["-c", "touch PWNED"], {}, "invalid"),
    ("dump/../x", [], {}, "invalid"),
    ("./dump", [], {}, "invalid"),
    ("dump;touch PWNED", [], {}, "invalid"),
    ("x" * 201, [], {}, "invalid"),
    ("dump", [LONG], {}, "invalid"),
    ("dump", [], {"name": LONG}, "invalid"),
    ("dump", ["a\x00b"], {}, "invalid"),
    ("dump", ["a"] * 1001, {}, "invalid"),
    ("touch", ["PWNED"], {}, "not-allowed"),
    ("sh", ["-c", "touch PWNED"], {}, "not-allowed"),
    ("re:.*", [], {}, "invalid"),
]


@pytest.fixture
def space(workspace: Workspace) -> Workspace:
    workspace.write_config(CONFIG.format(python=json.dumps(sys.executable)), recorder=False)
    (workspace.root / "argv_dump.py").write_text(ARGV_DUMP)
    for name in ("sec_evil", "sec_allowed"):
        (workspace.root / f"{name}.py").write_text(TRAP.format(name=name))
    return workspace


def publish(space: Workspace, queue: str, bodies: list[Any]) -> list[Message]:
    with App.from_config(space.config) as app:
        return app.producer(queue).publish_batch([json.dumps(b) for b in bodies])


def work(space: Workspace, *queues: tuple[str, int]) -> None:
    """Run one real worker per queue, concurrently, each until it handled its count of messages."""
    workers = [(q, space.start_consumer(q, f"w-{q}", "-m", str(n), "-t", "45", "-w")) for q, n in queues]
    for queue, worker in workers:
        assert worker.wait(timeout=60) == 0, space.output(f"w-{queue}")


def dead_letters(space: Workspace, queue: str) -> dict[str, tuple[str, str]]:
    """message id -> (reason, error) of what reached ``<queue>.failed``."""
    with App.from_config(space.config) as app, app.driver().consumer(f"{queue}.failed") as consumer:
        found = drain(consumer, idle=0.1)
    return {
        d.message_id: (d.headers["kq-dead-letter-reason"], d.headers["kq-dead-letter-error"]) for d in found
    }


def argv_lines(space: Workspace) -> list[list[str]]:
    path = space.root / "argv.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def no_pwned(space: Workspace) -> None:
    assert [p.name for p in space.root.rglob("*PWNED*")] == [], "a shell ran"


def test_shell_metacharacters_reach_the_command_verbatim(space: Workspace) -> None:
    publish(
        space, "jobs", [{"command": "dump", "arguments": [p], "options": {"text": p}} for p in SHELL_PAYLOADS]
    )
    work(space, ("jobs", len(SHELL_PAYLOADS)))
    assert argv_lines(space) == [["dump", f"--text={p}", p] for p in SHELL_PAYLOADS]
    assert dead_letters(space, "jobs") == {}
    no_pwned(space)


def test_names_are_validated_and_only_allowed_commands_run(space: Workspace) -> None:
    bodies = [{"command": c, "arguments": a, "options": o} for c, a, o, _ in CASES]
    messages = publish(space, "jobs", bodies)
    work(space, ("jobs", len(CASES)))
    assert argv_lines(space) == [
        ["dump", "--help"],
        ["dump", "-f-rf /", "--name=--evil", "--", "-x", "--also"],  # values never become options
    ]
    dead = dead_letters(space, "jobs")
    expected = {m.message_id: reason for m, (*_, reason) in zip(messages, CASES, strict=True) if reason}
    assert {k: reason for k, (reason, _) in dead.items()} == expected
    errors = [error for _, error in dead.values()]
    assert sum(e.startswith("MessageFormatError: option name") for e in errors) == 5
    assert sum(e.startswith("MessageFormatError: command name") for e in errors) == 7
    assert sum("not in the allow-list" in e for e in errors) == 2
    no_pwned(space)


class _Spy(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET  # noqa: N815 - http.server's name


@pytest.fixture
def spy() -> Iterator[str]:
    """Base URL of a server on 127.0.0.1 that no message may reach."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Spy)
    _Spy.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_services_and_urls_outside_the_allow_list_are_never_executed(space: Workspace, spy: str) -> None:
    xmlrpc = "<?xml version='1.0'?><methodCall><methodName>system.shutdown</methodName><params/></methodCall>"
    services = [
        {"service": "sec_evil", "method": "run"},
        {"service": "sec_allowed", "method": "run"},  # allowed module, other method: still not imported
        {"service": "os", "method": "system", "arguments": ["touch PWNED"]},
        {"service": "sec_allowed", "method": "__init__"},
    ]
    requests = [
        {"url": f"{spy}/steal?data=1"},
        {
            "url": f"{spy}/RPC2",
            "options": {"method": "POST", "headers": {"Content-Type": "text/xml"}, "data": xmlrpc},
        },
        {"url": f"gopher://{spy[7:]}/_x"},
        {"url": "file:///etc/passwd"},
    ]
    publish(space, "svc", services)
    publish(space, "web", requests)
    work(space, ("svc", len(services)), ("web", len(requests)))
    assert [p.name for p in space.root.glob("*.imported")] == []
    assert _Spy.seen == []
    no_pwned(space)
    reasons = [r for r, _ in dead_letters(space, "svc").values()]
    assert reasons == ["not-allowed", "not-allowed", "not-allowed", "invalid"]
    assert [r for r, _ in dead_letters(space, "web").values()] == [
        "not-allowed",
        "not-allowed",
        "invalid",
        "invalid",
    ]
    assert space.kq_json("managequeue", "info", "web.failed")["messages"] == 0  # drained above


def test_without_an_allow_section_even_echoback_is_refused(workspace: Workspace) -> None:
    config = 'default_driver = "local"\n[drivers.local]\ntype = "sqlite"\npath = "q.sqlite3"\n[queues.jobs]\n'
    workspace.write_config(config, recorder=False)
    refused = workspace.kq("queuecommand", "jobs", "echoback", "hi", "-o", "f=out.txt", check=False)
    assert refused.returncode == 2
    assert "'echoback' is not in [allow] commands" in refused.stderr
    workspace.kq("queuecommand", "jobs", "echoback", "hi", "-o", "f=out.txt", "--novalidate")
    # A worker that could execute nothing refuses to start (exit 78) instead of dead-lettering it all.
    worker = workspace.start_consumer("jobs", "w", "-m", "1", "-t", "45")
    assert worker.wait(timeout=60) == 78, workspace.output("w")
    assert "cannot execute anything" in workspace.output("w")
    assert "'allow.commands'" in workspace.output("w")
    assert not (workspace.root / "out.txt").exists()
    assert workspace.kq_json("managequeue", "info", "jobs")["messages"] == 1
    assert workspace.kq_json("managequeue", "info", "jobs.failed")["messages"] == 0


def test_backslash_in_the_authority_does_not_smuggle_a_url_past_the_allow_list(
    space: Workspace, spy: str
) -> None:
    publish(
        space, "web", [{"url": f"{spy}\\@allowed.invalid/steal"}]
    )  # urlsplit: allowed.invalid; urllib3: spy
    work(space, ("web", 1))
    assert _Spy.seen == [], "the worker requested a server outside the allow-list"


def test_queuecommand_checks_the_allow_list_for_in_process_queues_too(workspace: Workspace) -> None:
    config = '[queues.inproc]\nconsumer = "inprocess_console_command"\n[allow]\ncommands = ["echoback"]\n'
    workspace.write_config(config, recorder=False)
    refused = workspace.kq("queuecommand", "inproc", "touch", "PWNED", check=False)
    assert refused.returncode == 2, "a command every worker of this configuration rejects was queued"
