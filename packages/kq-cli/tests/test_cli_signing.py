"""kq signing new-key."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from kq.cli import EXIT_OK, EXIT_USAGE, cli
from kq.core import App, parse_config


def test_new_key_prints_a_key_and_the_configuration() -> None:
    result = CliRunner().invoke(cli, ["signing", "new-key", "--id", "prod"])
    assert result.exit_code == EXIT_OK
    export = result.stdout.splitlines()[0]
    assert export.startswith("export KQ_SIGNING_KEY=")
    assert len(export.split("=", 1)[1]) >= 43  # 32 random bytes, base64
    assert 'keys = { "prod" = "${KQ_SIGNING_KEY}" }' in result.stdout


def test_new_key_to_a_file_is_private_usable_and_never_overwritten(workdir: Path) -> None:
    result = CliRunner().invoke(cli, ["signing", "new-key", "-f", "k.key", "--format", "json"])
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout)
    assert data["key"] is None  # the secret is in the file only
    assert os.stat(workdir / "k.key").st_mode & 0o777 == 0o600
    config = parse_config({"signing": {"keys": {"k1": "file:k.key"}}}, source="kq.toml", root=str(workdir))
    assert App(config).signer.key == (workdir / "k.key").read_text().strip().encode()
    again = CliRunner().invoke(cli, ["signing", "new-key", "-f", "k.key"])
    assert again.exit_code == EXIT_USAGE
    assert "never overwrites" in again.output


def test_no_secret_in_logs_or_json_output(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 6: signing keys, from the environment or a file, never reach a log line or a JSON document,
    whatever the log level and whatever happens to the message (executed, refused, dead-lettered)."""
    old, new = "old-" + "o" * 40, "new-" + "n" * 40
    monkeypatch.setenv("KQTEST_OLD", old)
    (workdir / "new.key").write_text(new)
    os.chmod(workdir / "new.key", 0o600)
    (workdir / "kq.toml").write_text(
        '[signing]\nkeys = { old = "${KQTEST_OLD}", new = "file:new.key" }\nsign_with = "new"\n'
        '[allow]\ncommands = ["echoback"]\n',
        encoding="utf-8",
    )
    caplog.set_level(logging.DEBUG)
    runner = CliRunner()
    outputs = []
    for args in (
        ["-vv", "queuecommand", "jobs", "echoback", "hi", "--format", "json"],
        ["-vv", "queuecommand", "jobs", "forbidden-command", "--novalidate", "--format", "json"],
        ["-vv", "queuemessage", "jobs", '{"command": "not-allowed"}', "--format", "json"],
        ["-vv", "consume", "jobs", "-m", "3", "-t", "20"],
        ["-vv", "failed", "show", "jobs", "--format", "json", "--idle", "0.05"],
        ["-vv", "failed", "retry", "jobs", "--all", "--format", "json", "--idle", "0.05"],
        ["-vv", "managedriver", "list", "--format", "json"],
        ["-vv", "managequeue", "list-configured", "--format", "json"],
    ):
        result = runner.invoke(cli, args)
        outputs.append(result.output)
        assert result.exit_code == EXIT_OK, (args, result.output)
    text = "\n".join([*outputs, caplog.text])
    assert "not in the allow-list" in text  # the refusals did happen, and were logged
    for secret in (old, new):
        for form in (secret, secret.encode().hex(), base64.b64encode(secret.encode()).decode()):
            assert form not in text
