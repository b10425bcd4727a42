"""``kq signing``: create keys for signed messages."""

from __future__ import annotations

import os
from pathlib import Path

import click

from kq.cli._common import emit, format_option


@click.group()
def signing() -> None:
    """Manage the keys that sign messages (HMAC-SHA256)."""


@signing.command("new-key")
@click.option(
    "--id", "key_id", default="k1", show_default=True, help="Key id to show in the configuration snippet."
)
@click.option(
    "-f",
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the key to this new file (mode 0600) instead of printing it.",
)
@format_option
def new_key(key_id: str, path: Path | None, output_format: str) -> None:
    """Create a random 32-byte key, and show how to configure it.

    Keep keys out of kq.toml: put them in the environment or in a file, and name them in [signing] keys.
    """
    from kq.core import new_key as make_key

    key = make_key()
    if path is not None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise click.UsageError(f"{path} exists; kq never overwrites a key") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        reference = f"file:{path.resolve()}"
    else:
        reference = "${KQ_SIGNING_KEY}"
    if output_format == "json":
        emit({"id": key_id, "key": None if path else key, "file": str(path) if path else None}, output_format)
        return
    if path is None:
        click.echo(f"export KQ_SIGNING_KEY={key}")
    else:
        click.echo(f"Wrote a new key to {path} (mode 0600).")
    click.echo("\n# kq.toml, on producers and workers alike:")
    click.echo(f'[signing]\nkeys = {{ "{key_id}" = "{reference}" }}\nsign_with = "{key_id}"')
