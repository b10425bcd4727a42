"""``kq queuexmlrpc``, found through the kq.commands entry points."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from kq.cli import cli
from kq.contrib.xmlrpc._cli import queuexmlrpc
from kq.core import App, Delivery

SERVER = "http://127.0.0.1:8000/RPC2"

CONFIG = """
default_driver = "local"

[drivers.local]
type = "sqlite"
path = "queues.sqlite3"

[queues.rpc]
consumer = "xmlrpc"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "kq.toml"
    path.write_text(CONFIG)
    return path


def kq(config: Path, *args: str) -> Result:
    result = CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def queued(config: Path) -> list[Delivery]:
    with App.from_config(config) as app, app.driver().consumer("rpc") as consumer:
        deliveries = []
        while (delivery := consumer.receive(0)) is not None:
            deliveries.append(delivery)
        return deliveries


def test_string_arguments(config: Path) -> None:
    result = kq(config, "queuexmlrpc", "rpc", SERVER, "echo", "hello", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"XML-RPC call echo on {SERVER} queued on queue rpc as message ")
    [delivery] = queued(config)
    assert json.loads(delivery.body) == {"server": SERVER, "method": "echo", "arguments": ["hello", "2"]}
    assert delivery.routing_key == "http...127.0.0.1.8000.RPC2.echo"
    assert delivery.content_type == "application/json"


def test_json_arguments_and_json_output(config: Path) -> None:
    arguments = '[2, 3.5, true, null, {"a": [1]}]'
    result = kq(
        config,
        "queuexmlrpc",
        "rpc",
        SERVER,
        "add",
        "-j",
        arguments,
        "-r",
        "rpc.add",
        "--ttl",
        "60",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    output: dict[str, Any] = json.loads(result.stdout)
    assert output["body"] == {
        "server": SERVER,
        "method": "add",
        "arguments": [2, 3.5, True, None, {"a": [1]}],
    }
    assert (output["queue"], output["routing_key"], output["ttl"]) == ("rpc", "rpc.add", 60)
    [delivery] = queued(config)
    assert delivery.message_id == output["message_id"]
    assert delivery.routing_key == "rpc.add"


def test_no_arguments(config: Path) -> None:
    assert kq(config, "queuexmlrpc", "rpc", SERVER, "system.listMethods").exit_code == 0
    assert json.loads(queued(config)[0].body)["arguments"] == []


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["a", "-j", "[1]"], "give ARGUMENTS or -j/--json-arguments, not both"),
        (["-j", "[1,"], "not valid JSON"),
        (["-j", '{"a": 1}'], "must be a JSON array"),
        (["--ttl", "0"], "--ttl"),
    ],
)
def test_usage_errors(config: Path, args: list[str], match: str) -> None:
    result = kq(config, "queuexmlrpc", "rpc", SERVER, "add", *args)
    assert result.exit_code == 2
    assert match in result.output
    assert queued(config) == []


@pytest.mark.parametrize(
    ("server", "method", "args", "match"),
    [
        ("ftp://h/", "add", [], "must be an http:// or https:// URL"),
        (SERVER, "_private", [], "dotted name"),
        (SERVER, "add", ["-j", "[4294967296]"], "int exceeds XML-RPC limits"),
    ],
)
def test_invalid_calls_are_not_queued(
    config: Path, server: str, method: str, args: list[str], match: str
) -> None:
    result = kq(config, "queuexmlrpc", "rpc", server, method, *args)
    assert result.exit_code == 1
    assert result.output.startswith("kq: error: ")
    assert match in result.output
    assert queued(config) == []


def test_every_option_has_help() -> None:
    options = [p for p in queuexmlrpc.params if isinstance(p, click.Option)]
    assert {o.name for o in options} >= {
        "json_arguments",
        "driver",
        "routing_key",
        "ttl",
        "delay",
        "output_format",
    }
    assert all(o.help for o in options), [o.name for o in options if not o.help]


PROBE = """
import json, sys
from kq.cli import cli
try:
    cli(sys.argv[1:], prog_name="kq")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith("kq."))), file=sys.stderr)
"""


def test_kq_help_lists_the_command_without_importing_kq_core(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "--help"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert "queuexmlrpc" in done.stdout
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    assert "kq.contrib.xmlrpc._cli" in loaded
    assert not [m for m in loaded if m.startswith("kq.core") or m == "kq.contrib.xmlrpc._xmlrpc"], loaded
