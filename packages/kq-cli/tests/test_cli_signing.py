"""kq signing new-key."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
