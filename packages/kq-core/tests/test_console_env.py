"""What a console command inherits: never a variable the signing configuration reads, nor a signing key
under another name; with ``[console] inherit_env = false``, only ``[console] env`` and kq's ``KQ_*``.

Each test runs a real child process that prints its whole environment.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from kq.core import AllowList, App, ConfigError, ConsoleCommandHandler, Delivery, load_config
from kq.core._config import ConsoleSettings
from kq.core._signing import new_key

#: Prints the child's environment as one JSON object.
DUMP = "import json, os; print(json.dumps(dict(os.environ)))"
SECRET = new_key()


def _delivery() -> Delivery:
    return Delivery(
        body=b"", content_type="application/json", headers={}, routing_key="", message_id="m1", queue="jobs"
    )


def _config(tmp_path: Path, signing: str, console: str = "") -> Path:
    path = tmp_path / "kq.toml"
    path.write_text(
        "[queues.jobs]\n"
        "[console]\n"
        f"prefix = [{json.dumps(sys.executable)}, '-c', {json.dumps(DUMP)}]\n"
        f"{console}\n"
        "[allow]\n"
        'commands = ["dump"]\n'
        "[signing]\n"
        f"{signing}\n",
        encoding="utf-8",
    )
    return path


def _child_environment(path: Path) -> tuple[str, dict[str, str]]:
    """Run ``dump`` through the queue's configured consumer; return its stdout and what it printed."""
    with App(load_config(path)) as app:
        consumer = app.handler("jobs", label="w-1")
        assert isinstance(consumer, ConsoleCommandHandler)
        result = consumer.consume({"command": "dump"}, _delivery())
    environment: dict[str, str] = json.loads(result.stdout)
    return result.stdout, environment


def test_a_variable_the_signing_configuration_reads_does_not_reach_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layout docs/signing.md recommends: the key in the worker's environment, named in [signing]."""
    monkeypatch.setenv("KQ_TEST_SIGNING_KEY", SECRET)
    monkeypatch.setenv("KQ_TEST_SIGNING_ID", "k-2024")
    monkeypatch.setenv("KQ_TEST_ORDINARY", "still-here")
    path = _config(
        tmp_path,
        'keys = { "k-2024" = "${KQ_TEST_SIGNING_KEY}" }\nsign_with = "${KQ_TEST_SIGNING_ID}"\nmax_age = 600',
    )
    stdout, environment = _child_environment(path)
    assert "KQ_TEST_SIGNING_KEY" not in stdout
    assert SECRET not in stdout
    assert "KQ_TEST_SIGNING_ID" not in environment
    assert environment["KQ_TEST_ORDINARY"] == "still-here"  # everything else is still inherited
    assert (environment["KQ_QUEUE"], environment["KQ_LABEL"]) == ("jobs", "w-1")


def test_a_signing_key_exported_under_another_name_does_not_reach_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KQ_TEST_SIGNING_KEY", SECRET)
    monkeypatch.setenv("KQ_TEST_SAME_SECRET", SECRET)
    key_file = tmp_path / "other.key"
    other = new_key()
    key_file.write_text(other + "\n", encoding="utf-8")
    key_file.chmod(0o600)
    monkeypatch.setenv("KQ_TEST_FILE_SECRET", other)
    path = _config(
        tmp_path, 'keys = { "a" = "${KQ_TEST_SIGNING_KEY}", "b" = "file:other.key" }\nsign_with = "a"'
    )
    stdout, environment = _child_environment(path)
    assert SECRET not in stdout
    assert other not in stdout
    assert "KQ_TEST_SAME_SECRET" not in environment
    assert "KQ_TEST_FILE_SECRET" not in environment


def test_withheld_names_are_logged_once_without_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("KQ_TEST_SIGNING_KEY", SECRET)
    path = _config(tmp_path, 'keys = { "k" = "${KQ_TEST_SIGNING_KEY}" }')
    with caplog.at_level(logging.DEBUG, logger="kq.core.handlers.console"):
        _child_environment(path)
    withheld = [r.getMessage() for r in caplog.records if "KQ_TEST_SIGNING_KEY" in r.getMessage()]
    assert len(withheld) == 1, caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("console", "key"),
    [
        pytest.param('env = { KQ_TEST_SIGNING_KEY = "x" }', "console.env.KQ_TEST_SIGNING_KEY", id="by-name"),
        pytest.param('env = { KEY = "${KQ_TEST_SIGNING_KEY}" }', "console.env.KEY", id="by-reference"),
    ],
)
def test_console_env_that_passes_a_signing_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, console: str, key: str
) -> None:
    monkeypatch.setenv("KQ_TEST_SIGNING_KEY", SECRET)
    path = _config(tmp_path, 'keys = { "k" = "${KQ_TEST_SIGNING_KEY}" }', console)
    with pytest.raises(ConfigError, match=re.escape(f"key '{key}'")) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert SECRET not in str(caught.value)


def test_console_env_holding_a_literal_signing_key_is_refused(tmp_path: Path) -> None:
    path = _config(tmp_path, f'keys = {{ "k" = "{SECRET}" }}', f'env = {{ COPY = "{SECRET}" }}')
    with pytest.raises(ConfigError, match=re.escape("key 'console.env.COPY'")) as caught:
        load_config(path)
    assert SECRET not in str(caught.value)


def test_without_inherit_env_commands_get_only_the_explicit_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KQ_TEST_SIGNING_KEY", SECRET)
    monkeypatch.setenv("KQ_TEST_ORDINARY", "not-inherited")
    monkeypatch.setenv("KQ_TEST_PATH", "/opt/tools/bin")
    path = _config(
        tmp_path,
        'keys = { "k" = "${KQ_TEST_SIGNING_KEY}" }',
        'inherit_env = false\nenv = { APP_MODE = "worker", PATH = "${KQ_TEST_PATH}" }',
    )
    stdout, environment = _child_environment(path)
    assert SECRET not in stdout
    # The interpreter may add a few variables of its own (LC_CTYPE on some systems): allow only those.
    extra = set(environment) - {
        "APP_MODE",
        "PATH",
        "KQ_QUEUE",
        "KQ_MESSAGE_ID",
        "KQ_DELIVERY_COUNT",
        "KQ_LABEL",
    }
    assert extra <= {"LC_CTYPE"}, extra
    assert (environment["APP_MODE"], environment["PATH"]) == ("worker", "/opt/tools/bin")
    assert environment["KQ_MESSAGE_ID"] == "m1"


def test_inherit_env_must_be_a_boolean(tmp_path: Path) -> None:
    path = _config(tmp_path, "", 'inherit_env = "no"')
    with pytest.raises(ConfigError, match=re.escape("key 'console.inherit_env'")):
        load_config(path)


def test_direct_construction_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ConsoleCommandHandler(settings, allowed, label=...)``, as tests and embedders build it."""
    monkeypatch.setenv("KQ_TEST_ORDINARY", "here")
    settings = ConsoleSettings(prefix=(sys.executable, "-c", DUMP), env={"EXTRA": "1"})
    consumer = ConsoleCommandHandler(settings, AllowList(["dump"]), label="x")
    result: Any = consumer.consume({"command": "dump"}, _delivery())
    environment = json.loads(result.stdout)
    assert (environment["KQ_TEST_ORDINARY"], environment["EXTRA"], environment["KQ_LABEL"]) == (
        "here",
        "1",
        "x",
    )


def test_in_process_commands_say_that_inherit_env_does_not_apply(caplog: pytest.LogCaptureFixture) -> None:
    """They run inside the worker and can read its environment: kq says so rather than pretend."""
    from kq.core import InProcessConsoleCommandHandler

    with caplog.at_level(logging.WARNING, logger="kq.core.handlers.inprocess"):
        InProcessConsoleCommandHandler(ConsoleSettings(inherit_env=False), AllowList(["echoback"]))
    assert "inherit_env = false does not apply to in-process commands" in caplog.text
