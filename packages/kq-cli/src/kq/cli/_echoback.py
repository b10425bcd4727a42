"""``kq echoback``: the demo command that workers run in the tutorial."""

from __future__ import annotations

import os
import socket
from datetime import datetime

import click


@click.command()
@click.argument("text", metavar="INPUT")
@click.option(
    "-f",
    "--file",
    "path",
    type=click.Path(dir_okay=False, writable=True),
    help="Also append the line to this file.",
)
def echoback(text: str, path: str | None) -> None:
    """Print who runs it, and when, saying INPUT (and append it to a file).

    The line reads "It is <date> and process with pid <pid> on host <host> says: <input>", so a queued
    echoback shows which worker executed it.
    """
    now = datetime.now()
    stamp = f"{now:%Y/%m/%d - %H:%M:%S}.{now.microsecond // 1000:03d}"
    line = f"It is {stamp} and process with pid {os.getpid()} on host {socket.gethostname()} says: {text}"
    click.echo(line)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
