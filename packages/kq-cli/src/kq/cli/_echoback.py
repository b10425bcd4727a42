"""``kq echoback``: the demo command that workers run in the tutorial."""

from __future__ import annotations

import os
import socket
from datetime import datetime
from pathlib import Path

import click


def _inside_cwd(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Accept only a relative path that stays inside the current directory, symlinks resolved.

    echoback is the one command allowed without configuration, so any message can make a worker run
    it: ``-f /etc/cron.d/x`` or ``-f ../../.bashrc`` must not append to files outside the worker's
    directory. Returns the resolved path, which is what gets opened.
    """
    if value is None:
        return None
    cwd = Path.cwd().resolve()
    # resolve() follows every symlink on the way, the last one too even when it dangles (open() would
    # create its target), so that a link cannot lead outside either.
    target = (cwd / value).resolve()
    if os.path.isabs(value) or not target.is_relative_to(cwd):
        reason = "an absolute path" if os.path.isabs(value) else f"it leads to {target}"
        raise click.BadParameter(
            f"{value!r} is not a relative path inside the current directory ({cwd}): {reason}; "
            "echoback writes only below the directory it runs in",
            ctx=ctx,
            param=param,
        )
    return str(target)


@click.command()
@click.argument("text", metavar="INPUT")
@click.option(
    "-f",
    "--file",
    "path",
    type=click.Path(dir_okay=False, writable=True),
    callback=_inside_cwd,
    help="Also append the line to this file: a relative path inside the current directory.",
)
def echoback(text: str, path: str | None) -> None:
    """Print who runs it, and when, saying INPUT (and append it to a file).

    The line reads "It is <date> and process with pid <pid> on host <host> says: <input>", so a queued
    echoback shows which worker executed it. The file must be a relative path that stays inside the
    current directory (no absolute path, no "..", no symlink out of it); another is a usage error.
    """
    now = datetime.now()
    stamp = f"{now:%Y/%m/%d - %H:%M:%S}.{now.microsecond // 1000:03d}"
    line = f"It is {stamp} and process with pid {os.getpid()} on host {socket.gethostname()} says: {text}"
    click.echo(line)
    if path:
        try:
            # O_NOFOLLOW: the path was resolved, so a symlink here was put in its place since.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise click.FileError(path, hint=exc.strerror or str(exc)) from None
        with open(fd, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
